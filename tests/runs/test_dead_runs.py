"""defs/sensors/dead_runs.py against a real (temporary) Dagster instance: a run whose worker is provably gone is failed and its
gpu_host pool slot freed; a live or unknown worker is left alone."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun, make_new_run_id

from cosmos_assets.defs.sensors.dead_runs import WORKER_TAG, free_dead_runs
from cosmos_assets.runs.worker import Worker


def _dead_worker() -> Worker:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me = Worker.current()
    return Worker(host=me.host, pid=child.pid, boot_id=me.boot_id, start="1")


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> DagsterRun:
    run = instance.add_run(
        DagsterRun(job_name="generate_job", run_id=make_new_run_id(), tags=tags, status=dg.DagsterRunStatus.STARTED)
    )
    return run


def test_a_run_with_a_dead_worker_is_failed_and_its_pool_slot_freed() -> None:
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        dead = _started_run(instance, {WORKER_TAG: _dead_worker().to_text()})
        alive = _started_run(instance, {WORKER_TAG: Worker.current().to_text()})
        unknown = _started_run(instance, {})
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("gpu_host")
        assert storage.claim_concurrency_slot("gpu_host", dead.run_id, "generated_videos").is_claimed
        said: list[str] = []
        assert free_dead_runs(instance, said.append) == [dead.run_id]
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "is gone" in failure.message and "pool slots freed" in failure.message
        assert storage.get_concurrency_info("gpu_host").claimed_slots == []
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
        assert instance.get_run_by_id(unknown.run_id).status == dg.DagsterRunStatus.STARTED
        assert said and dead.run_id in said[0]


def test_slots_still_held_by_a_finished_run_are_freed() -> None:
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        run = _started_run(instance, {})
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("gpu_host")
        assert storage.claim_concurrency_slot("gpu_host", run.run_id, "generated_videos").is_claimed
        instance.report_run_failed(run, "marked failed elsewhere")
        assert free_dead_runs(instance, print) == [run.run_id]
        assert storage.get_concurrency_info("gpu_host").claimed_slots == []
