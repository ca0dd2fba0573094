"""What a batched request is made of: the options every invocation of it shares, each prompt waiting for its
invocation (its plan and record), and each prompt's outcome. Plain Python, no Dagster."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cosmos_assets.models.base import BatchItem, ModelBackend
from cosmos_assets.runs.options import RunOptions
from cosmos_assets.runs.plan import StagePlan
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.stage import StageResult


@dataclass
class PromptOutcome:
    """One prompt of a batched request: its result, or the error that failed it (never both)."""

    prompt: str
    result: StageResult | None = None
    error: BaseException | None = None


@dataclass
class Member:
    """A planned prompt waiting for its invocation."""

    prompt: str
    backend: ModelBackend
    plan: StagePlan
    record: RunRecord
    make_plan: Callable[[str], StagePlan]
    t0: float = field(default_factory=time.monotonic)
    superseded: str | None = None  # an adopted batch's item whose work a newer run did: never promoted (batch_adopt)
    taken_for: str | None = (
        None  # the Dagster run it waited in, when another run's invocation takes it (runs/company.py)
    )

    @property
    def item(self) -> BatchItem:
        assert self.plan.spec is not None
        return BatchItem(prompt=self.prompt, spec=self.plan.spec, request=self.plan.request)

    @property
    def text(self) -> str | None:
        return self.backend.batch_text(self.item)


@dataclass(frozen=True)
class BatchOptions(RunOptions):
    """What every invocation of one request shares: the run's options, the videos folder of its prompts, and
    ``batch_size`` (upstream's ``--batch_size``: items generated at once, more memory)."""

    videos_subdir: str | None = None
    batch_size: int = 1

    @classmethod
    def of(cls, options: RunOptions, **fields: Any) -> BatchOptions:
        """``options`` with a batch's own ``fields``."""
        return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(RunOptions)}, **fields)
