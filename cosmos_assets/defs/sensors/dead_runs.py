"""A dead run frees what it held: runs whose worker process is provably gone are marked failed, their pool slots freed.

Dagster 1.13.27 does not notice a run worker that died (SIGKILL, power loss, OOM) under the default run launcher:
``DefaultRunLauncher`` does not support ``check_run_worker_health``, so run monitoring only times out runs stuck
STARTING or CANCELING; a STARTED run stays STARTED, keeps its ``gpu_host`` pool slot (claimed per step in the
``concurrency_slots`` table, freed only by the step itself, by the UI, or by the monitoring daemon once the run is
*finished*) and its place under the run queue's ``gpu_host`` tag limit. ``dagster asset materialize`` runs in the
CLI process, outside the daemon altogether. See docs/runs.md.

So every run that uses the GPU host records its worker (host, pid, boot id, process start) in the
``cosmos_assets/worker`` run tag when its resources are set up, before any step waits for the pool; and
:func:`free_dead_runs` (called right there, and by :func:`build_dead_run_sensor` in the daemon) marks any
in-progress run whose recorded worker is provably gone as failed through ``report_run_failed`` and frees its slots.
A run worker in a container (the team deployment's DockerRunLauncher, docs/team.md) is judged only where its pid
namespace can be seen (runs/worker.py); elsewhere Dagster's run monitoring asks the Docker engine.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
from dagster import DagsterRunStatus

from cosmos_assets.runs.worker import Worker

WORKER_TAG = "cosmos_assets/worker"
# The run that wrote WORKER_TAG: a retry or re-execution copies its parent's tags, dead worker included, and must not
# be judged by it before its own worker has recorded itself.
WORKER_RUN_TAG = "cosmos_assets/worker_run"
_WATCHED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
_FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def record_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    """Tag the run with the process executing it (this one)."""
    instance.add_run_tags(run_id, {WORKER_TAG: Worker.current().to_text(), WORKER_RUN_TAG: run_id})


def _message(run: dg.DagsterRun, worker: Worker) -> str:
    return (
        f"run {run.run_id} ({run.job_name}): its worker ({worker}) is gone (killed, crashed, or the machine "
        f"restarted) while the run was {run.status.value}; marked failed by cosmos-assets and its pool slots freed. "
        "A container it started on a GPU host keeps running and is adopted by the next attempt of the same prompt."
    )


def free_dead_runs(
    instance: dg.DagsterInstance, log: Callable[[str], None], skip_run_id: str | None = None
) -> list[str]:
    """Mark in-progress runs whose worker is provably gone as failed and free their slots; the run ids."""
    freed: list[str] = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=_WATCHED), limit=1000):
        run = record.dagster_run
        worker = Worker.from_text(run.tags.get(WORKER_TAG, ""))
        inherited = run.tags.get(WORKER_RUN_TAG, run.run_id) != run.run_id  # a retry still showing its parent's worker
        if run.run_id == skip_run_id or worker is None or inherited or not worker.provably_dead():
            continue
        message = _message(run, worker)
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
        _free_slots(instance, run.run_id)
        log(message)
        freed.append(run.run_id)
    freed += _free_slots_of_finished_runs(instance, log)
    return freed


def _free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def _free_slots_of_finished_runs(instance: dg.DagsterInstance, log: Callable[[str], None]) -> list[str]:
    """Slots still held by runs that are already finished (a worker killed after the run was marked ended)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders: set[str] = set()
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        holders.update(slot.run_id for slot in info.claimed_slots)
        holders.update(step.run_id for step in info.pending_steps)
    freed = []
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in _FINISHED:
            storage.free_concurrency_slots_for_run(run_id)
            log(f"freed the pool slots still held by finished run {run_id}")
            freed.append(run_id)
    return freed


def before_gpu_steps(context: dg.InitResourceContext) -> None:
    """At resource setup (before any step of this run waits for a pool): record our worker, clear dead runs."""
    instance, run = context.instance, context.run
    if instance is None or run is None:
        return
    run_id = run.run_id
    record_worker(instance, run_id)
    free_dead_runs(instance, context.log.warning if context.log else print, skip_run_id=run_id)


def build_dead_run_sensor(interval_seconds: int = 60) -> dg.SensorDefinition:
    """The same check in the daemon: frees the queue and pool for UI- and daemon-launched runs too."""

    @dg.sensor(
        name="dead_run_sensor",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Marks runs whose worker process is provably gone (killed, crashed, machine restarted) as failed "
        "and frees their gpu_host pool slots and queue place. Starts nothing.",
    )
    def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        freed = free_dead_runs(context.instance, context.log.warning)
        return dg.SkipReason(f"freed {len(freed)} dead run(s): {', '.join(freed)}" if freed else "no dead runs")

    return dead_run_sensor
