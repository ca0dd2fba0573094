"""Which prompts wait for a host, as Dagster knows them: one-prompt runs queued (the run queue holds GPU runs one per
host, dagster.yaml) or waiting in the host's own pool (``gpu_host/<host>``, defs/resources/slots.py) with the same step to
do under the same config. The run holding the host takes them into its invocation (runs/gather.py,
runs/company.py); how they were started does not matter: a sensor, a click, ``dagster asset materialize``,
``cosmos-assets generate``, a wedge.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG, PARTITION_NAME_TAG

from cosmos_assets.defs.resources import slots
from cosmos_assets.defs.resources.placement import is_terminating
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.runs.gather import BatchWindow, Waiting, gather
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.skip import last_success

_QUEUED = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED)
_LIVE = (*_QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)
_QUEUE_LOOK = 500


def does_step(run: dg.DagsterRun, asset: dg.AssetKey, jobs_with_it: Collection[str]) -> bool:
    """Whether ``run`` materializes ``asset``: in its asset selection, or (a whole job: no selection, or an empty one
    as ``execute_in_process`` of an asset job records it) its job has it."""
    if run.asset_selection:
        return asset in run.asset_selection
    return run.job_name in jobs_with_it


def step_config(run: dg.DagsterRun, step: str) -> dict[str, Any]:
    """The config ``run`` gives ``step`` (empty when it gives none)."""
    ops = (run.run_config or {}).get("ops") or {}
    found = (ops.get(step) or {}).get("config") if isinstance(ops, dict) else None
    return dict(found) if isinstance(found, dict) else {}


def waiting_for_host(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    label: str,
    step: str,
    asset: dg.AssetKey,
    jobs_with_it: Collection[str],
    accepts: Callable[[dg.DagsterRun], bool],
    earlier: Callable[[dg.DagsterRun, str], str],
) -> tuple[list[Waiting], int]:
    """The one-prompt runs (other than ``run``) that will do ``step`` of ``asset`` and that ``accepts`` (same config,
    not forced), waiting for ``label`` (its pool), queued, or with their earlier GPU step done for them; and how many
    more are on their way (started, neither done with the step nor waiting for it yet). ``earlier(run, prompt)``:
    ``"none"`` (no GPU step before this one), ``"done"`` (run for it already) or ``"to do"``. Pool first, then the
    rest, oldest first."""
    pending: dict[str, str] = {}
    if slots.supported(instance):
        # A step waits first for a place in the asset pool (``gpu_host``, one per host), then for a host's own slot:
        # with one able host, a step in either queue waits for this host.
        storage = instance.event_log_storage
        for key in (slots.ANY_GPU_POOL, slots.host_pool(label)):
            for p in storage.get_concurrency_info(key).pending_steps:
                pending[p.run_id] = p.step_key if "@" in p.step_key else f"{p.step_key}@{label}"
    live = list(instance.get_runs(filters=dg.RunsFilter(statuses=list(_LIVE)), limit=_QUEUE_LOOK))
    live.reverse()  # newest first from storage: oldest first here, as the queue runs them
    live.sort(key=lambda r: pending.get(r.run_id) != f"{step}@{label}")  # stable: those in the host's pool first
    waiting: list[Waiting] = []
    coming = 0
    own = run.tags.get(PARTITION_NAME_TAG)
    for other in live:
        prompt = other.tags.get(PARTITION_NAME_TAG)
        if (
            other.run_id == run.run_id
            or not prompt
            or prompt == own
            or ASSET_PARTITION_RANGE_START_TAG in other.tags
            or not does_step(other, asset, jobs_with_it)
            or not accepts(other)
        ):
            continue
        here = pending.get(other.run_id)
        before = earlier(other, prompt)
        if here == f"{step}@{label}" or before == "done" or (other.status in _QUEUED and before == "none"):
            how = f"waiting for host {label}" if here else ("queued" if other.status in _QUEUED else "on its way")
            waiting.append(
                Waiting(prompt=prompt, dagster_run_id=other.run_id, priority=slots.run_priority(other), how=how)
            )
        elif here is None and other.status not in _QUEUED and not _did(instance, other, asset, prompt):
            coming += 1  # not waiting for this host for another step: it cannot get here while this run holds it
    return waiting, coming


def _did(instance: dg.DagsterInstance, run: dg.DagsterRun, asset: dg.AssetKey, prompt: str) -> bool:
    """Whether ``run`` has materialized ``asset`` for ``prompt`` (its step is behind it)."""
    found = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[prompt]), limit=1)
    return bool(found.records) and found.records[0].run_id == run.run_id


def company_finder(
    context: dg.AssetExecutionContext,
    label: str,
    asset: dg.AssetKey,
    jobs_with_it: Collection[str],
    accepts: Callable[[dg.DagsterRun], bool],
    earlier: Callable[[dg.DagsterRun, str], str],
    window: BatchWindow,
    cancelled: Callable[[], bool],
) -> Callable[[], dict[str, str]]:
    """What :func:`~cosmos_assets.runs.company.run_with_company` asks once its own prompt has work: the prompts waiting
    for ``label`` gathered within ``window`` (runs/gather.py), prompt -> the Dagster run each waits in."""
    step = str(context.op_execution_context.op_handle)
    own, run = context.partition_key, context.run

    def find() -> dict[str, str]:
        seen = {"coming": 0}

        def find_now() -> list[Waiting]:
            waiting, seen["coming"] = waiting_for_host(
                context.instance, run, label, step, asset, jobs_with_it, accepts, earlier
            )
            return waiting

        company = gather(
            own, slots.run_priority(run), find_now, window, cancelled=cancelled, on_the_way=lambda: seen["coming"]
        )
        context.log.info(
            f"company for {own} on {label}: {len(company.taken)} waiting prompt(s) "
            + (
                f"({', '.join(f'{w.prompt}: run {w.dagster_run_id[:8]}, {w.how}' for w in company.taken)}) "
                if company.taken
                else ""
            )
            + f"after {company.waited_seconds:.1f} s; {company.why}"
        )
        return {w.prompt: w.dagster_run_id for w in company.taken}

    return find


GENERATION, UPSCALE = dg.AssetKey("generated_videos"), dg.AssetKey("upscaled_videos")
JOBS_WITH = {GENERATION: ("full_cycle_job", "generate_job"), UPSCALE: ("full_cycle_job",)}
"""The jobs that materialize each GPU asset when a run names no asset selection (definitions.build_jobs)."""


def company_for(
    context: dg.AssetExecutionContext,
    layout: ProjectLayout,
    label: str,
    config: dg.Config,
    config_type: type[dg.Config],
    window: BatchWindow,
    able_hosts: int = 1,
) -> Callable[[], dict[str, str]]:
    """The prompts waiting for ``label`` that this step may take: one-prompt runs of the same step under an equal
    config, none of them forced (a forced run would run its prompt again anyway). An upscale whose run still has
    its generation to do is taken only once that generation was run for that run (by a taken batch).

    Only where ``label`` is the one host able to run the step (``able_hosts`` 1): in a pool of several, a waiting
    prompt waits for every able host at once and may be placed on another while this batch runs it (docs/batching.md)."""
    if able_hosts > 1:

        def none() -> dict[str, str]:
            context.log.info(
                f"company for {context.partition_key}: none taken ({able_hosts} hosts can run this step: "
                "the waiting prompts spread over them)"
            )
            return {}

        return none
    ours = config.model_dump()
    asset = context.asset_key
    step = str(context.op_execution_context.op_handle)
    store = RunStore(layout.runs_dir)

    def accepts(other: dg.DagsterRun) -> bool:
        try:
            theirs = config_type(**step_config(other, step)).model_dump()
        except Exception:  # noqa: BLE001 - a config this code does not read: not ours to take
            return False
        return theirs == ours and not theirs.get("force")

    def earlier(other: dg.DagsterRun, prompt: str) -> str:
        if asset != UPSCALE or not does_step(other, GENERATION, JOBS_WITH[GENERATION]):
            return "none"
        done = last_success(store, prompt, "generate")  # its generation, run for it by a batch that took it
        return (
            "done" if done is not None and done.batch is not None and done.batch.taken_for == other.run_id else "to do"
        )

    cancelled = lambda: is_terminating(context.instance, context.run.run_id)  # noqa: E731
    return company_finder(context, label, asset, JOBS_WITH.get(asset, ()), accepts, earlier, window, cancelled)
