"""Sensors that start runs when new renders and prompts land.

Two sensors, both stopped unless ``COSMOS_SENSORS=on``:

- ``render_sensor`` watches ``art/houdini/renders/``. A new, settled, valid shot folder becomes a ``shots``
  partition and a ``shot_job`` run (``shots`` + ``control_videos``); a folder whose frames changed runs again.
- ``prompt_sensor`` watches ``inputs/prompts/*.json`` and the ``control_videos`` materializations. A new or
  edited prompt, or a prompt whose shot's control videos were re-encoded, gets an observation of
  ``prompt_inputs`` with its new data version (so the UI shows its ``prompt_specs`` *stale*, and no other
  prompt's) and a ``prompt_job`` run of ``prompt_specs`` (cheap, no GPU), which gives the prompt a new data
  version so ``generated_videos`` shows *stale*. Generation runs too (``full_cycle_job``) only with
  ``COSMOS_AUTO_GENERATE=on``.

The decisions are pure functions (``plan_render_tick``, ``plan_prompt_tick`` in :mod:`cosmos_assets.watch.plans`)
over the file system, a pydantic cursor and ``now``; the functions here only read the instance, turn a plan into a
``SensorResult`` and log. The jobs they start are handed to :func:`build_sensors` as objects (built once in
``defs/jobs.py``). See docs/sensors.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import dagster as dg

# Private on purpose, and used only by `data_version_of` and `observation_with_version` below: see the comment there.
from dagster._core.definitions.data_version import DATA_VERSION_TAG as _DATA_VERSION_TAG

from cosmos_assets.defs.partitions import PROMPTS, SHOTS
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.runs.priority import priority_tags
from cosmos_assets.watch.cursors import PromptCursor, RenderCursor, SensorSettings
from cosmos_assets.watch.plans import Problem, RenderPlan, plan_prompt_tick, plan_render_tick

if TYPE_CHECKING:  # what `dg.define_asset_job` returns; Dagster does not export the class itself
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

    AnyJob = dg.JobDefinition | UnresolvedAssetJobDefinition

CONTROL_VIDEOS = dg.AssetKey("control_videos")
PROMPT_INPUTS = dg.AssetKey("prompt_inputs")
PROMPT_SPECS = dg.AssetKey("prompt_specs")
GENERATION = [PROMPT_SPECS, dg.AssetKey("generated_videos"), dg.AssetKey("upscaled_videos")]
"""What an auto-generate run materializes (``full_cycle_job`` less ``prompt_inputs``, which the tick observed)."""
_LOG_LINES = 20


# Data versions on asset events. Dagster 1.13.27 has no public accessor for a materialization's data version
# (`AssetObservation.data_version` exists, `AssetMaterialization` has none, and
# `DagsterInstance.get_latest_data_version_record` is not public and returns a raw event-log record), and no public
# way to put one on a runless observation (`ObserveResult(data_version=...)` works only inside an observation run).
# Both go through Dagster's data-version tag, in these two functions only.


def data_version_of(event: dg.AssetMaterialization | dg.AssetObservation | None) -> str | None:
    """The data version an asset event recorded, or None."""
    return (event.tags or {}).get(_DATA_VERSION_TAG) if event is not None else None


def observation_with_version(
    key: dg.AssetKey, partition: str, version: str, metadata: Mapping[str, str]
) -> dg.AssetObservation:
    """A runless observation of ``key``/``partition`` at ``version`` (what ``ObserveResult(data_version=...)`` records)."""
    return dg.AssetObservation(
        asset_key=key, partition=partition, tags={_DATA_VERSION_TAG: version}, metadata=dict(metadata)
    )


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
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    )
    return result.records[0] if result.records else None


def controls_current(instance: dg.DagsterInstance, shot: str, fingerprint: str) -> bool:
    """True when ``shots`` was last materialized at this fingerprint (its data version) and ``control_videos``
    after it: the control videos were made from exactly these frames (by a run, the UI or the CLI)."""
    shots_record = _latest(instance, dg.AssetKey("shots"), shot)
    controls_record = _latest(instance, CONTROL_VIDEOS, shot)
    if shots_record is None or controls_record is None or controls_record.storage_id < shots_record.storage_id:
        return False
    return data_version_of(shots_record.asset_materialization) == fingerprint


def materialized_spec_version(instance: dg.DagsterInstance, prompt: str) -> str | None:
    record = _latest(instance, PROMPT_SPECS, prompt)
    return data_version_of(record.asset_materialization) if record else None


def render_summary(plan: RenderPlan, folders_known: int) -> str:
    parts = [
        f"{folders_known} render folders, {plan.examined} new or changed, {plan.deep_checked} re-checked, {len(plan.runs)} runs"
    ]
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


def render_sensor_result(
    context: dg.SensorEvaluationContext, layout: ProjectLayout, settings: SensorSettings, now: float
) -> dg.SensorResult:
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
            f"render folder {layout.renders_dir / shot} disappeared: partition shots/{shot} and "
            f"{layout.videos_dir / shot} are kept; delete the partition in the UI if the shot is gone for good"
        )
    _log_problems(context.log, plan.problems, "render folder")
    for run in plan.runs:
        context.log.info(f"shot {run.shot}: {run.reason}, run {run.run_key}")
    summary = render_summary(plan, len(plan.cursor.shots))
    context.log.info(summary)
    add = sorted(set(plan.shots_to_add) | {run.shot for run in plan.runs})
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=run.shot,
                run_key=run.run_key,
                tags={
                    "cosmos/trigger": run.reason,
                    "cosmos/fingerprint": run.fingerprint,
                    **priority_tags(settings.run_priority),
                },
            )
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


def prompt_sensor_result(
    context: dg.SensorEvaluationContext, layout: ProjectLayout, settings: SensorSettings, job: AnyJob
) -> dg.SensorResult:
    """One prompt-sensor tick: for every prompt to run, an observation of ``prompt_inputs`` at its new data version
    (recorded by the daemon before the runs start) and a run of ``job`` (its tags, e.g. ``gpu_host``, on the run)."""
    cursor = PromptCursor.load(context.cursor)
    touched, newest = touched_shots_since(context.instance, cursor.controls_after)
    plan = plan_prompt_tick(
        layout, cursor, touched, materialized_version=lambda p: materialized_spec_version(context.instance, p)
    )
    plan.cursor = plan.cursor.model_copy(update={"controls_after": newest})
    for prompt in plan.removed:
        context.log.warning(
            f"prompt file {layout.prompts_dir / prompt}.json disappeared: partition prompts/{prompt} and "
            f"{layout.outputs_dir / prompt} are kept; delete the partition in the UI if the prompt is gone for good"
        )
    _log_problems(context.log, plan.problems, "prompt")
    selection = GENERATION if settings.auto_generate else [PROMPT_SPECS]
    tags = {k: str(v) for k, v in (job.tags or {}).items()}
    runs, observations = [], []
    for run in plan.runs:
        context.log.info(
            f"prompt {run.prompt}: {run.reason}; prompt_inputs observed at {run.data_version}; "
            f"{job.name} run {run.run_key} ({', '.join(k.to_user_string() for k in selection)})"
        )
        observations.append(
            observation_with_version(
                PROMPT_INPUTS, run.prompt, run.data_version, {"shot": run.shot or "(none)", "reason": run.reason}
            )
        )
        runs.append(
            dg.RunRequest(
                partition_key=run.prompt,
                run_key=run.run_key,
                asset_selection=selection,
                tags={**tags, "cosmos/trigger": run.reason, **priority_tags(settings.run_priority)},
            )
        )
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
        asset_events=observations,
        dynamic_partitions_requests=[PROMPTS.build_add_request(add)] if add else [],
        cursor=plan.cursor.dump(),
        skip_reason=None if runs else summary,
    )


def build_sensors(
    settings: SensorSettings, *, shot_job: AnyJob, prompt_job: AnyJob, gpu_job: AnyJob
) -> list[dg.SensorDefinition]:
    """The render and prompt sensors with these settings, starting these job objects (built once, in
    ``defs.jobs.build_jobs``): ``shot_job`` for render folders, ``prompt_job`` for prompts, or ``gpu_job`` for
    prompts when auto-generate is on (its tags, ``gpu_host=<host>``, queue the runs one at a time per host)."""
    import time

    prompt_run_job = gpu_job if settings.auto_generate else prompt_job

    @dg.sensor(
        name="render_sensor",
        job=shot_job,
        minimum_interval_seconds=settings.interval_seconds,
        default_status=_default_status(settings),
        description=(
            f"New or changed render folders under art/houdini/renders/ -> shots partition + {shot_job.name} run "
            f"(shots, control_videos), once no file changed for {settings.render_settle_seconds:g} s and the passes "
            "agree. See docs/sensors.md."
        ),
    )
    def render_sensor(context: dg.SensorEvaluationContext, project: ProjectResource) -> dg.SensorResult:
        return render_sensor_result(context, project.layout, settings, time.time())

    @dg.sensor(
        name="prompt_sensor",
        job=prompt_run_job,
        minimum_interval_seconds=settings.interval_seconds,
        default_status=_default_status(settings),
        description=(
            "New or edited inputs/prompts/*.json, or re-encoded control videos of their shot -> prompt_inputs "
            f"observed (its prompt_specs shows stale) and a {prompt_run_job.name} run of prompt_specs "
            f"(auto-generate {'on: also generated_videos and upscaled_videos' if settings.auto_generate else 'off'}). "
            "See docs/sensors.md."
        ),
    )
    def prompt_sensor(context: dg.SensorEvaluationContext, project: ProjectResource) -> dg.SensorResult:
        return prompt_sensor_result(context, project.layout, settings, prompt_run_job)

    return [render_sensor, prompt_sensor]
