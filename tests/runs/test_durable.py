"""Issue 10 without Dagster: worker liveness, adoption, the stall watchdog, causes, and a run log that cannot be
written. The real preview program runs as a local process (LocalMachine); no sleeps are asserted on."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.machines.ssh_link import HostLinkLostError, HostUnreachableError
from cosmos_assets.media import probe_video
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.spec import load_spec
from cosmos_assets.runs import run_log, runner, stage
from cosmos_assets.runs.adopt import earlier_attempt, refuse_if_still_followed
from cosmos_assets.runs.causes import failure_cause, left_on_host, retryable
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import InferenceFailed, run_generation
from cosmos_assets.runs.worker import Worker
from tests.project_factory import TINY, make_project

PREVIEW = backend_named("preview")


@pytest.fixture
def project(tmp_path: Path) -> tuple:
    layout = make_project(tmp_path / "project")
    return layout, LocalMachine(tmp_path / "host" / "cosmos-transfer1", label="preview@local")


# --------------------------------------------------------------------------- worker liveness


def test_a_worker_is_dead_only_when_provably_gone() -> None:
    me = Worker.current()
    assert Worker.from_text(me.to_text()) == me and not me.provably_dead()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = Worker(host=me.host, pid=child.pid, boot_id=me.boot_id, start="1")
    assert gone.provably_dead()
    assert not Worker(host="another-machine", pid=child.pid, boot_id="x", start="1").provably_dead()
    if me.start:  # Linux: a pid now used by another process is not our worker
        assert Worker(host=me.host, pid=me.pid, boot_id=me.boot_id, start=str(int(me.start) + 1)).provably_dead()
    if me.boot_id:  # the machine restarted since (power loss)
        assert Worker(host=me.host, pid=me.pid, boot_id="another-boot", start=me.start).provably_dead()
    assert Worker.from_text("garbage") is None


# --------------------------------------------------------------------------- causes


def test_causes_say_what_is_retried_and_what_is_left_on_the_host(tmp_path: Path) -> None:
    assert failure_cause(HostLinkLostError("x")) == "link_lost" and retryable("link_lost")
    assert failure_cause(HostUnreachableError("x")) == "host_unreachable" and retryable("host_unreachable")
    assert failure_cause(HostNotReadyError("no GPUs")) == "host_not_ready" and not retryable("host_not_ready")
    assert failure_cause(InferenceFailed("m", [], True, tmp_path)) == "guardrail_blocked"
    assert failure_cause(InferenceFailed("m", [], False, tmp_path)) == "model_exit" and not retryable("model_exit")
    assert failure_cause(OSError(errno.ENOSPC, "No space left on device")) == "local_io"
    assert failure_cause(KeyboardInterrupt()) == "cancelled"
    assert left_on_host("link_lost", "running") and left_on_host("local_io", "downloading")
    assert not left_on_host("cancelled", "running") and not left_on_host("model_exit", "running")


# --------------------------------------------------------------------------- a local failure never kills the GPU job


class _FullDisk:
    """A run log whose disk fills after a few lines."""

    def __init__(self, path: Path, *args: object, **kwargs: object) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += 1
        if self.lines > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(text)

    def close(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_run_log_that_cannot_be_written_does_not_stop_the_model(project, monkeypatch: pytest.MonkeyPatch) -> None:
    layout, host = project
    monkeypatch.setattr(run_log, "open", _FullDisk, raising=False)
    seen: list[str] = []
    result = run_generation(layout, host, PREVIEW, "tiny_prompt", log=seen.append)
    assert probe_video(result.video).frames == TINY["frames"]
    assert result.record.state == "succeeded"
    assert any("cannot write the local run log" in line and "No space left" in line for line in seen)
    assert any("step 35/" in line for line in seen)  # every line still reached the other sink


def test_a_failing_dagster_log_does_not_stop_the_model(project) -> None:
    layout, host = project

    def broken(line: str) -> None:
        raise RuntimeError("database or disk is full")

    result = run_generation(layout, host, PREVIEW, "tiny_prompt", log=broken)
    assert result.record.state == "succeeded" and "step 35/" in (result.output_dir / "run.log").read_text()


# --------------------------------------------------------------------------- the stall watchdog


def test_a_silent_model_is_stopped_and_fails_as_stalled(project, monkeypatch: pytest.MonkeyPatch) -> None:
    layout, host = project
    monkeypatch.setenv("COSMOS_PREVIEW_STEP_SECONDS", "600")  # the preview goes quiet after its first lines
    with pytest.raises(InferenceFailed) as caught:
        run_generation(layout, host, PREVIEW, "tiny_prompt", silence_minutes=0.03)
    assert caught.value.cause == "stalled" and "stalled" in str(caught.value)
    assert "COSMOS_MODEL_SILENCE_MINUTES" in str(caught.value) and "preview@local" in str(caught.value)
    (record,) = RunStore(layout.runs_dir).all()
    assert (record.state, record.cause, record.detached) == ("failed", "stalled", False)
    assert read_history(layout.history_log)[-1].cause == "stalled"
    assert host._processes == {}  # the process was killed and reaped
    assert "treating it as hung" in caught.value.log_path.read_text()


# --------------------------------------------------------------------------- adoption


def test_an_orphaned_record_of_the_same_work_is_found_and_a_live_one_is_refused(project) -> None:
    layout, host = project
    first = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="aaaaaaaa")
    store = RunStore(layout.runs_dir)
    orphan = store.load(first.record.run_id)
    orphan.state = "running"  # as left by a process killed mid-run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan.worker = Worker(
        host=Worker.current().host, pid=dead.pid, boot_id=Worker.current().boot_id, start="1"
    ).to_text()
    store.save(orphan)

    probe = runner.planned_record(
        layout, host, PREVIEW, runner.plan_generation(layout, PREVIEW, "tiny_prompt", run_id="20990101_000000_bbbbbbbb")
    )
    assert probe.inputs_digest() == orphan.inputs_digest()  # the run id is not part of the work
    assert earlier_attempt(store, probe).run_id == orphan.run_id
    refuse_if_still_followed(orphan)  # its worker is dead: adoptable

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        orphan.worker = Worker(
            host=Worker.current().host,
            pid=alive.pid,
            boot_id=Worker.current().boot_id,
            start=Path(f"/proc/{alive.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
            if Path("/proc").is_dir()
            else "",
        ).to_text()
        with pytest.raises(HostNotReadyError, match=r"still in progress.*terminate Dagster run aaaaaaaa"):
            refuse_if_still_followed(orphan)
    finally:
        alive.kill()
        alive.wait()

    spec = load_spec(layout.prompt_file("tiny_prompt"))
    from cosmos_assets.prompts.files import write_spec

    write_spec(spec.model_copy(update={"prompt": "another street"}), layout.prompt_file("tiny_prompt"))
    changed = runner.planned_record(
        layout, host, PREVIEW, runner.plan_generation(layout, PREVIEW, "tiny_prompt", run_id="20990101_000001_cccccccc")
    )
    assert earlier_attempt(store, changed) is None  # other inputs: never adopted


def test_a_left_behind_run_with_nothing_left_is_closed_and_a_new_one_started(project) -> None:
    """On this computer nothing outlives the process (job_state "gone"): the orphan is closed, a new run made."""
    layout, host = project
    first = run_generation(layout, host, PREVIEW, "tiny_prompt")
    store = RunStore(layout.runs_dir)
    orphan = store.load(first.record.run_id)
    orphan.state, orphan.worker = "running", None
    store.save(orphan)
    lines: list[str] = []
    second = run_generation(layout, host, PREVIEW, "tiny_prompt", log=lines.append)
    assert second.record.run_id != orphan.run_id and second.record.state == "succeeded"
    closed = store.load(orphan.run_id)
    assert (closed.state, closed.cause) == ("failed", "orchestrator_died") and "abandoned" in (closed.error or "")
    assert any("cannot be adopted" in line for line in lines)
    assert second.previous_moved_to is not None and (second.previous_moved_to / "output.mp4").exists()
    assert os.path.exists(layout.output_dir("tiny_prompt") / "output.mp4")


def test_without_procfs_only_a_missing_pid_counts_as_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    from cosmos_assets.runs import worker as worker_module

    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if str(self) == "/proc/self/stat" else real_exists(self))
    me = Worker.current()
    assert me.start == "" and not me.provably_dead()
    assert not Worker(host=me.host, pid=me.pid, boot_id=me.boot_id, start="12345").provably_dead()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert Worker(host=me.host, pid=child.pid, boot_id=me.boot_id, start="").provably_dead()
    assert worker_module._start_ticks(me.pid) == ""


def test_a_download_cut_by_a_lost_link_stays_for_the_adopting_attempt_the_rest_goes_to_failed(project) -> None:
    """What a download kept after a lost link stays in the run's staging folder, which the attempt that adopts the
    run (same run id) downloads into again: its download resumes instead of starting from zero."""
    from cosmos_assets.machines.transfer_resume import partial_folders
    from cosmos_assets.runs.record import RunRecord

    layout, host = project
    plan = runner.plan_generation(layout, PREVIEW, "tiny_prompt", run_id="20990101_000000_dddddddd")
    record = runner.planned_record(layout, host, PREVIEW, plan)
    staging = plan.effective_spec.parent
    done, parts = partial_folders(staging / "fetched", f"outputs/tiny_prompt/{record.run_id}")
    (done / "prompt.txt").parent.mkdir(parents=True)
    (done / "prompt.txt").write_text("arrived whole")
    parts.mkdir()
    (parts / "output.mp4.part").write_bytes(b"x" * 1000)
    (staging / "run.log").write_text("the model's lines\n")
    assert isinstance(record, RunRecord)

    stage.keep_failed(layout, record, staging, plan)

    failed = runner.failed_dir(layout, record)
    assert (failed / "run.log").read_text() == "the model's lines\n" and (failed / "spec.json").exists()
    assert (done / "prompt.txt").read_text() == "arrived whole"
    assert (parts / "output.mp4.part").stat().st_size == 1000
    assert sorted(p.name for p in staging.iterdir()) == sorted([done.name, parts.name])
