"""Run and batch ids: the one function that makes them, and the one rule that reads them back.

A run id is ``YYYYmmdd_HHMMSS_<token>``: the UTC second the run was planned, then 8 random hex digits from one source
(``os.urandom``; tests put a seeded one in its place, :func:`token_source`). Ids this process made are never made
twice, whatever the source says. Derived ids only ever *append* a suffix, and a suffix is only ever read back as a
whole trailing part matched by the patterns below, never found by searching the id (the random part may hold any hex
letter: ``..._f3a9...`` is not a follow-up):

- ``<base>_upscale``: the upscale stage; ``<id>_offload``: the retry of a run that ran out of GPU memory
  (:mod:`cosmos_assets.runs.oom`);
- ``<base>_p<n>``: the n-th prompt of a batched request, ``<base>_batch<k>`` its k-th shared invocation and
  ``<base>_batch<k>_f<m>`` that invocation's m-th follow-up (:mod:`cosmos_assets.runs.batch`).

Records written before this module kept the Dagster run id's first 8 hex digits as the token: the same shape.
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

TokenSource = Callable[[], str]

_STAMP = r"\d{8}_\d{6}"
_TOKEN = re.compile(r"[0-9a-f]{8}")
_BASE = rf"{_STAMP}_[0-9a-f]{{8}}"
RUN_ID = re.compile(rf"(?P<base>{_BASE})(?:_p(?P<item>\d+))?(?P<stage>_upscale)?(?P<retry>_offload)?")
BATCH_ID = re.compile(rf"(?P<base>{_BASE})_batch(?P<group>\d+)(?:_f(?P<follow_up>\d+))?")
_MAX_DRAWS = 100


def _random_token() -> str:
    return os.urandom(4).hex()


_source: TokenSource = _random_token
_issued: set[str] = set()
_lock = threading.Lock()


def seeded_source(seed: int) -> TokenSource:
    """A reproducible token source: the same seed gives the same tokens, in the same order."""
    generator = random.Random(seed)
    return lambda: f"{generator.getrandbits(32):08x}"


def listed_source(tokens: list[str]) -> TokenSource:
    """The given tokens in order, then random ones: forces a particular random part (an ``f``-leading one...)."""
    pending = list(tokens)
    return lambda: pending.pop(0) if pending else _random_token()


@contextmanager
def token_source(source: TokenSource) -> Iterator[None]:
    """Ids made inside the block take their random part from ``source`` (tests: :func:`seeded_source`)."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous


def new_run_id(now: datetime | None = None, stage: str = "generate") -> str:
    """``YYYYmmdd_HHMMSS_<8 hex>`` (``..._upscale`` for the upscale): sortable, and unique even for two runs planned
    in the same second by this process (a token already issued is drawn again) or by two processes (32 random bits).
    """
    now = now or datetime.now(UTC)
    stamp = (now.astimezone(UTC) if now.tzinfo else now).strftime("%Y%m%d_%H%M%S")
    for _ in range(_MAX_DRAWS):
        token = _source()
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"run id token source gave {token!r}; it must give 8 lowercase hex digits")
        base = f"{stamp}_{token}"
        with _lock:
            if base not in _issued:
                _issued.add(base)
                return base if stage == "generate" else f"{base}_{stage}"
    raise RuntimeError(f"the run id token source repeated itself {_MAX_DRAWS} times")


def batch_run_id(base: str, item: int) -> str:
    """The run id of the ``item``-th prompt of a batched request planned under ``base``."""
    return f"{base}_p{item}"


def batch_id(base: str, group: int) -> str:
    """The ``group``-th shared invocation of a batched request planned under ``base``."""
    return f"{base}_batch{group}"


@dataclass(frozen=True)
class BatchId:
    """A batch id read back: its request's base, its group, and which follow-up it is (0: the first invocation)."""

    base: str
    group: int
    follow_up: int

    @classmethod
    def parse(cls, text: str) -> BatchId:
        match = BATCH_ID.fullmatch(text)
        if match is None:
            raise ValueError(f"batch id {text!r} is not <YYYYmmdd_HHMMSS_8hex>_batch<k>[_f<m>]")
        return cls(match["base"], int(match["group"]), int(match["follow_up"] or 0))

    def __str__(self) -> str:
        return batch_id(self.base, self.group) + (f"_f{self.follow_up}" if self.follow_up else "")

    def next_follow_up(self) -> BatchId:
        return BatchId(self.base, self.group, self.follow_up + 1)


def follow_up_id(of_batch: str) -> str:
    """The id of the invocation that runs what ``of_batch`` left unrun: ``..._batch<k>_f<m+1>``."""
    return str(BatchId.parse(of_batch).next_follow_up())


def run_id_problem(run_id: str) -> str | None:
    """Why ``run_id`` is not one this package makes (None: it is)."""
    if RUN_ID.fullmatch(run_id) is None:
        shown = run_id if len(run_id) <= 80 else run_id[:60] + "..."
        return f"run_id {shown!r} is not <YYYYmmdd_HHMMSS_8hex>[_p<n>][_upscale][_offload]"
    return None


def run_id_base(run_id: str) -> str | None:
    """The request base of a run id (what its batch ids start with); None if it is not a run id."""
    match = RUN_ID.fullmatch(run_id)
    return match["base"] if match else None
