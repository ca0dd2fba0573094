"""The run settings every stage shares, carried as one value from the asset (or the CLI) to the runner and the batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cosmos_assets.machines.job import LogLine


@dataclass(frozen=True)
class RunOptions:
    """How a stage runs, whatever it runs: its Dagster run, GPUs, log, watchdog, termination, skip and retry rules.

    ``silence_minutes`` > 0: the stall watchdog's limit. ``cancelled``: asked every few seconds while the model runs;
    True stops the job. ``force``: run even when the last success did the same work. ``run_finished``: whether a
    Dagster run has ended (:mod:`~cosmos_assets.runs.adopt`). ``oom_retry_offload``: a run out of GPU memory is
    retried once with the model's offload flags (:mod:`~cosmos_assets.runs.oom`)."""

    dagster_run_id: str | None = None
    num_gpus: int = 1
    log: LogLine = print
    silence_minutes: float = 0.0
    cancelled: Callable[[], bool] | None = None
    force: bool = False
    gpu_price_per_hour: float | None = None
    run_finished: Callable[[str], bool] | None = None
    oom_retry_offload: bool = False

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` (field names; an unknown name is a TypeError)."""
        return dataclasses.replace(self, **changes)
