"""What runs cost: totals of GPU hours and cost per shot and per day, from the history lines. Plain Python.

A skipped line holds no GPU time; a line without a cost (no COSMOS_GPU_PRICE_PER_HOUR when it ran) that used GPU
time makes its group's cost unknown (shown as ``-``) rather than too low.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cosmos_assets.runs.history import HistoryRecord


@dataclass(frozen=True)
class CostRow:
    """One group's totals: runs that held the GPU host, GPU hours, and cost (None: some GPU time was unpriced)."""

    key: str
    runs: int
    gpu_hours: float
    cost: float | None


def _totals(lines: Iterable[HistoryRecord], key: Callable[[HistoryRecord], str]) -> list[CostRow]:
    groups: dict[str, list[HistoryRecord]] = {}
    for line in lines:
        groups.setdefault(key(line), []).append(line)
    rows = []
    for name in sorted(groups):
        members = [m for m in groups[name] if m.status != "skipped"]
        unpriced = any(m.cost is None and m.gpu_seconds > 0 for m in members)
        rows.append(
            CostRow(
                key=name,
                runs=len(members),
                gpu_hours=sum(m.gpu_seconds for m in members) / 3600.0,
                cost=None if unpriced else sum(m.cost or 0.0 for m in members),
            )
        )
    return rows


def per_shot(lines: Iterable[HistoryRecord]) -> list[CostRow]:
    return _totals(lines, lambda line: line.shot or "(no shot)")


def per_day(lines: Iterable[HistoryRecord]) -> list[CostRow]:
    """Grouped by the UTC day the line was written."""
    return _totals(lines, lambda line: f"{line.when:%Y-%m-%d}")


def summary_table(lines: list[HistoryRecord]) -> str:
    """The plain-text table of ``cosmos-assets history --summary``: per shot, per day, and the total."""
    out = []
    for title, rows in (("shot", per_shot(lines)), ("day", per_day(lines)), ("total", _totals(lines, lambda _: "all"))):
        out.append(f"{title:<24} {'runs':>6} {'gpu_hours':>10} {'cost':>12}")
        for row in rows:
            cost = "-" if row.cost is None else f"{row.cost:.2f}"
            out.append(f"{row.key:<24} {row.runs:>6} {row.gpu_hours:>10.3f} {cost:>12}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
