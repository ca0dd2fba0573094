"""Issue 17: a run's upload and download seconds count every attempt, not only the last one. A download cut by a lost
link and finished by the attempt that adopts the run, and a reconnect inside one download, both add up in the record
and the history line. The clock is stepped by hand (stage._clock); the preview program really runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmos_assets.machines.job import InferenceJob, LogLine, StagedFile
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.machines.ssh_link import HostLinkLostError
from cosmos_assets.models.registry import backend_named
from cosmos_assets.progress import TransferStats
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs import stage
from cosmos_assets.runs.batch import run_generations
from cosmos_assets.runs.batch_members import BatchOptions
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_generation
from tests.project_factory import make_project

PREVIEW = backend_named("preview")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _FlakyLinkMachine(LocalMachine):
    """This computer, with the time each transfer takes set by the test: ``downloads`` holds, per download call, its
    seconds and whether the link stays down (HostLinkLostError, as SshHost raises past its reconnect budget). Like an
    SSH host, it says a left-behind run's outputs are still there, so the next attempt adopts them."""

    def __init__(self, root: Path, clock: _Clock, upload_seconds: float, downloads: list[tuple[float, bool]]) -> None:
        super().__init__(root, label="flaky@local")
        self.clock, self.upload_seconds, self.downloads = clock, upload_seconds, downloads

    def job_state(self, job: InferenceJob, output_file: str) -> str:
        return "outputs" if (self.root / output_file).is_file() else "gone"

    def upload(self, files: list[StagedFile], log: LogLine) -> TransferStats:
        stats = super().upload(files, log)
        self.clock.now += self.upload_seconds
        return stats

    def download(self, remote_dir: str, local_dir: Path, log: LogLine) -> TransferStats:
        seconds, link_stays_down = self.downloads.pop(0)
        self.clock.now += seconds
        if link_stays_down:
            raise HostLinkLostError(f"download: the SSH link to {self.label} stayed down after 6 reconnects (test)")
        stats = super().download(remote_dir, local_dir, log)
        # SshHost.with_reconnect hands back the stats of the last try only: here 1 s of this call's seconds.
        return stats.model_copy(update={"seconds": 1.0})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(stage, "_clock", clock)
    return clock


def test_a_download_cut_by_the_link_and_finished_by_the_adopting_attempt_counts_both(
    tmp_path: Path, clock: _Clock
) -> None:
    layout = make_project(tmp_path / "project")
    machine = _FlakyLinkMachine(tmp_path / "host", clock, upload_seconds=2.0, downloads=[(7.0, True), (5.0, False)])
    with pytest.raises(HostLinkLostError):
        run_generation(layout, machine, PREVIEW, "tiny_prompt", log=lambda line: None)
    lines: list[str] = []
    done = run_generation(layout, machine, PREVIEW, "tiny_prompt", log=lines.append)  # adopts: downloads, runs nothing
    assert any("adopting earlier run" in line for line in lines)
    (record,) = RunStore(layout.runs_dir).all()
    assert record.run_id == done.record.run_id and record.state == "succeeded"
    assert (record.upload_attempts, record.download_attempts) == ([2.0], [7.0, 5.0])
    assert (record.upload.seconds, record.download.seconds) == (2.0, 12.0)
    failed, succeeded = read_history(layout.history_log)
    assert (failed.status, failed.cause, failed.upload_seconds, failed.download_seconds) == (
        "failed",
        "link_lost",
        2.0,
        7.0,
    )
    assert (succeeded.status, succeeded.upload_seconds, succeeded.download_seconds) == ("success", 2.0, 12.0)


def test_a_reconnect_inside_one_download_counts_the_whole_download(tmp_path: Path, clock: _Clock) -> None:
    layout = make_project(tmp_path / "project")
    machine = _FlakyLinkMachine(tmp_path / "host", clock, upload_seconds=0.5, downloads=[(4.0, False)])
    result = run_generation(layout, machine, PREVIEW, "tiny_prompt", log=lambda line: None)
    assert result.record.download.seconds == 4.0 and result.record.download_attempts == [4.0]  # not the last try's 1 s
    assert read_history(layout.history_log)[-1].download_seconds == 4.0


def test_each_prompt_of_a_shared_invocation_counts_its_transfers(tmp_path: Path, clock: _Clock) -> None:
    layout = make_project(tmp_path / "project")
    write_spec(new_prompt_spec("tiny_shot", "a wet street at night"), layout.prompt_file("second_prompt"))
    machine = _FlakyLinkMachine(tmp_path / "host", clock, upload_seconds=3.0, downloads=[(6.0, False)])
    outcomes = run_generations(
        layout,
        ["tiny_prompt", "second_prompt"],
        lambda prompt: PREVIEW,
        lambda backend: machine,
        BatchOptions(log=lambda line: None),
    )
    assert all(o.error is None for o in outcomes.values())
    for line in read_history(layout.history_log):
        assert line.batch_id is not None and (line.upload_seconds, line.download_seconds) == (3.0, 6.0)
