"""The sensors' decisions as pure functions over the file system, a cursor and ``now`` (no Dagster).

:func:`plan_render_tick` decides which render folders become shots and runs; :func:`plan_prompt_tick` which prompt
files are (re)checked. The Dagster layer (:mod:`cosmos_assets.defs.sensors.folders`) turns a plan into a ``SensorResult``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, Field

from cosmos_assets.layout import ProjectLayout, check_name
from cosmos_assets.media import FRAME_NAME, MODALITIES, RenderValidationError, scan_render_folder
from cosmos_assets.prompts.files import check_prompt_file
from cosmos_assets.prompts.inputs import shot_of
from cosmos_assets.prompts.spec import SpecError, load_spec
from cosmos_assets.watch.cursors import PromptCursor, PromptState, RenderCursor, ShotState

# --------------------------------------------------------------------------------------------------
# Render folders: the pure planning function
# --------------------------------------------------------------------------------------------------

FINGERPRINT_CHARS = 16


class FolderStat(NamedTuple):
    """One stat pass over a render folder: no file is opened."""

    fingerprint: str
    """sha256 over name/size/mtime_ns of the frame files, in ``RenderSequence.fingerprint`` order (16 hex)."""
    counts: dict[str, int]
    newest_ns: int
    """Newest mtime_ns of the folder and every file in it (temp files included)."""


def stat_render_folder(folder: Path, dir_mtime_ns: int) -> FolderStat:
    """Fingerprint a render folder from one ``scandir`` and a ``stat`` per file."""
    frames: dict[str, list[tuple[int, str, int, int]]] = {m: [] for m in MODALITIES}
    newest = dir_mtime_ns
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:  # a temp file renamed away while we looked
                continue
            newest = max(newest, st.st_mtime_ns)
            match = FRAME_NAME.match(entry.name)
            if match and entry.is_file():
                frames[match[1]].append((int(match[2]), entry.name, st.st_size, st.st_mtime_ns))
    digest = hashlib.sha256()
    for modality in MODALITIES:
        for _, name, size, mtime in sorted(frames[modality]):
            digest.update(f"{name}\0{size}\0{mtime}\n".encode())
    return FolderStat(
        fingerprint=digest.hexdigest()[:FINGERPRINT_CHARS],
        counts={m: len(frames[m]) for m in MODALITIES},
        newest_ns=newest,
    )


class ShotRun(BaseModel):
    """A run of ``shot_job`` the sensor asks for."""

    shot: str
    fingerprint: str
    reason: str

    @property
    def run_key(self) -> str:
        return f"{self.shot}:{self.fingerprint}"


class Problem(BaseModel):
    """A folder or prompt the sensor could not use; reported once, no run started."""

    name: str
    message: str


class RenderPlan(BaseModel):
    cursor: RenderCursor
    shots_to_add: list[str]
    runs: list[ShotRun]
    problems: list[Problem]
    waiting: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    deferred: int = 0
    """Changed folders left for the next tick (scan budget used up)."""
    still_bad: list[str] = Field(default_factory=list)
    examined: int = 0
    """New, changed or settling folders looked into (stat pass) this tick."""
    deep_checked: int = 0
    """Unchanged folders re-stat'ed by the round-robin deep check this tick."""


IsCurrent = Callable[[str, str], bool]
"""``is_current(shot, full_fingerprint)``: were this shot's control videos already made from these frames?"""


def list_shot_folders(renders_dir: Path) -> dict[str, int]:
    """Every non-hidden sub-folder of the renders root and its own mtime_ns (one stat each)."""
    folders: dict[str, int] = {}
    if not renders_dir.is_dir():
        return folders
    with os.scandir(renders_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                folders[entry.name] = entry.stat().st_mtime_ns
            except FileNotFoundError:
                continue
    return folders


def _partition_key_problem(name: str) -> str | None:
    bad = [s for s in ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0") if s in name]
    if bad or not name.isprintable():
        return f"folder name {name!r} cannot be a Dagster partition key (no '...' or control characters); rename it"
    try:
        check_name(name, "shot")
    except ValueError as error:
        return str(error)
    return None


def _round_robin(names: list[str], after: str, count: int) -> list[str]:
    """Up to ``count`` of the sorted ``names`` following ``after``, wrapping around."""
    if count <= 0 or not names:
        return []
    start = next((i for i, name in enumerate(names) if name > after), 0)
    return [names[(start + i) % len(names)] for i in range(min(count, len(names)))]


class _Examined(NamedTuple):
    state: ShotState
    run: ShotRun | None
    problem: Problem | None
    waiting: bool
    add: bool


def _examine_folder(
    folder: Path, dir_mtime_ns: int, prev: ShotState | None, now_ns: int, settle_ns: int, is_current: IsCurrent | None
) -> _Examined:
    """Decide one folder: wait, nothing new, problem, or run."""
    shot = folder.name
    prev = prev or ShotState(dir_mtime_ns, "", "new")
    settled_before = prev.s in ("ok", "bad")
    stat = stat_render_folder(folder, dir_mtime_ns)
    if not any(stat.counts.values()):
        return _Examined(ShotState(dir_mtime_ns, prev.f, "empty"), None, None, False, False)
    if stat.newest_ns > now_ns - settle_ns:
        return _Examined(prev._replace(m=dir_mtime_ns, w=True), None, None, True, False)
    if settled_before and stat.fingerprint == prev.f:
        return _Examined(prev._replace(m=dir_mtime_ns, w=False), None, None, False, False)
    name_problem = _partition_key_problem(shot)
    if name_problem:
        return _Examined(
            ShotState(dir_mtime_ns, stat.fingerprint, "bad"),
            None,
            Problem(name=shot, message=name_problem),
            False,
            False,
        )
    try:
        sequence = scan_render_folder(folder)
    except RenderValidationError as error:
        message = "; ".join(error.problems[:5]) + (
            f" (+{len(error.problems) - 5} more)" if len(error.problems) > 5 else ""
        )
        problem = Problem(name=shot, message=message)
        return _Examined(ShotState(dir_mtime_ns, stat.fingerprint, "bad"), None, problem, False, not settled_before)
    full = sequence.fingerprint()
    state = ShotState(dir_mtime_ns, full[:FINGERPRINT_CHARS], "ok")
    if not settled_before and is_current is not None and is_current(shot, full):
        return _Examined(state, None, None, False, True)
    reason = "frames changed" if settled_before else "new render folder"
    return _Examined(state, ShotRun(shot=shot, fingerprint=state.f, reason=reason), None, False, not settled_before)


def plan_render_tick(
    layout: ProjectLayout,
    cursor: RenderCursor,
    now: float,
    *,
    settle_seconds: float = 30.0,
    scan_budget: int = 200,
    deep_checks: int = 100,
    is_current: IsCurrent | None = None,
) -> RenderPlan:
    """One render-sensor tick: which shots to add, which to run, which to report. No Dagster, no side effects.

    Cheap path: one ``scandir`` of the renders root and a ``stat`` per folder; a folder whose own mtime equals
    the cursor's is not opened. Changed, new or still-settling folders get a stat pass (fingerprint), and
    only settled folders whose fingerprint changed are validated (PNG headers). ``deep_checks`` unchanged
    folders per tick are re-stat'ed round-robin to catch frames rewritten in place.
    """
    now_ns = int(now * 1e9)
    settle_ns = int(settle_seconds * 1e9)
    folders = list_shot_folders(layout.renders_dir)
    old = cursor.shots
    removed = sorted(name for name in old if name not in folders)
    shots = {name: state for name, state in old.items() if name in folders}
    changed = sorted(
        (name for name, mtime in folders.items() if name not in old or old[name].m != mtime or old[name].w),
        key=lambda name: (name in old, name),  # new folders first, then changed ones
    )
    todo, deferred = changed[:scan_budget], changed[scan_budget:]  # deferred keep their old state (or none)
    changed_set = set(changed)
    steady = sorted(name for name in folders if name not in changed_set)
    deep = _round_robin(steady, cursor.rr, deep_checks)

    plan = RenderPlan(cursor=cursor, shots_to_add=[], runs=[], problems=[], removed=removed, deferred=len(deferred))
    plan.examined, plan.deep_checked = len(todo), len(deep)
    for name in [*todo, *deep]:
        try:
            result = _examine_folder(
                layout.renders_dir / name, folders[name], old.get(name), now_ns, settle_ns, is_current
            )
        except OSError as error:  # vanished or unreadable mid-tick: report, look again when it changes
            shots[name] = ShotState(folders[name], "", "bad")  # looked at again when the folder changes
            plan.problems.append(Problem(name=name, message=f"cannot read {layout.renders_dir / name}: {error}"))
            continue
        shots[name] = result.state
        if result.run:
            plan.runs.append(result.run)
        if result.problem:
            plan.problems.append(result.problem)
        if result.waiting:
            plan.waiting.append(name)
        if result.add:
            plan.shots_to_add.append(name)
    reported = {p.name for p in plan.problems}
    plan.still_bad = sorted(name for name, state in shots.items() if state.s == "bad" and name not in reported)
    plan.cursor = RenderCursor(shots=shots, rr=deep[-1] if deep else cursor.rr)
    return plan


# --------------------------------------------------------------------------------------------------
# Prompt files: the pure planning function
# --------------------------------------------------------------------------------------------------


class PromptRun(BaseModel):
    """A run of ``prompt_specs`` (and generation when auto-generate is on) the sensor asks for."""

    prompt: str
    data_version: str
    mtime_ns: int
    reason: str
    shot: str = ""
    """The shot the spec reads ("" if it names none)."""

    @property
    def run_key(self) -> str:
        return f"{self.prompt}:{self.data_version}:{self.mtime_ns}"


class PromptPlan(BaseModel):
    cursor: PromptCursor
    prompts_to_add: list[str]
    runs: list[PromptRun]
    problems: list[Problem]
    removed: list[str] = Field(default_factory=list)


MaterializedVersion = Callable[[str], "str | None"]
"""``materialized_version(prompt)``: the data version of prompt_specs' latest materialization, or None."""


def expected_spec_version(layout: ProjectLayout, path: Path) -> tuple[str, str | None]:
    """Validate a prompt file as the ``prompt_specs`` asset does; return (data version it would record, shot).

    Raises SpecError (with file, field and fix) when the asset would fail.
    """
    checked = check_prompt_file(path, layout.root)
    return checked.data_version, checked.shot


def _shot_if_readable(path: Path) -> str:
    try:
        return shot_of(load_spec(path)) or ""
    except (SpecError, OSError):
        return ""


def list_prompt_files(prompts_dir: Path) -> dict[str, os.stat_result]:
    files: dict[str, os.stat_result] = {}
    if not prompts_dir.is_dir():
        return files
    with os.scandir(prompts_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".json") or not entry.is_file():
                continue
            try:
                files[entry.name[: -len(".json")]] = entry.stat()
            except FileNotFoundError:
                continue
    return files


def plan_prompt_tick(
    layout: ProjectLayout,
    cursor: PromptCursor,
    touched_shots: set[str],
    *,
    materialized_version: MaterializedVersion | None = None,
) -> PromptPlan:
    """One prompt-sensor tick. A prompt is looked at when it is new, its file's size or mtime changed, or its
    shot is in ``touched_shots`` (control videos re-encoded). It runs when the data version prompt_specs would
    record differs from the one last requested (or, first seen, from the one materialized)."""
    files = list_prompt_files(layout.prompts_dir)
    old = cursor.prompts
    plan = PromptPlan(cursor=cursor, prompts_to_add=[], runs=[], problems=[])
    plan.removed = sorted(name for name in old if name not in files)
    prompts: dict[str, PromptState] = {}
    for name in sorted(files):
        st, prev = files[name], old.get(name)
        if prev is None:
            plan.prompts_to_add.append(name)
        elif (prev.m, prev.z) == (st.st_mtime_ns, st.st_size) and prev.s not in touched_shots:
            prompts[name] = prev
            continue
        try:
            path = layout.prompt_file(name)  # ValueError for a file name that cannot be a prompt (partition key)
        except ValueError as error:
            prompts[name] = PromptState(st.st_mtime_ns, st.st_size, "", "", False)
            plan.problems.append(Problem(name=name, message=str(error)))
            if prev is None:
                plan.prompts_to_add.remove(name)
            continue
        try:
            version, shot = expected_spec_version(layout, path)
        except (SpecError, OSError) as error:
            prompts[name] = PromptState(
                st.st_mtime_ns, st.st_size, prev.v if prev else "", _shot_if_readable(path), False
            )
            plan.problems.append(Problem(name=name, message=str(error)))
            continue
        last = prev.v if prev else (materialized_version(name) if materialized_version else None)
        prompts[name] = PromptState(st.st_mtime_ns, st.st_size, version, shot or "", True)
        if version == last:
            continue
        if prev is None:
            reason = "new prompt file"
        elif (prev.m, prev.z) != (st.st_mtime_ns, st.st_size):
            reason = "prompt file edited"
        else:
            reason = f"control videos of shot {shot} re-encoded"
        plan.runs.append(
            PromptRun(prompt=name, data_version=version, mtime_ns=st.st_mtime_ns, reason=reason, shot=shot or "")
        )
    plan.cursor = PromptCursor(prompts=prompts, controls_after=cursor.controls_after)
    return plan
