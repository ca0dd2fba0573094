"""Run priority: an urgent shot jumps the queue, a backfill or wedge yields. Dagster-free.

The value goes on the run as Dagster's own ``dagster/priority`` tag, which orders both the run queue (the queued run
coordinator dequeues higher first) and every pool wait of the run's steps, the ``gpu_host`` pool and each host's own
(:mod:`cosmos_assets.defs.resources.slots`). Names or any integer; higher goes first.
"""

from __future__ import annotations

PRIORITY_TAG = "dagster/priority"
LEVELS: dict[str, int] = {"urgent": 100, "high": 10, "normal": 0, "low": -10, "backfill": -50, "wedge": -50}
LIMIT = 1_000_000
"""Dagster stores the priority of a pool wait in an integer column: keep far inside 32 bits."""


def parse_priority(value: str | int) -> int:
    """``urgent`` (100), ``high`` (10), ``normal`` (0), ``low`` (-10), ``backfill``/``wedge`` (-50), or an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip().lower()
        if text in LEVELS:
            return LEVELS[text]
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"priority {str(value)[:40]!r} is not one of {', '.join(LEVELS)} or an integer") from None
    if not -LIMIT <= number <= LIMIT:
        raise ValueError(
            f"priority {str(value)[:40]!r} is outside {-LIMIT} to {LIMIT}; use a level name or a smaller number"
        )
    return number


def priority_tags(value: str | int | None) -> dict[str, str]:
    """The run tags for ``value`` (none for normal, so untouched runs stay as they were)."""
    if value is None:
        return {}
    number = parse_priority(value)
    return {PRIORITY_TAG: str(number)} if number else {}
