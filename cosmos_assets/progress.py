"""What a long operation reports: one throttle, the transfer progress line, and one transfer-stats type.

Every progress line in the package (encode frames, uploads, downloads on any host) goes through
:class:`Throttle`, so a slow operation still shows a line every couple of seconds and a fast one does
not flood the run log.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

LogLine = Callable[[str], None]
TRANSFER_PROGRESS_SECONDS = 2.0
"""Longest quiet time between two progress lines of a transfer (every host uses the same format)."""


class Throttle:
    """Says when a progress line is due: at most once every ``every`` seconds per key, and always when final.

    The clock of every key starts when the throttle is made, or with ``first_due`` at the key's first call.
    """

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic, *, first_due: bool = False) -> None:
        self.every = every
        self._clock = clock
        self._start = None if first_due else clock()
        self._last: dict[Hashable, float | None] = {}
        self._lock = threading.Lock()

    def due(self, key: Hashable = None, final: bool = False) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key, self._start)
            if final or last is None or now - last >= self.every:
                self._last[key] = now
                return True
            return False


def format_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'; binary units, one decimal."""
    for unit in ("B", "KiB", "MiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def format_transfer_progress(direction: str, done: int, total: int, files_done: int, files: int, seconds: float) -> str:
    """The one progress line every host logs, e.g.
    ``[transfer] upload 12.0 MiB / 48.0 MiB (25%), 1/4 files, 6.0 MiB/s``."""
    percent = f"{100 * done / total:.0f}%" if total else "100%"
    rate = format_bytes(done / seconds) + "/s" if seconds > 0 else "-"
    return f"[transfer] {direction} {format_bytes(done)} / {format_bytes(total)} ({percent}), {files_done}/{files} files, {rate}"


class TransferProgress:
    """Counts a transfer's bytes and logs :func:`format_transfer_progress` lines through ``log``.

    Call :meth:`add` per chunk sent (or :meth:`set` with the bytes done so far), :meth:`file_done` per
    file, :meth:`finish` once at the end (always logs). When the file sizes are given, the files done
    follow from the bytes done (files are sent in order), so :meth:`file_done` is not needed.
    """

    def __init__(
        self,
        direction: str,
        total_bytes: int,
        total_files: int,
        log: LogLine,
        every: float = TRANSFER_PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sizes: Sequence[int] | None = None,
    ) -> None:
        self.direction = direction
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.done_bytes = 0
        self.done_files = 0
        self._log = log
        self._clock = clock
        self._throttle = Throttle(every, clock)
        self._started = clock()
        self._ends = list(itertools.accumulate(sizes)) if sizes is not None else None

    @classmethod
    def for_files(
        cls, direction: str, sizes: Sequence[int], log: LogLine, every: float = TRANSFER_PROGRESS_SECONDS
    ) -> TransferProgress:
        return cls(direction, sum(sizes), len(sizes), log, every=every, sizes=sizes)

    def line(self) -> str:
        files_done = bisect.bisect_right(self._ends, self.done_bytes) if self._ends is not None else self.done_files
        return format_transfer_progress(
            self.direction,
            self.done_bytes,
            self.total_bytes,
            files_done,
            self.total_files,
            self._clock() - self._started,
        )

    def add(self, nbytes: int) -> None:
        self.set(self.done_bytes + nbytes)

    def set(self, done: int) -> None:
        self.done_bytes = done
        if self._throttle.due():
            self._log(self.line())

    def callback(self, done: int, _total: int) -> None:
        """A ``(bytes done, bytes total)`` callback, for engines that report absolute progress."""
        if done >= self.total_bytes:
            self.done_bytes = done
            return
        self.set(done)

    def file_done(self) -> None:
        self.done_files += 1
        if self._throttle.due():
            self._log(self.line())

    def finish(self) -> None:
        self._log(self.line())


class FileTransfer(BaseModel):
    """One file of a transfer: what was sent (or skipped because the far side had the same sha256)."""

    local: str
    remote: str
    size: int
    sha256: str
    bytes_sent: int
    skipped: bool
    resumed_from: int = 0
    seconds: float
    rate_mb_s: float | None = Field(default=None, description="MB/s (10^6) of bytes sent, None when skipped")


def rate_mb_s(nbytes: int, seconds: float) -> float | None:
    return round(nbytes / seconds / 1e6, 2) if nbytes and seconds > 0 else None


class TransferStats(BaseModel):
    """What one upload or download did, on any host."""

    direction: Literal["upload", "download"] = "upload"
    files_sent: int = 0
    files_skipped: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    files: list[FileTransfer] = Field(default_factory=list)

    @property
    def rate_mb_s(self) -> float | None:
        return rate_mb_s(self.bytes_sent, self.seconds)

    def add(self, item: FileTransfer) -> None:
        self.files.append(item)
        if item.skipped:
            self.files_skipped += 1
        else:
            self.files_sent += 1
        self.bytes_sent += item.bytes_sent
