"""Which prompts wait for a host, as Dagster knows them: one-prompt runs queued (the run queue holds GPU runs one per
host, dagster.yaml) or waiting in the host's own pool (``gpu_host/<host>``, hosts/slots.py) with the same step to
do under the same config. The run holding the host takes them into its invocation (runs/gather.py,
runs/company.py); how they were started does not matter: a sensor, a click, ``dagster asset materialize``,
``cosmos-assets generate``, a wedge.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG, PARTITION_NAME_TAG

from cosmos_assets.hosts import slots
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.runs.record import RunStore
from cosmos_assets.runs.skip import last_success
from cosmos_assets.runs.gather import BatchWindow, Waiting, gather

_QUEUED = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED)
_LIVE = (*_QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)
_QUEUE_LOOK = 500


def does_step(run: dg.DagsterRun, asset: dg.AssetKey, jobs_with_it: Collection[str]) -> bool:
    """Whether ``run`` materializes ``asset``: in its asset selection, or (a whole job, no selection) its job has it."""
    if run.asset_selection is not None:
        return asset in run.asset_selection
    return run.job_name in jobs_with_it


def step_config(run: dg.DagsterRun, step: str) -> dict[str, Any]:
    """The config ``run`` gives ``step`` (empty when it gives none)."""
    ops = (run.run_config or {}).get("ops") or {}
    found = (ops.get(step) or {}).get("config") if isinstance(ops, dict) else None
    return dict(found) if isinstance(found, dict) else {}


def waiting_for_host(instance: dg.DagsterInstance, run: dg.DagsterRun, label: str, step: str, asset: dg.AssetKey,
                     jobs_with_it: Collection[str], accepts: Callable[[dg.DagsterRun, str, bool], bool]) -> list[Waiting]:  # fmt: skip
    """The one-prompt runs (other than ``run``) that will do ``step`` of ``asset``, are waiting for ``label`` (its
    pool) or queued, and that ``accepts(run, prompt, queued)`` (same config...); pool first, then queue, oldest first."""
    found: dict[str, tuple[dg.DagsterRun, str]] = {}
    if slots.supported(instance):
        info = instance.event_log_storage.get_concurrency_info(slots.host_pool(label))
        for pending in sorted(info.pending_steps, key=lambda p: p.enqueued_timestamp):
            if pending.run_id != run.run_id and pending.step_key == f"{step}@{label}" and pending.run_id not in found:
                other = instance.get_run_by_id(pending.run_id)
                if other is not None:
                    found[other.run_id] = (other, f"waiting for host {label}")
    queued = instance.get_runs(filters=dg.RunsFilter(statuses=list(_QUEUED)), limit=_QUEUE_LOOK)
    for other in reversed(list(queued)):  # newest first from storage: the queue's order is oldest first
        found.setdefault(other.run_id, (other, "queued"))
    waiting: list[Waiting] = []
    for other, how in found.values():
        prompt = other.tags.get(PARTITION_NAME_TAG)
        if (other.run_id == run.run_id or other.status not in _LIVE or not prompt
                or ASSET_PARTITION_RANGE_START_TAG in other.tags or not does_step(other, asset, jobs_with_it)
                or not accepts(other, prompt, how == "queued")):  # fmt: skip
            continue
        waiting.append(Waiting(prompt=prompt, dagster_run_id=other.run_id, priority=slots.run_priority(other), how=how))
    return waiting


def company_finder(context: dg.AssetExecutionContext, label: str, asset: dg.AssetKey, jobs_with_it: Collection[str],
                   accepts: Callable[[dg.DagsterRun, str, bool], bool], window: BatchWindow,
                   cancelled: Callable[[], bool]) -> Callable[[], dict[str, str]]:  # fmt: skip
    """What :func:`~cosmos_assets.runs.company.run_with_company` asks once its own prompt has work: the prompts waiting
    for ``label`` gathered within ``window`` (runs/gather.py), prompt -> the Dagster run each waits in."""
    step = str(context.op_execution_context.op_handle)
    own, run = context.partition_key, context.run

    def find() -> dict[str, str]:
        company = gather(own, slots.run_priority(run),
                         lambda: waiting_for_host(context.instance, run, label, step, asset, jobs_with_it, accepts),
                         window, cancelled=cancelled)  # fmt: skip
        context.log.info(f"company for {own} on {label}: {len(company.taken)} waiting prompt(s) "
                         + (f"({', '.join(f'{w.prompt}: run {w.dagster_run_id[:8]}, {w.how}' for w in company.taken)}) "
                            if company.taken else "")
                         + f"after {company.waited_seconds:.1f} s; {company.why}")  # fmt: skip
        return {w.prompt: w.dagster_run_id for w in company.taken}

    return find


GENERATION, UPSCALE = dg.AssetKey("generated_videos"), dg.AssetKey("upscaled_videos")
JOBS_WITH = {GENERATION: ("full_cycle_job", "generate_job"), UPSCALE: ("full_cycle_job",)}
"""The jobs that materialize each GPU asset when a run names no asset selection (definitions.build_jobs)."""


def company_for(context: dg.AssetExecutionContext, layout: ProjectLayout, label: str, config: dg.Config,
                config_type: type[dg.Config], window: BatchWindow) -> Callable[[], dict[str, str]]:  # fmt: skip
    """The prompts waiting for ``label`` that this step may take: one-prompt runs of the same step under an equal
    config, none of them forced (a forced run would run its prompt again anyway). An upscale whose run still has
    its generation to do is taken only once that generation was run for that run (by a taken batch)."""
    ours = config.model_dump()
    asset = context.asset_key
    step = str(context.op_execution_context.op_handle)
    store = RunStore(layout.runs_dir)

    def accepts(other: dg.DagsterRun, prompt: str, queued: bool) -> bool:
        try:
            theirs = config_type(**step_config(other, step)).model_dump()
        except Exception:  # noqa: BLE001 - a config this code does not read: not ours to take
            return False
        if theirs != ours or theirs.get("force"):
            return False
        if asset == UPSCALE and queued and does_step(other, GENERATION, JOBS_WITH[GENERATION]):
            done = last_success(store, prompt, "generate")
            return done is not None and done.batch is not None and done.batch.taken_for == other.run_id
        return True

    cancelled = lambda: _terminating(context)  # noqa: E731
    return company_finder(context, label, asset, JOBS_WITH.get(asset, ()), accepts, window, cancelled)


def _terminating(context: dg.AssetExecutionContext) -> bool:
    run = context.instance.get_run_by_id(context.run.run_id)
    return run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
