"""What a run costs (issue 11): GPU seconds x price per GPU hour in the record and its history line; the summary
table per shot and per day is a pure function of the history lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cosmos_assets.cli import main
from cosmos_assets.machines.job import RunOutcome
from cosmos_assets.runs.cost import per_day, per_shot, summary_table
from cosmos_assets.runs.history import HistoryRecord, append_history
from cosmos_assets.settings import Settings
from tests.runs.test_record import _record

START = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _ran(record, seconds: float):
    record.ran(
        [],
        RunOutcome(exit_code=0, command=["torchrun"], started_at=START, finished_at=START + timedelta(seconds=seconds)),
    )
    record.state = "succeeded"
    return record


def test_a_priced_run_records_its_cost_and_an_unpriced_one_none(tmp_path: Path) -> None:
    record = _ran(_record(tmp_path / "a"), 1800)  # 2 GPUs for half an hour: 1 GPU hour
    assert record.cost is None and record.history().cost is None and record.model_load_seconds is None
    record.gpu_price_per_hour = 3.0
    assert record.gpu_seconds == 3600.0 and record.cost == pytest.approx(3.0)
    line = record.history()
    assert (line.gpu_seconds, line.cost, line.model_load_seconds) == (3600.0, 3.0, None)


def test_the_previews_cost_is_always_zero(tmp_path: Path) -> None:
    record = _ran(_record(tmp_path, model="preview"), 600)
    assert record.cost == 0.0
    record.gpu_price_per_hour = 3.0
    assert record.cost == 0.0 and record.history().cost == 0.0


def test_the_price_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSMOS_GPU_PRICE_PER_HOUR", "2.49")
    assert Settings.from_env().gpu_price_per_hour == 2.49
    monkeypatch.delenv("COSMOS_GPU_PRICE_PER_HOUR")
    assert Settings.from_env().gpu_price_per_hour is None


def _line(shot: str | None, day: int, gpu_seconds: float, cost: float | None, status: str = "success") -> HistoryRecord:
    return HistoryRecord(
        when=datetime(2026, 1, day, 9, tzinfo=UTC),
        run_id=f"r{day}{shot}",
        stage="generate",
        prompt="p",
        shot=shot,
        host="h",
        backend="cosmos-transfer1",
        command="x",
        status=status,  # type: ignore[arg-type]
        gpu_seconds=gpu_seconds,
        cost=cost,
    )


def test_totals_per_shot_and_per_day() -> None:
    lines = [
        _line("a", 1, 3600, 2.0),
        _line("a", 2, 7200, 4.0),
        _line("b", 2, 1800, 1.0),
        _line("b", 2, 0, 0.0, status="skipped"),
        _line("c", 3, 3600, None),
        _line(None, 3, 0, 0.0),
    ]
    shots = {r.key: (r.runs, r.gpu_hours, r.cost) for r in per_shot(lines)}
    assert shots == {"a": (2, 3.0, 6.0), "b": (1, 0.5, 1.0), "c": (1, 1.0, None), "(no shot)": (1, 0.0, 0.0)}
    days = {r.key: (r.runs, r.gpu_hours, r.cost) for r in per_day(lines)}
    assert days == {"2026-01-01": (1, 1.0, 2.0), "2026-01-02": (2, 2.5, 5.0), "2026-01-03": (2, 1.0, None)}
    table = summary_table(lines)
    assert "a                             2      3.000         6.00" in table
    assert "c                             1      1.000            -" in table
    assert table.splitlines()[-1].split() == ["all", "5", "4.500", "-"]


def test_history_summary_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(tmp_path))
    append_history(tmp_path / "notes" / "run_history.log", _line("a", 1, 3600, 2.0))
    assert main(["history"]) == 0
    assert "1.000 GPU h, cost 2.00" in capsys.readouterr().out
    assert main(["history", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "gpu_hours" in out and "2026-01-01" in out and out.splitlines()[-1].split() == ["all", "1", "1.000", "2.00"]
