"""Run a recorded run again, exactly: ``cosmos-assets reproduce RUN_ID`` or ``cosmos-assets reproduce CLIP.mp4``.

What is run again comes from the run record (``outputs/.runs/<id>.json``) or, for a clip whose record is not in this
project, from the recipe stamped in it (:mod:`cosmos_assets.runs.stamp`): the model, the artist's prompt file as the
run read it (so the spec and seed), the GPU count. Before anything is sent, the new plan is held against the original:
every input by sha256 (the model's spec included: a prompt that translates differently now is a difference), the
backend's settings, the image's ID on the host (or the staged program's hash where there is no image) and the
checkpoint revisions the host's cache resolves. Any difference refuses the run in one line naming it, unless
``anyway``: then it runs and the record keeps the differences. A pinnable checkpoint is pinned to the recorded revision
(Cosmos 3: ``checkpoint_revision``). The new run writes to ``outputs/_reproduced/<prompt>/<new run id>/`` (a name no
prompt can have: prompt names start with a letter or digit), never over anything; it is recorded with ``reproduces``
and never counts as the prompt's run for skipping or adopting. It ends with the comparison of the two video streams
(:mod:`cosmos_assets.media.compare`).

Plain Python through the runner's own :func:`~cosmos_assets.runs.runner.execute_plan`, no Dagster: a reproduction is
not a materialization of the prompt's asset (its outputs are not the partition's, and its data version must not move).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cosmos_assets.files import atomic_write_json, sha256_file
from cosmos_assets.layout import ProjectLayout, check_name, name_problem
from cosmos_assets.machines.base import Machine
from cosmos_assets.machines.job import relative_inside
from cosmos_assets.media.compare import VideoComparison, compare_videos
from cosmos_assets.media.recipe import RecipeError, read_recipe
from cosmos_assets.models.base import OUTPUT_VIDEO, ModelBackend
from cosmos_assets.models.registry import backend_named
from cosmos_assets.redaction import first_line
from cosmos_assets.runs.identity import short
from cosmos_assets.runs.ids import new_run_id, run_id_problem
from cosmos_assets.runs.options import RunOptions
from cosmos_assets.runs.plan import StagePlan, plan_generation
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import execute_plan
from cosmos_assets.runs.spec_used import InputFile
from cosmos_assets.runs.stage import StageResult, clean_staging, planned_record

REPRODUCED = "_reproduced"
PINNABLE = {"cosmos3": "checkpoint_revision"}  # model -> the block setting that pins its checkpoint's revision


class ReproduceRefused(ValueError):
    """The run cannot be run again as it was (or at all); one line naming what differs or is missing."""


@dataclass
class Original:
    """What a run needs to be run again, from its record or from the recipe stamped in its clip."""

    run_id: str
    prompt: str
    model: str
    prompt_spec: dict[str, Any]
    inputs: list[InputFile]
    num_gpus: int
    image: str | None
    image_id: str | None
    program_sha256: str | None
    checkpoint_revisions: dict[str, str]
    settings: dict[str, Any] | None
    video: Path | None  # the original's video, to compare with
    source: str


@dataclass
class Reproduction:
    result: StageResult
    differences: list[str]
    comparison: VideoComparison | None
    original: Original
    notes: list[str] = field(default_factory=list)
    comparison_error: str | None = None  # why the two videos could not be compared (the run itself succeeded)

    def summary(self) -> str:
        where = self.result.output_dir
        head = f"reproduced run {self.original.run_id} as run {self.result.record.run_id} into {where}"
        if self.differences:
            head += f" (run anyway: {'; '.join(self.differences)})"
        if self.comparison_error is not None:
            return f"{head}: comparison failed: {self.comparison_error}"
        if self.comparison is None:
            return f"{head}: the original's video is not in this project, nothing to compare with"
        return f"{head}: {self.comparison.summary()}"


def _original_video(layout: ProjectLayout, record: RunRecord) -> Path | None:
    """The record's output video where it still is with its recorded hash (its folder, or moved aside)."""
    for item in record.output_files:
        if Path(item.path).name != OUTPUT_VIDEO:
            continue
        for path in (
            layout.root / item.path,
            layout.previous_outputs_dir / record.prompt / record.run_id / OUTPUT_VIDEO,
        ):
            if path.is_file() and path.stat().st_size == item.size and sha256_file(path) == item.sha256:
                return path
    return None


def from_record(layout: ProjectLayout, record: RunRecord, video: Path | None = None) -> Original:
    if record.stage != "generate":
        raise ReproduceRefused(
            f"run {record.run_id} is an {record.stage}: reproduce runs generations again "
            "(reproduce the run that generated its input, then upscale)"
        )
    if record.prompt_spec is None:
        raise ReproduceRefused(
            f"run {record.run_id}'s record keeps no prompt file (made before prompt_spec was "
            "recorded): it cannot be run again from it"
        )
    return Original(
        run_id=record.run_id,
        prompt=record.prompt,
        model=record.model,
        prompt_spec=record.prompt_spec,
        inputs=list(record.inputs),
        num_gpus=record.num_gpus,
        image=record.image,
        image_id=record.image_id,
        program_sha256=record.program_sha256,
        checkpoint_revisions=dict(record.checkpoint_revisions),
        settings=dict(record.settings),
        video=video or _original_video(layout, record),
        source=f"run record {RunStore(layout.runs_dir).path(record.run_id)}",
    )


def from_run_id(layout: ProjectLayout, run_id: str) -> Original:
    problem = run_id_problem(run_id)
    if problem is not None:
        raise ReproduceRefused(f"{problem}; give a run id (cosmos-assets history) or a clip .mp4")
    try:
        return from_record(layout, RunStore(layout.runs_dir).load(run_id))
    except FileNotFoundError as error:
        raise ReproduceRefused(f"{error}: no such run in this project; give its clip instead") from error


def from_clip(layout: ProjectLayout, clip: Path) -> Original:
    """The run that made ``clip``: its record if this project has it, else the recipe stamped in the clip."""
    try:
        tags = read_recipe(clip)
    except RecipeError as error:
        raise ReproduceRefused(str(error)) from error
    run_id = tags.get("cosmos_run_id")
    if not run_id or run_id_problem(run_id) is not None:
        raise ReproduceRefused(f"{clip} carries no run id in its metadata: it was not made by a run of ours")
    store = RunStore(layout.runs_dir)
    if store.path(run_id).is_file():
        return from_record(layout, store.load(run_id), video=clip)
    missing = [k for k in ("prompt_spec", "inputs", "num_gpus") if f"cosmos_{k}" not in tags]
    if missing or tags.get("cosmos_stage") != "generate":
        why = (
            f"its stamp lacks {', '.join(missing)} (a clip stamped before recipe version 2)"
            if missing
            else f"it is an {tags.get('cosmos_stage')}, and reproduce runs generations"
        )
        raise ReproduceRefused(
            f"{clip} cannot be run again: {why}, and run record {store.path(run_id)} is not in "
            "this project; run it from the project that made it (COSMOS_PROJECT_ROOT)"
        )
    try:
        inputs = [InputFile(path=p, size=int(n), sha256=h) for p, n, h in json.loads(tags["cosmos_inputs"])]
        settings = json.loads(tags["cosmos_settings"]) if "cosmos_settings" in tags else None
        original = Original(
            run_id=run_id,
            prompt=tags["cosmos_prompt_name"],
            model=tags["cosmos_model"],
            prompt_spec=json.loads(tags["cosmos_prompt_spec"]),
            inputs=inputs,
            num_gpus=int(tags["cosmos_num_gpus"]),
            image=tags.get("cosmos_image"),
            image_id=tags.get("cosmos_image_id"),
            program_sha256=tags.get("cosmos_program_sha256"),
            checkpoint_revisions=json.loads(tags.get("cosmos_checkpoint_revisions", "{}")),
            settings=settings,
            video=clip,
            source=f"the recipe stamped in {clip}",
        )
    except (KeyError, ValueError, TypeError) as error:
        raise ReproduceRefused(f"{clip}: its stamped recipe is damaged ({type(error).__name__}: {error})") from error
    _refuse_escaping(clip, original)
    return original


def _refuse_escaping(clip: Path, original: Original) -> None:
    """A stamp is text from anywhere: its prompt name (a file and folder name here) and its input paths (under the
    model root) are held to the rules a run record is read under (runs/record_rules.py) before anything uses them."""
    problem = name_problem(original.prompt)
    if problem is not None:
        raise ReproduceRefused(
            f"{clip}: its stamped prompt_name {original.prompt[:80]!r} {problem}: not a prompt of "
            "ours, so it cannot be run again"
        )
    for item in original.inputs:
        try:
            relative_inside(item.path, "inputs entry")
        except ValueError as error:
            raise ReproduceRefused(
                f"{clip}: its stamped {error}: not a run of ours, so it cannot be run again"
            ) from error


def _comparable(settings: dict[str, Any], run_id: str) -> dict[str, Any]:
    drop = {"warnings", "checkpoint_revision"}  # what a run says, and the pin reproduce adds
    return json.loads(
        json.dumps({k: v for k, v in settings.items() if k not in drop}, default=str).replace(run_id, "{run_id}")
    )


def differences(
    original: Original, record: RunRecord, revisions_now: dict[str, str], where: str, revision_repos: Iterable[str] = ()
) -> list[str]:
    """What the planned ``record`` would run differently from ``original`` (empty: the same run). ``revision_repos``:
    the checkpoints the planned run resolves on the host (its invocation's revision files)."""
    found: list[str] = []
    now = {item.path: item for item in record.inputs}
    for item in original.inputs:
        new = now.pop(item.path, None)
        if new is None:
            found.append(f"input {item.path} is no longer read")
        elif new.sha256 != item.sha256:
            what = (
                "the model's spec (the prompt translates differently now)"
                if item.path == record.spec_remote_path
                else f"input {item.path}"
            )
            found.append(f"{what} changed (sha256 {item.sha256[:12]}, now {new.sha256[:12]})")
    found += [f"input {path} is read now, not by the original" for path in now]
    if original.settings is not None:
        old, new_settings = _comparable(original.settings, original.run_id), _comparable(record.settings, record.run_id)
        changed = sorted(k for k in old.keys() | new_settings.keys() if old.get(k) != new_settings.get(k))
        if changed:
            found.append(
                "settings "
                + ", ".join(f"{k} {old.get(k, '(unset)')} -> {new_settings.get(k, '(unset)')}" for k in changed)
            )
    if original.image_id != record.image_id:
        found.append(
            f"image {record.image or '(none)'} is {short(record.image_id)} on {where}, the run used "
            f"{short(original.image_id)}{'' if original.image_id else ' (not recorded)'}"
        )
    if original.program_sha256 != record.program_sha256:
        found.append(
            f"the staged program changed (sha256 {(original.program_sha256 or '(not recorded)')[:14]}, now "
            f"{(record.program_sha256 or '(none)')[:14]})"
        )
    for repo, commit in original.checkpoint_revisions.items():
        if revisions_now.get(repo) != commit:
            found.append(
                f"checkpoint {repo} resolves to {revisions_now.get(repo) or 'nothing readable'} on {where}, "
                f"the run used {commit}"
            )
    found += [
        f"{repo}: checkpoint revision not recorded by the run (it resolves to "
        f"{revisions_now.get(repo) or 'nothing readable'} on {where} now), so the same checkpoint cannot be checked"
        for repo in revision_repos
        if repo not in original.checkpoint_revisions
    ]
    return found


def _staged_prompt(layout: ProjectLayout, original: Original, run_id: str, pin: bool) -> Path:
    data = json.loads(json.dumps(original.prompt_spec))
    setting = PINNABLE.get(original.model)
    revision = next(iter(original.checkpoint_revisions.values()), None)
    if pin and setting and revision:
        block = data.setdefault("cosmos_assets", {}).setdefault(original.model, {})
        block.setdefault(setting, revision)
    path = _prompt_folder(layout, run_id) / f"{check_name(original.prompt, 'prompt')}.json"
    atomic_write_json(path, data)
    return path


def _prompt_folder(layout: ProjectLayout, run_id: str) -> Path:
    """Where the recorded prompt file is staged for planning: a folder of the new run's own (our run id), removed
    after; never a path made of recorded text."""
    return layout.staging_dir / f"{run_id}.prompt"


def plan_again(layout: ProjectLayout, backend: ModelBackend, original: Original, run_id: str, pin: bool) -> StagePlan:
    """The new run's plan from the recorded prompt file, into ``outputs/_reproduced/<prompt>/<run_id>/``."""
    staged = _staged_prompt(layout, original, run_id, pin)
    try:
        plan = plan_generation(
            layout, backend, original.prompt, run_id=run_id, num_gpus=original.num_gpus, prompt_path=staged
        )
    finally:
        shutil.rmtree(_prompt_folder(layout, run_id), ignore_errors=True)
    plan.dest = layout.outputs_dir / REPRODUCED / original.prompt / run_id
    return plan


def reproduce(
    layout: ProjectLayout,
    machine_for: Callable[[ModelBackend], Machine],
    original: Original,
    *,
    anyway: bool = False,
    options: RunOptions | None = None,
    now: datetime | None = None,
) -> Reproduction:
    """Run ``original`` again (see the module doc); :class:`ReproduceRefused` naming what differs unless ``anyway``.
    ``options``: the log, watchdog and price (its GPU count and force are the original's and ignored)."""
    options = (options or RunOptions()).replace(num_gpus=original.num_gpus, force=True, dagster_run_id=None)
    log = options.log
    backend = backend_named(original.model)
    machine = machine_for(backend)
    run_id = new_run_id(now or datetime.now(UTC))
    plan = plan_again(layout, backend, original, run_id, pin=True)
    record = planned_record(layout, machine, backend, plan)
    found = differences(
        original, record, machine.checkpoint_revisions(plan.job), machine.label, plan.job.invocation.revision_files
    )
    if found and not anyway:
        clean_staging(plan.effective_spec.parent, plan)
        raise ReproduceRefused(
            f"run {original.run_id} cannot be run again exactly: {'; '.join(found)}. "
            "--anyway runs it and records the difference"
        )
    if any(line.startswith("checkpoint ") for line in found):  # a pin that cannot hold would refuse the host
        clean_staging(plan.effective_spec.parent, plan)
        run_id = new_run_id(now or datetime.now(UTC))
        plan = plan_again(layout, backend, original, run_id, pin=False)
        record = planned_record(layout, machine, backend, plan)
    record.reproduces, record.reproduce_differences = original.run_id, found
    plan.dest.parent.mkdir(parents=True, exist_ok=True)
    log(
        f"[cosmos-assets] reproducing run {original.run_id} (from {original.source}) as run {run_id} on "
        f"{machine.label}"
        + (f"; differences accepted: {'; '.join(found)}" if found else ": same inputs, image and checkpoints")
    )
    record.gpu_price_per_hour = options.gpu_price_per_hour
    result = execute_plan(layout, machine, backend, plan, options, record=record)
    after = [
        f"checkpoint {repo} resolved to {result.record.checkpoint_revisions.get(repo)}, the run used {commit}"
        for repo, commit in original.checkpoint_revisions.items()
        if result.record.checkpoint_revisions.get(repo) != commit
    ]
    if after and not found:  # it moved while the run started: say it, on record
        result.record.reproduce_differences = after
        RunStore(layout.runs_dir).save(result.record)
    comparison, failed = None, None
    try:
        comparison = compare_videos(original.video, result.video) if original.video is not None else None
    except (ValueError, OSError) as error:  # VideoReadError...: the run is done and recorded, its folder still said
        failed = first_line(error)
    return Reproduction(result, result.record.reproduce_differences, comparison, original, comparison_error=failed)
