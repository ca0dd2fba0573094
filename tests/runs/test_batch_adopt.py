"""An orphaned batch is adopted as a batch (issue 19, item 3), on the preview backend in a local process whose machine
keeps its "containers" (finished invocations) the way a docker host keeps a detached one: the orchestrator dies after
the invocation started (its records stay `running`), and the next attempt of the range, or of one prompt, collects
that invocation for every prompt: one start in all. The real thing (SIGKILL, sshd, dockerd) is
tests/integration/test_batch_adoption_on_host.py."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cosmos_assets.machines.base import JobState
from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, LogLine, RunOutcome
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs import batch_run as batch_module
from cosmos_assets.runs.batch import run_generations
from cosmos_assets.runs.batch_adopt import batch_members, collecting
from cosmos_assets.runs.batch_members import BatchOptions
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_generation
from cosmos_assets.runs.spec_used import SpecUsed
from cosmos_assets.runs.worker import Worker
from tests.project_factory import make_project

PREVIEW = backend_named("preview")
SHOT = "tiny_shot"
TEXTS = {"p_one": "a quiet street at dusk", "p_two": "a dry street at noon", "p_three": "a wet street at night"}


class OrchestratorDied(BaseException):
    """The process running the batch is gone (a SIGKILL, as far as the records can tell)."""


class DetachedHost(LocalMachine):
    """A local machine whose invocations outlive the caller: each started one is kept, and the next attempt of the
    same run id attaches to it (its outcome) instead of starting another. ``die_after_start``: the caller dies right
    after starting a batch."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, label="preview@local")
        self.containers: dict[str, RunOutcome] = {}
        self.starts: list[str] = []
        self.attaches: list[str] = []
        self.die_after_start = False
        self.attach_gate: threading.Event | None = None

    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        if job.run_id in self.containers:
            self.attaches.append(job.run_id)
            if self.attach_gate is not None:
                assert self.attach_gate.wait(30)
            return self.containers[job.run_id]
        self.starts.append(job.run_id)
        outcome = self.containers[job.run_id] = super().run(job, log)
        if self.die_after_start and "_batch" in job.run_id:
            raise OrchestratorDied()
        return outcome

    def job_state(self, job: InferenceJob, output_file: str) -> JobState:
        outcome = self.containers.get(job.run_id)
        if outcome is None:
            return "gone"
        return "exited_ok" if outcome.exit_code == 0 else "failed"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    layout = make_project(tmp_path / "project", shot=SHOT)
    for prompt, text in TEXTS.items():
        write_spec(new_prompt_spec(SHOT, text), layout.prompt_file(prompt))
    machine = DetachedHost(tmp_path / "host" / "cosmos-transfer1")
    return layout, machine


def options(**fields) -> BatchOptions:
    return BatchOptions(dagster_run_id="abcdef12", log=lambda line: None, **fields)


def orphan_a_batch(layout, machine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the three prompts as one batch whose orchestrator dies once the invocation started: nothing records the
    death (a killed process writes nothing), so every record stays `running`. Its members' run ids."""
    machine.die_after_start = True
    with monkeypatch.context() as patch:
        patch.setattr(batch_module, "_fail", lambda *args, **kwargs: None)  # a dead process records nothing
        with pytest.raises(OrchestratorDied):
            run_generations(layout, list(TEXTS), lambda prompt: PREVIEW, lambda backend: machine, options())
    machine.die_after_start = False
    records = RunStore(layout.runs_dir).all()
    assert [(r.prompt, r.state) for r in records] == [(p, "running") for p in TEXTS]
    assert machine.starts == [records[0].batch.batch_id] and not any(layout.output_dir(p).exists() for p in TEXTS)
    return [r.run_id for r in records]


def each_prompt_has_the_batchs_video(layout, run_ids: list[str]) -> None:
    for prompt, run_id in zip(TEXTS, run_ids):
        used = SpecUsed.read(layout.output_dir(prompt) / "spec_used.json")
        assert used.run_id == run_id and used.batch is not None  # the orphaned invocation's, not a new run
        assert (layout.output_dir(prompt) / "prompt.txt").read_text() == TEXTS[prompt]
    records = {r.run_id: r for r in RunStore(layout.runs_dir).all()}
    assert [records[rid].state for rid in run_ids] == ["succeeded"] * 3 and len(records) == 3


def test_the_range_typed_again_collects_the_orphaned_batch_once_for_every_prompt(project, monkeypatch) -> None:
    layout, machine = project
    run_ids = orphan_a_batch(layout, machine, monkeypatch)
    outcomes = run_generations(layout, list(TEXTS), lambda prompt: PREVIEW, lambda backend: machine, options())
    assert [o.error for o in outcomes.values()] == [None] * 3
    batch_id = RunStore(layout.runs_dir).load(run_ids[0]).batch.batch_id
    assert machine.starts == [batch_id] and machine.attaches == [batch_id]  # one start in all, one collection
    each_prompt_has_the_batchs_video(layout, run_ids)
    assert [o.result.record.run_id for o in outcomes.values()] == run_ids
    assert RunStore(layout.runs_dir).load(run_ids[1]).adopted_by == ["abcdef12"]
    assert [(h.prompt, h.status) for h in read_history(layout.history_log)] == [
        ("p_one", "success"),
        ("p_two", "success"),
        ("p_three", "success"),
        ("p_two", "skipped"),
        ("p_three", "skipped"),
    ]


def test_one_prompt_retried_alone_takes_its_video_from_the_orphaned_batch_and_settles_the_others(
    project, monkeypatch
) -> None:
    layout, machine = project
    run_ids = orphan_a_batch(layout, machine, monkeypatch)
    result = run_generation(layout, machine, PREVIEW, "p_two", dagster_run_id="99999999", log=lambda line: None)
    assert result.record.run_id == run_ids[1] and result.skipped is None
    assert len(machine.starts) == 1 and len(machine.attaches) == 1
    each_prompt_has_the_batchs_video(layout, run_ids)
    again = run_generation(layout, machine, PREVIEW, "p_three", log=lambda line: None)  # its video is there: skipped
    assert again.skipped is not None and again.record.run_id == run_ids[2] and len(machine.starts) == 1


def test_two_prompts_of_the_batch_retried_in_parallel_collect_it_once(project, monkeypatch) -> None:
    layout, machine = project
    run_ids = orphan_a_batch(layout, machine, monkeypatch)
    machine.attach_gate = threading.Event()
    results: dict[str, object] = {}

    def retry(prompt: str) -> None:
        try:
            results[prompt] = run_generation(layout, machine, PREVIEW, prompt, log=lambda line: None)
        except BaseException as error:  # noqa: BLE001 - the assertion below names it
            results[prompt] = error

    first = threading.Thread(target=retry, args=("p_one",))
    first.start()
    for _ in range(300):  # the first retry is collecting (attached, held at the gate) before the second asks
        if machine.attaches:
            break
        threading.Event().wait(0.05)
    second = threading.Thread(target=retry, args=("p_three",))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting for the collector's lock, not collecting a second time
    machine.attach_gate.set()
    first.join(30)
    second.join(30)
    assert results["p_one"].record.run_id == run_ids[0]
    assert results["p_three"].record.run_id == run_ids[2] and results["p_three"].skipped is not None
    assert len(machine.starts) == 1 and len(machine.attaches) == 1
    each_prompt_has_the_batchs_video(layout, run_ids)


def test_nothing_left_on_the_host_closes_the_records_and_the_prompt_runs_anew(project, monkeypatch) -> None:
    layout, machine = project
    run_ids = orphan_a_batch(layout, machine, monkeypatch)
    machine.containers.clear()  # the host was wiped
    result = run_generation(layout, machine, PREVIEW, "p_one", log=lambda line: None)
    assert result.record.run_id not in run_ids and len(machine.starts) == 2
    closed = {r.run_id: r for r in RunStore(layout.runs_dir).all()}
    assert all(closed[rid].state == "failed" and "nothing of its invocation" in closed[rid].error for rid in run_ids)


def test_the_members_are_found_through_the_index_by_their_requests_base(project, monkeypatch) -> None:
    layout, machine = project
    run_ids = orphan_a_batch(layout, machine, monkeypatch)
    store = RunStore(layout.runs_dir)
    assert [r.run_id for r in batch_members(store, store.load(run_ids[2]))] == run_ids
    assert store.load(run_ids[0]).batch.batch_size == 1


def test_a_batch_whose_orchestrator_still_lives_refuses_the_attempt_on_record(project, monkeypatch) -> None:
    layout, machine = project
    run_ids = orphan_a_batch(layout, machine, monkeypatch)
    store = RunStore(layout.runs_dir)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = Path(f"/proc/{alive.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        for run_id in run_ids:  # the batch is another process's, in progress
            record = store.load(run_id)
            record.worker = Worker(
                host=Worker.current().host, pid=alive.pid, boot_id=Worker.current().boot_id, start=start
            ).to_text()
            store.save(record)
        with pytest.raises(HostNotReadyError, match=r"still in progress.*terminate Dagster run abcdef12"):
            run_generation(layout, machine, PREVIEW, "p_two", log=lambda line: None)
    finally:
        alive.kill()
        alive.wait()
    assert machine.attaches == [] and len(machine.starts) == 1
    refused = [r for r in RunStore(layout.runs_dir).all() if r.run_id not in run_ids]
    assert [(r.prompt, r.state) for r in refused] == [("p_two", "failed")]  # the refused attempt, on record
    assert [RunStore(layout.runs_dir).load(rid).state for rid in run_ids] == ["running"] * 3  # untouched


def test_an_item_whose_work_a_newer_run_did_is_collected_but_never_promoted_over_it(project, monkeypatch) -> None:
    layout, machine = project
    run_ids = orphan_a_batch(layout, machine, monkeypatch)
    newer = run_generation(
        layout, LocalMachine(machine.root, label="elsewhere"), PREVIEW, "p_three", log=lambda line: None
    )  # a pool failed it over to another host meanwhile
    newer_outputs = sorted(p.name for p in layout.output_dir("p_three").iterdir())
    run_generation(layout, machine, PREVIEW, "p_one", log=lambda line: None)
    assert len(machine.starts) == 1 and len(machine.attaches) == 1
    assert SpecUsed.read(layout.output_dir("p_three") / "spec_used.json").run_id == newer.record.run_id  # kept
    assert sorted(p.name for p in layout.output_dir("p_three").iterdir()) == newer_outputs
    closed = RunStore(layout.runs_dir).load(run_ids[2])
    assert closed.state == "failed" and f"superseded: run {newer.record.run_id}" in closed.error
    assert SpecUsed.read(layout.output_dir("p_two") / "spec_used.json").run_id == run_ids[1]


def test_a_prompt_changed_since_the_batch_started_is_not_adopted_and_runs_anew(project, monkeypatch) -> None:
    layout, machine = project
    run_ids = orphan_a_batch(layout, machine, monkeypatch)
    write_spec(new_prompt_spec(SHOT, "a dry street at noon, in the rain"), layout.prompt_file("p_two"))
    result = run_generation(layout, machine, PREVIEW, "p_one", log=lambda line: None)
    assert result.record.run_id not in run_ids and machine.attaches == []  # the invocation cannot be rebuilt as it ran
    closed = RunStore(layout.runs_dir).load(run_ids[0])
    assert closed.state == "failed" and "the inputs of p_two changed since it started" in closed.error


def test_the_collect_lock_names_its_holder_once_and_is_taken_when_it_is_released(tmp_path: Path) -> None:
    lines: list[str] = []
    polls: list[int] = []
    with collecting(tmp_path / "batch", lines.append, "B"):
        holder = (tmp_path / "batch" / "collect.lock").read_text()
        assert holder.strip() == Worker.current().to_text()
        inner: list[str] = []

        def poll() -> None:  # the second collector waits; the first one lets go on its third look
            polls.append(1)
            if len(polls) == 3:
                raise StopWaiting()

        with pytest.raises(StopWaiting):
            with collecting(tmp_path / "batch", inner.append, "B", poll):
                pass
    assert (
        inner
        == [
            f"[cosmos-assets] the orphaned invocation B is being collected by {holder.strip()}: waiting for "
            "it, then taking this prompt's video from it"
        ]
        and len(polls) == 3
    )
    with collecting(tmp_path / "batch", lines.append, "B", lambda: pytest.fail("the lock was free")):
        pass  # released when its holder's block ended (or its process died: the kernel drops a flock with the fd)
    assert lines == []


class StopWaiting(Exception):
    pass
