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
