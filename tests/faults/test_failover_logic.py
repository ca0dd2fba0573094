"""A left-behind run and a newer run that did its work elsewhere (pure logic over real records; the real failover,
two sshd in front of one engine, is tests/integration/test_host_pool.py): the left-behind run stops pinning its work
to its host, and when an attempt reaches that host again it is stopped and closed, never adopted."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cosmos_assets.defs.resources.placement import left_behind_hosts
from cosmos_assets.machines.base import JobState
from cosmos_assets.runs import record_index
from cosmos_assets.runs.adopt import find_adoption, superseded_by
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore
from tests.runs.test_record import _record


def _run(base: RunRecord, run_id: str, host: str, state: str, minutes: int, detached: bool = False) -> RunRecord:
    folder = base.remote_output_folder.rsplit("/", 1)[0] + f"/{run_id}"  # a record names its own run's folder
    return base.model_copy(
        update={
            "run_id": run_id,
            "host": host,
            "state": state,
            "detached": detached,
            "remote_output_folder": folder,
            "created_at": base.created_at + timedelta(minutes=minutes),
        }
    )


class LeftoverHost:
    """A machine that still holds the left-behind run's container: it says so, and records being asked to stop it."""

    label = "gpu-a"

    def __init__(self) -> None:
        self.stopped: list[str] = []

    def job_state(self, job: str, output_file: str) -> JobState:
        return "running"

    def stop(self, job: str, log: object) -> bool:
        self.stopped.append(job)
        return True


def test_a_left_behind_run_pins_its_host_only_until_a_newer_run_does_the_work(tmp_path: Path) -> None:
    base = _record(tmp_path / "r")
    store = RunStore(tmp_path / "runs")
    left = _run(base, "20260101_000000_1ef7be01", "gpu-a", "failed", 0, detached=True)
    store.save(left)
    assert left_behind_hosts(store.folder, "p1", "generate") == ["gpu-a"]
    store.save(_run(base, "20251231_000000_01de0001", "gpu-b", "succeeded", -5))  # older than the left-behind run
    assert left_behind_hosts(store.folder, "p1", "generate") == ["gpu-a"]
    store.save(_run(base, "20260101_000100_0e3e0001", "gpu-b", "succeeded", 1))
    assert left_behind_hosts(store.folder, "p1", "generate") == []
    assert superseded_by(store.all(), left).run_id == "20260101_000100_0e3e0001"  # type: ignore[union-attr]


def test_a_superseded_run_is_stopped_and_closed_when_its_host_is_reached_again(tmp_path: Path) -> None:
    base = _record(tmp_path / "r")
    store, history = RunStore(tmp_path / "runs"), tmp_path / "history.log"
    left = _run(base, "20260101_000000_1ef7be01", "gpu-a", "failed", 0, detached=True)
    store.save(left)
    probe = _run(base, "20260101_000200_9e0be001", "gpu-a", "planned", 2)
    host, lines = LeftoverHost(), []

    adopted = find_adoption(store, history, host, probe, lambda rid: rid, lambda job: "out.mp4", lines.append)  # type: ignore[arg-type]
    assert adopted is not None and adopted.record.run_id == left.run_id and host.stopped == []  # nothing newer: adopt

    store.save(_run(base, "20260101_000100_d0e00001", "gpu-b", "succeeded", 1))
    assert find_adoption(store, history, host, probe, lambda rid: rid, lambda job: "out.mp4", lines.append) is None  # type: ignore[arg-type]
    assert host.stopped == [left.run_id]
    closed = store.load(left.run_id)
    assert closed.state == "failed" and not closed.detached
    assert "superseded: run 20260101_000100_d0e00001 did this work on gpu-b and succeeded" in (closed.error or "")
    assert any("superseded" in line for line in lines)
    assert read_history(history)[-1].run_id == left.run_id


@pytest.mark.parametrize("by", ["index", "scan"])
def test_a_left_behind_reproduction_never_pins_the_prompts_work_to_its_host(
    tmp_path: Path, by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reproduction writes to outputs/_reproduced/ and is never adopted as the prompt's run (runs/adopt.py), so it is
    no reason to send the prompt's next attempt to its host either: by the index and by the full scan alike."""
    if by == "scan":

        def unavailable(self, use):
            raise record_index.IndexUnavailable("cannot be opened (test)")

        monkeypatch.setattr(record_index.RecordIndex, "use", unavailable)
    base = _record(tmp_path / "r")
    store = RunStore(tmp_path / "runs")
    again = _run(base, "20260101_000000_1ef7be01", "gpu-a", "failed", 0, detached=True)
    store.save(again.model_copy(update={"reproduces": "20251231_000000_0e3e0001"}))
    assert left_behind_hosts(store.folder, "p1", "generate") == []
    store.save(_run(base, "20260101_000100_0e3e0002", "gpu-b", "running", 1))  # the prompt's own: it counts
    assert left_behind_hosts(store.folder, "p1", "generate") == ["gpu-b"]
