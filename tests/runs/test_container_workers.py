"""Run workers in containers (the team deployment, docs/team.md): their worker identity, who may judge it, and a
retried run that still carries its parent's worker tag. The real containers: tests/integration/test_team_deployment.py."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun, make_new_run_id

from cosmos_assets.defs.sensors.dead_runs import WORKER_RUN_TAG, WORKER_TAG, free_dead_runs
from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.runs import worker as worker_module
from cosmos_assets.runs.adopt import refuse_if_still_followed
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.worker import Worker


def _gone_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_worker_text_keeps_the_pid_namespace_and_reads_the_old_form() -> None:
    me = Worker.current()
    assert me.pid_namespace.isdigit()
    assert Worker.from_text(me.to_text()) == me and me.to_text().count("|") == 4
    old = Worker.from_text(f"{me.host}|{me.pid}|{me.boot_id}|{me.start}")  # records written before it was kept
    assert old is not None and old.pid_namespace == "" and not old.provably_dead()
    assert Worker.from_text("a|b|c|d|e") is None


def test_a_worker_in_another_pid_namespace_is_never_judged_by_its_pid_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    me = Worker.current()
    # Same host name (a container on the host's network), a pid that is gone here, but another namespace.
    container = Worker(host=me.host, pid=_gone_pid(), boot_id=me.boot_id, start="1", pid_namespace="4026599999")
    monkeypatch.setattr(worker_module, "_alive_in_namespace", lambda namespace, pid, start: None)  # cannot see it
    assert not container.provably_dead()
    monkeypatch.setattr(worker_module, "_alive_in_namespace", lambda namespace, pid, start: True)
    assert not container.provably_dead()
    monkeypatch.setattr(worker_module, "_alive_in_namespace", lambda namespace, pid, start: False)
    assert container.provably_dead()
    rebooted = Worker(host=me.host, pid=1, boot_id="another-boot", start="1", pid_namespace="4026599999")
    assert rebooted.provably_dead()  # a restart ends every namespace


def test_from_a_nested_namespace_nothing_outside_is_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "_pid_namespace", lambda: "4026500001")  # as a process inside a container
    assert worker_module._alive_in_namespace("4026599999", 1, "1") is None


def test_a_namespace_with_no_such_process_is_gone_when_we_see_every_process() -> None:
    if worker_module._pid_namespace() != worker_module._HOST_PID_NAMESPACE:
        pytest.skip("this test process is not in the host's pid namespace")
    assert worker_module._alive_in_namespace("4026599999", 1, "1") is False  # no process lives in that namespace


def test_a_retry_carrying_its_parents_dead_worker_is_not_failed_before_its_own_worker_records() -> None:
    me = Worker.current()
    dead = Worker(host=me.host, pid=_gone_pid(), boot_id=me.boot_id, start="1", pid_namespace=me.pid_namespace)
    with dg.instance_for_test() as instance:
        parent_id = make_new_run_id()
        retry = instance.add_run(
            DagsterRun(
                job_name="generate_job",
                run_id=make_new_run_id(),
                tags={WORKER_TAG: dead.to_text(), WORKER_RUN_TAG: parent_id},
                status=dg.DagsterRunStatus.STARTING,
            )
        )
        own = instance.add_run(
            DagsterRun(job_name="generate_job", run_id=make_new_run_id(), status=dg.DagsterRunStatus.STARTED)
        )
        instance.add_run_tags(own.run_id, {WORKER_TAG: dead.to_text(), WORKER_RUN_TAG: own.run_id})
        assert free_dead_runs(instance, print) == [own.run_id]
        assert instance.get_run_by_id(retry.run_id).status == dg.DagsterRunStatus.STARTING


def test_a_record_of_an_ended_dagster_run_is_adopted_whoever_its_worker_was() -> None:
    me = Worker.current()
    elsewhere = Worker(host="another-machine", pid=7, boot_id="b", start="1", pid_namespace="1").to_text()
    record = RunRecord.model_construct(
        run_id="r1",
        state="running",
        worker=elsewhere,
        dagster_run_id="d1",
        stage="generate",
        prompt="p",
        host="ssh@gpu1",
    )
    with pytest.raises(HostNotReadyError, match="still in progress"):
        refuse_if_still_followed(record)  # another machine: cannot be judged, so refused
    with pytest.raises(HostNotReadyError):
        refuse_if_still_followed(record, lambda run_id: False)  # its Dagster run goes on
    refuse_if_still_followed(record, lambda run_id: run_id == "d1")  # its Dagster run ended: nobody follows it
    assert me.host != "another-machine"
