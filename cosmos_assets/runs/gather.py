"""Company for a batch: which waiting prompts the run that holds a free host takes into its invocation, and how
long it waits for them. Plain Python; the clock and the sleep are handed in, so a test forces each case.

The run that holds the host's slot looks at the prompts waiting for the same host (their runs queued, or waiting in
the host's pool; :mod:`cosmos_assets.defs.resources.waiting` finds them) and takes them into its own invocation, so one
model load serves them all; their runs later find the work done (:mod:`cosmos_assets.runs.skip`). Bounds:

- never more than ``max_prompts`` in one invocation (its own prompt included);
- never waits longer than ``window_seconds`` for company (0: takes what is waiting now, waits for nothing);
- an ``urgent`` run waits for nothing and takes nobody (its own video would come after theirs), and an urgent
  prompt found waiting ends the wait at once: it is taken, first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cosmos_assets.runs.priority import LEVELS

URGENT = LEVELS["urgent"]
DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_MAX_PROMPTS = 16
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Waiting:
    """A prompt waiting for the host: its Dagster run, that run's priority, and how it waits (for the log)."""

    prompt: str
    dagster_run_id: str
    priority: int = 0
    how: str = "queued"


@dataclass(frozen=True)
class BatchWindow:
    """The bounds of a gathered batch (COSMOS_BATCH_WINDOW, COSMOS_BATCH_MAX)."""

    window_seconds: float = DEFAULT_WINDOW_SECONDS
    max_prompts: int = DEFAULT_MAX_PROMPTS
    poll_seconds: float = POLL_SECONDS

    def __post_init__(self) -> None:
        if self.window_seconds < 0 or self.max_prompts < 1 or self.poll_seconds <= 0:
            raise ValueError(
                f"batch window {self.window_seconds:g} s and at most {self.max_prompts} prompts: "
                "the window must be 0 or more and the count 1 or more"
            )


@dataclass(frozen=True)
class Company:
    """What the holder takes: the prompts (urgent first, then in the order found), the seconds it waited, and why
    it stopped waiting (one phrase, for the log and ``batch.json``)."""

    taken: list[Waiting] = field(default_factory=list)
    waited_seconds: float = 0.0
    why: str = ""


def _choose(own: str, found: Sequence[Waiting], room: int) -> list[Waiting]:
    unique: dict[str, Waiting] = {}
    for item in found:
        if item.prompt != own and item.prompt not in unique:
            unique[item.prompt] = item
    ordered = sorted(unique.values(), key=lambda w: -1 if w.priority >= URGENT else 0)  # stable: found order kept
    return ordered[:room]


def gather(
    own_prompt: str,
    own_priority: int,
    find: Callable[[], Sequence[Waiting]],
    window: BatchWindow,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    cancelled: Callable[[], bool] = lambda: False,
    on_the_way: Callable[[], int] | None = None,
) -> Company:
    """Company for ``own_prompt``: ``find()`` is asked at once, then every ``poll_seconds`` until the batch is full,
    an urgent prompt waits, the window has passed, the run is cancelled, or nobody else is on the way
    (``on_the_way()``: how many other runs will want this step on this host but do not wait for it yet; None:
    unknown, so the window is waited out). A prompt alone with nobody coming waits for nothing."""
    if window.max_prompts <= 1:
        return Company(why="batching is off (COSMOS_BATCH_MAX=1)")
    if own_priority >= URGENT:
        return Company(why="this run is urgent: it runs now and alone")
    room = window.max_prompts - 1
    start = clock()
    while True:
        taken = _choose(own_prompt, find(), room)
        waited = clock() - start
        if any(w.priority >= URGENT for w in taken):
            return Company(taken, waited, "an urgent prompt is waiting: no more waiting")
        if len(taken) >= room:
            return Company(taken, waited, f"full ({window.max_prompts} prompts, COSMOS_BATCH_MAX)")
        if waited >= window.window_seconds:
            return Company(taken, waited, f"the window ({window.window_seconds:g} s, COSMOS_BATCH_WINDOW) has passed")
        if cancelled():
            return Company(taken, waited, "the run was terminated")
        if on_the_way is not None and on_the_way() == 0:
            return Company(taken, waited, "no other run is on its way to this step")
        sleep(min(window.poll_seconds, window.window_seconds - waited))
