"""Sensors that start runs when new renders and prompts land.

Two sensors, both stopped unless ``COSMOS_SENSORS=on``:

- ``render_sensor`` watches ``art/houdini/renders/``. A new, settled, valid shot folder becomes a ``shots``
  partition and a ``shot_job`` run (``shots`` + ``control_videos``); a folder whose frames changed runs again.
- ``prompt_sensor`` watches ``inputs/prompts/*.json`` and the ``control_videos`` materializations. A new or
  edited prompt, or a prompt whose shot's control videos were re-encoded, gets a ``prompt_specs`` run (cheap,
  no GPU), which gives the prompt a new data version so ``generated_videos`` shows *stale*. Generation runs
  too only with ``COSMOS_AUTO_GENERATE=on``.

The decisions are pure functions (:func:`plan_render_tick`, :func:`plan_prompt_tick`) over the file system,
a pydantic cursor and ``now``; the Dagster functions at the bottom only read the instance, turn a plan into a
``SensorResult`` and log. See docs/sensors.md.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zlib
from pathlib import Path
from typing import Callable, Literal, Mapping, NamedTuple, TypeVar

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cosmos_assets.config import ProjectLayout, env_bool, env_number
from cosmos_assets.media import MODALITIES, RenderValidationError, scan_render_folder
from cosmos_assets.partitions import PROMPTS, SHOTS
from cosmos_assets.resources import ProjectResource
from cosmos_assets.spec import SpecError, check_prompt_file, load_spec, shot_of

# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


class SensorSettings(BaseModel):
    """The sensors' settings, from the environment (read when the definitions load)."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(False, description="COSMOS_SENSORS: start the sensors running (else they start stopped).")
    interval_seconds: int = Field(30, ge=1, description="COSMOS_SENSOR_INTERVAL: seconds between ticks.")
    render_settle_seconds: float = Field(30.0, ge=0, description="COSMOS_RENDER_SETTLE_SECONDS: quiet time before a folder runs.")
    auto_generate: bool = Field(False, description="COSMOS_AUTO_GENERATE: also run generated_videos and upscaled_videos.")
    render_scan_budget: int = Field(200, ge=1, description="COSMOS_RENDER_SCAN_BUDGET: new/changed folders examined per tick.")
    render_deep_checks: int = Field(100, ge=0, description="COSMOS_RENDER_DEEP_CHECKS: unchanged folders re-stat'ed per tick.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "SensorSettings":
        env = os.environ if env is None else env
        return cls(
            enabled=env_bool("COSMOS_SENSORS", env=env),
            interval_seconds=int(env_number("COSMOS_SENSOR_INTERVAL", 30, env)),
            render_settle_seconds=env_number("COSMOS_RENDER_SETTLE_SECONDS", 30.0, env),
            auto_generate=env_bool("COSMOS_AUTO_GENERATE", env=env),
            render_scan_budget=int(env_number("COSMOS_RENDER_SCAN_BUDGET", 200, env)),
            render_deep_checks=int(env_number("COSMOS_RENDER_DEEP_CHECKS", 100, env)),
        )


# --------------------------------------------------------------------------------------------------
# Cursors: compact JSON (zlib + base64 once large), validated by pydantic on the way in
# --------------------------------------------------------------------------------------------------

_COMPRESSED = "z1:"
_COMPRESS_ABOVE = 16 * 1024


def _encode_cursor(model: BaseModel) -> str:
    text = model.model_dump_json()
    if len(text) <= _COMPRESS_ABOVE:
        return text
    return _COMPRESSED + base64.b64encode(zlib.compress(text.encode(), 6)).decode()


def _decode_cursor_text(raw: str) -> str:
    if raw.startswith(_COMPRESSED):
        return zlib.decompress(base64.b64decode(raw[len(_COMPRESSED):])).decode()
    return raw


CursorT = TypeVar("CursorT", bound=BaseModel)


def _load_cursor(cls: type[CursorT], raw: str | None) -> CursorT:
    """The cursor ``raw`` holds; an empty or unreadable one starts afresh (first tick, or format change)."""
    if not raw:
        return cls()
    try:
        return cls.model_validate_json(_decode_cursor_text(raw))
    except (ValidationError, ValueError, zlib.error):
        return cls()


ShotStatus = Literal["new", "ok", "bad", "empty"]


class ShotState(NamedTuple):
    """What the render sensor knows of one folder; a JSON array ``[m, f, s, w]`` in the cursor."""

    m: int
    """The folder's own mtime_ns when last examined (adding, removing or renaming a file changes it)."""
    f: str
    """Fingerprint (16 hex) of the frames last run or found current (``ok``) or last reported (``bad``)."""
    s: ShotStatus
    """Last settled verdict: new (never settled), ok (run requested or already current), bad (problem reported), empty."""
    w: bool = False
    """Still being written at the last look: examined again every tick until it settles."""


class RenderCursor(BaseModel):
    v: Literal[1] = 1
    shots: dict[str, ShotState] = Field(default_factory=dict)
    rr: str = ""
    """The last folder re-stat'ed by the round-robin deep check (in-place rewrites)."""

    def dump(self) -> str:
        return _encode_cursor(self)

    @classmethod
    def load(cls, raw: str | None) -> "RenderCursor":
        """The cursor of the last tick; an empty or unreadable cursor starts afresh (first tick, or format change)."""
        return _load_cursor(cls, raw)


class PromptState(NamedTuple):
    """What the prompt sensor knows of one prompt file; a JSON array in the cursor."""

    m: int
    """The file's mtime_ns."""
    z: int
    """The file's size."""
    v: str
    """The prompt_specs data version last requested or found materialized; "" if none."""
    s: str
    """The shot read from the spec ("" if unknown), to re-check the prompt when that shot's controls change."""
    ok: bool
    """False when the last check reported a problem (not repeated until the file or its shot changes)."""


class PromptCursor(BaseModel):
    v: Literal[1] = 1
    prompts: dict[str, PromptState] = Field(default_factory=dict)
    controls_after: int = 0
    """Storage id of the last control_videos materialization seen."""

    def dump(self) -> str:
        return _encode_cursor(self)

    @classmethod
    def load(cls, raw: str | None) -> "PromptCursor":
        return _load_cursor(cls, raw)


# --------------------------------------------------------------------------------------------------
# Render folders: the pure planning function
# --------------------------------------------------------------------------------------------------

_FRAME_FILE = re.compile(r"^(color|depth|segmentation)\.(\d+)\.png$")
"""Same convention as ``media.scan_render_folder``."""

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
            match = _FRAME_FILE.match(entry.name)
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
        return _Examined(ShotState(dir_mtime_ns, stat.fingerprint, "bad"), None, Problem(name=shot, message=name_problem), False, False)
    try:
        sequence = scan_render_folder(folder)
    except RenderValidationError as error:
        message = "; ".join(error.problems[:5]) + (f" (+{len(error.problems) - 5} more)" if len(error.problems) > 5 else "")
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
            result = _examine_folder(layout.renders_dir / name, folders[name], old.get(name), now_ns, settle_ns, is_current)
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
        path = layout.prompt_file(name)
        try:
            version, shot = expected_spec_version(layout, path)
        except (SpecError, OSError) as error:
            prompts[name] = PromptState(st.st_mtime_ns, st.st_size, prev.v if prev else "", _shot_if_readable(path), False)
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
        plan.runs.append(PromptRun(prompt=name, data_version=version, mtime_ns=st.st_mtime_ns, reason=reason))
    plan.cursor = PromptCursor(prompts=prompts, controls_after=cursor.controls_after)
    return plan


# --------------------------------------------------------------------------------------------------
# The Dagster layer
# --------------------------------------------------------------------------------------------------

SETTINGS = SensorSettings.from_env()
CONTROL_VIDEOS = dg.AssetKey("control_videos")
PROMPT_SPECS = dg.AssetKey("prompt_specs")
GENERATION = [PROMPT_SPECS, dg.AssetKey("generated_videos"), dg.AssetKey("upscaled_videos")]
SHOT_JOB = "shot_job"
GPU_JOB = "full_cycle_job"
_LOG_LINES = 20


def _default_status(settings: SensorSettings) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if settings.enabled else dg.DefaultSensorStatus.STOPPED


def _log_problems(log, problems: list[Problem], what: str) -> None:
    for problem in problems[:_LOG_LINES]:
        log.warning(f"{what} {problem.name}: {problem.message} (no run started)")
    if len(problems) > _LOG_LINES:
        log.warning(f"... and {len(problems) - _LOG_LINES} more {what}s with problems")


def _names(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str):
    result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1)
    return result.records[0] if result.records else None


def controls_current(instance: dg.DagsterInstance, shot: str, fingerprint: str) -> bool:
    """True when ``shots`` was last materialized at this fingerprint (its data version) and ``control_videos``
    after it: the control videos were made from exactly these frames (by a run, the UI or the CLI)."""
    from dagster._core.definitions.data_version import DATA_VERSION_TAG

    shots_record = _latest(instance, dg.AssetKey("shots"), shot)
    controls_record = _latest(instance, CONTROL_VIDEOS, shot)
    if shots_record is None or controls_record is None or controls_record.storage_id < shots_record.storage_id:
        return False
    materialization = shots_record.asset_materialization
    return materialization is not None and (materialization.tags or {}).get(DATA_VERSION_TAG) == fingerprint


def materialized_spec_version(instance: dg.DagsterInstance, prompt: str) -> str | None:
    from dagster._core.definitions.data_version import DATA_VERSION_TAG

    record = _latest(instance, PROMPT_SPECS, prompt)
    materialization = record.asset_materialization if record else None
    return (materialization.tags or {}).get(DATA_VERSION_TAG) if materialization else None


def render_summary(plan: RenderPlan, folders_known: int) -> str:
    parts = [f"{folders_known} render folders, {plan.examined} new or changed, {plan.deep_checked} re-checked, {len(plan.runs)} runs"]
    if plan.waiting:
        parts.append(f"waiting to settle: {_names(plan.waiting)}")
    if plan.problems:
        parts.append(f"problems: {_names([p.name for p in plan.problems])}")
    if plan.still_bad:
        parts.append(f"still invalid (reported before): {_names(plan.still_bad)}")
    if plan.removed:
        parts.append(f"removed (partition and outputs kept): {_names(plan.removed)}")
    if plan.deferred:
        parts.append(f"{plan.deferred} changed folders left for the next tick")
    return "; ".join(parts)


def render_sensor_result(context: dg.SensorEvaluationContext, layout: ProjectLayout, settings: SensorSettings, now: float) -> dg.SensorResult:
    plan = plan_render_tick(
        layout,
        RenderCursor.load(context.cursor),
        now,
        settle_seconds=settings.render_settle_seconds,
        scan_budget=settings.render_scan_budget,
        deep_checks=settings.render_deep_checks,
        is_current=lambda shot, fingerprint: controls_current(context.instance, shot, fingerprint),
    )
    for shot in plan.removed:
        context.log.warning(
            f"render folder {layout.render_dir(shot)} disappeared: partition shots/{shot} and "
            f"{layout.shot_videos_dir(shot)} are kept; delete the partition in the UI if the shot is gone for good"
        )
    _log_problems(context.log, plan.problems, "render folder")
    for run in plan.runs:
        context.log.info(f"shot {run.shot}: {run.reason}, run {run.run_key}")
    summary = render_summary(plan, len(plan.cursor.shots))
    context.log.info(summary)
    add = sorted(set(plan.shots_to_add) | {run.shot for run in plan.runs})
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=run.shot, run_key=run.run_key, tags={"cosmos/trigger": run.reason, "cosmos/fingerprint": run.fingerprint})
            for run in plan.runs
        ],
        dynamic_partitions_requests=[SHOTS.build_add_request(add)] if add else [],
        cursor=plan.cursor.dump(),
        skip_reason=None if plan.runs else summary,
    )


def touched_shots_since(instance: dg.DagsterInstance, after: int, limit: int = 1000) -> tuple[set[str], int]:
    """Shots whose control_videos were materialized after storage id ``after``, and the newest storage id."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CONTROL_VIDEOS, after_storage_id=after), limit=limit, ascending=True
    )
    shots = {record.partition_key for record in result.records if record.partition_key}
    newest = max((record.storage_id for record in result.records), default=after)
    return shots, newest


def gpu_tags(context: dg.SensorEvaluationContext) -> dict[str, str]:
    """The GPU jobs' tags (``gpu_host=<host>``) so auto-generated runs queue one at a time per host."""
    repo = context.repository_def
    if repo is None or not repo.has_job(GPU_JOB):
        return {}
    return {k: str(v) for k, v in repo.get_job(GPU_JOB).tags.items() if k == "gpu_host"}


def prompt_sensor_result(context: dg.SensorEvaluationContext, layout: ProjectLayout, settings: SensorSettings) -> dg.SensorResult:
    cursor = PromptCursor.load(context.cursor)
    touched, newest = touched_shots_since(context.instance, cursor.controls_after)
    plan = plan_prompt_tick(layout, cursor, touched, materialized_version=lambda p: materialized_spec_version(context.instance, p))
    plan.cursor = plan.cursor.model_copy(update={"controls_after": newest})
    for prompt in plan.removed:
        context.log.warning(
            f"prompt file {layout.prompt_file(prompt)} disappeared: partition prompts/{prompt} and "
            f"{layout.output_dir(prompt)} are kept; delete the partition in the UI if the prompt is gone for good"
        )
    _log_problems(context.log, plan.problems, "prompt")
    selection = GENERATION if settings.auto_generate else [PROMPT_SPECS]
    tags = gpu_tags(context) if settings.auto_generate else {}
    runs = []
    for run in plan.runs:
        context.log.info(f"prompt {run.prompt}: {run.reason}, run {run.run_key} ({', '.join(k.to_user_string() for k in selection)})")
        runs.append(dg.RunRequest(partition_key=run.prompt, run_key=run.run_key, asset_selection=selection, tags={**tags, "cosmos/trigger": run.reason}))
    add = sorted(set(plan.prompts_to_add) | {run.prompt for run in plan.runs})
    summary = (
        f"{len(plan.cursor.prompts)} prompts, {len(runs)} runs"
        + (f"; problems: {_names([p.name for p in plan.problems])}" if plan.problems else "")
        + (f"; removed (partition and outputs kept): {_names(plan.removed)}" if plan.removed else "")
        + ("" if settings.auto_generate else "; auto-generate off (COSMOS_AUTO_GENERATE)")
    )
    context.log.info(summary)
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[PROMPTS.build_add_request(add)] if add else [],
        cursor=plan.cursor.dump(),
        skip_reason=None if runs else summary,
    )


def build_sensors(settings: SensorSettings) -> list[dg.SensorDefinition]:
    """The render and prompt sensors with these settings (tests build their own)."""
    import time

    @dg.sensor(
        name="render_sensor",
        job_name=SHOT_JOB,
        minimum_interval_seconds=settings.interval_seconds,
        default_status=_default_status(settings),
        description=(
            "New or changed render folders under art/houdini/renders/ -> shots partition + shots/control_videos run, "
            f"once no file changed for {settings.render_settle_seconds:g} s and the passes agree. See docs/sensors.md."
        ),
    )
    def render_sensor(context: dg.SensorEvaluationContext, project: ProjectResource) -> dg.SensorResult:
        return render_sensor_result(context, project.layout, settings, time.time())

    @dg.sensor(
        name="prompt_sensor",
        target=dg.AssetSelection.assets(*GENERATION),
        minimum_interval_seconds=settings.interval_seconds,
        default_status=_default_status(settings),
        description=(
            "New or edited inputs/prompts/*.json, or re-encoded control videos of their shot -> prompt_specs run "
            f"(auto-generate {'on: also generated_videos and upscaled_videos' if settings.auto_generate else 'off'}). "
            "See docs/sensors.md."
        ),
    )
    def prompt_sensor(context: dg.SensorEvaluationContext, project: ProjectResource) -> dg.SensorResult:
        return prompt_sensor_result(context, project.layout, settings)

    return [render_sensor, prompt_sensor]


ALL_SENSORS: list[dg.SensorDefinition] = build_sensors(SETTINGS)
