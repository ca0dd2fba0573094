"""GPU utilisation sampled during a run (machines/gpu_usage.py): parsing, the sampler thread, the summary in the run
record and the metadata; with the test double of nvidia-smi (tests/infra/nvidia.py) on this computer's PATH."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import pytest

from cosmos_assets.defs.assets.run_metadata import gpu_metadata
from cosmos_assets.machines import gpu_usage
from cosmos_assets.machines.gpu_usage import GpuSampler, parse_query
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_generation
from tests.infra.nvidia import write_fake_nvidia_smi
from tests.project_factory import make_project


def test_parse_keeps_readable_rows_only() -> None:
    rows = parse_query("37, 1200, 81559\n[N/A], [N/A], 81559\n100, 81559, 81559\ngarbage\n")
    assert [(r.utilization, r.memory_used_mib) for r in rows] == [(37.0, 1200.0), (100.0, 81559.0)]
    assert parse_query("") == [] and parse_query("120, 5, 10\n") == []  # 120 % is not a reading


def test_the_sampler_summarises_and_never_raises() -> None:
    answers = itertools.cycle(
        ["10, 1000, 80000\n30, 3000, 80000\n", "90, 5000, 80000\n50, 2000, 80000\n", None, "boom"]
    )
    seen = threading.Event()

    def read() -> str | None:
        answer = next(answers)
        if answer == "boom":
            seen.set()
            raise OSError("the link is busy")
        return answer

    with GpuSampler(read, interval=0.01) as sampler:
        assert seen.wait(10)
    usage = sampler.summary()
    assert usage.samples >= 2 and usage.failed_reads >= 2 and usage.gpus == 2
    assert usage.max_utilization == 90 and usage.peak_memory_mib == 5000 and usage.memory_total_mib == 80000
    assert 10 < usage.mean_utilization < 90
    meta = usage.metadata()
    assert meta["gpu_util_max_percent"] == 90 and meta["gpu_memory_peak_mib"] == 5000 and meta["gpu_util_samples"] >= 2


def test_nothing_read_is_said_as_such() -> None:
    with GpuSampler(lambda: None, interval=0.01) as sampler:
        pass
    usage = sampler.summary()
    assert usage.samples == 0 and usage.mean_utilization is None
    assert usage.metadata()["gpu_util"].startswith("(not sampled")


@pytest.fixture
def fake_smi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "gpu-bin"
    write_fake_nvidia_smi(bin_dir, 2)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_the_fake_nvidia_smi_answers_the_query_with_varying_numbers(fake_smi_on_path: Path, tmp_path: Path) -> None:
    read = LocalMachine(tmp_path / "root").gpu_reader()
    assert read is not None
    samples = [parse_query(read() or "") for _ in range(6)]
    assert all(len(rows) == 2 for rows in samples)
    assert all(r.memory_total_mib == 81559 and 0 <= r.memory_used_mib <= 81559 for rows in samples for r in rows)
    assert len({(r.utilization, r.memory_used_mib) for rows in samples for r in rows}) > 1


def test_a_local_run_records_gpu_usage_where_nvidia_smi_exists(
    fake_smi_on_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_usage, "INTERVAL_SECONDS", 0.1)
    monkeypatch.setenv("COSMOS_PREVIEW_STEP_SECONDS", "0.03")  # a run long enough for a few samples
    layout = make_project(tmp_path / "project")
    result = run_generation(layout, LocalMachine(tmp_path / "host"), backend_named("preview"), "tiny_prompt")
    usage = RunStore(layout.runs_dir).load(result.record.run_id).gpu_usage
    assert usage is not None and usage.samples >= 1 and usage.gpus == 2
    assert 0 <= usage.mean_utilization <= usage.max_utilization <= 100 and 0 < usage.peak_memory_mib <= 81559
    meta = gpu_metadata(result.record)
    assert meta["gpu_util_samples"] == usage.samples and meta["gpu_memory_total_mib"] == 81559
    assert read_history(layout.history_log)[-1].gpu_util_mean_percent == round(usage.mean_utilization, 1)


def test_without_nvidia_smi_nothing_is_sampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert LocalMachine(tmp_path / "root").gpu_reader() is None
