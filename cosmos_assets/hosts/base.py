"""The GPU host: one interface, picked per deployment (local preview host, or a real host over SSH).

A host knows how to put files in its cosmos-transfer1 root (``REMOTE_DIR``, mounted at ``/workspace``),
check it is ready, run one transfer.py invocation with live log lines, and bring an output folder
back. What to run and what to record is decided by :mod:`cosmos_assets.runner`, not here.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, Field

from cosmos_assets.command import TransferInvocation
from cosmos_assets.spec import TransferSpec

LogLine = Callable[[str], None]
Progress = Callable[[str], None]

GUARDRAIL_MARKER = "GUARDRAIL BLOCKED"


class StagedFile(BaseModel):
    """A local file and where it goes, relative to the host's cosmos-transfer1 root."""

    local: Path
    remote: str


class TransferStats(BaseModel):
    files_sent: int = 0
    files_skipped: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0


class InferenceJob(BaseModel):
    """One run of transfer.py on a host."""

    run_id: str
    dagster_run_id: str | None = None
    stage: Literal["generate", "upscale"]
    prompt: str
    spec: TransferSpec
    spec_remote_path: str
    invocation: TransferInvocation
    inputs: list[StagedFile]

    @property
    def video_save_folder(self) -> str:
        return self.invocation.video_save_folder


class RunOutcome(BaseModel):
    exit_code: int
    command: list[str]
    container: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime
    log_tail: list[str] = Field(default_factory=list)
    guardrail_blocked: bool = False

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


TRANSFER_PROGRESS_SECONDS = 2.0
"""Longest quiet time between two progress lines of a transfer (every host uses the same format)."""


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

    Call :meth:`add` per chunk sent, :meth:`file_done` per file, :meth:`finish` once at the end (always
    logs). In between it logs at most every ``every`` seconds, so a slow link still shows a line every
    couple of seconds and a fast one does not flood the run log. Thread-safe enough for one writer.
    """

    def __init__(
        self,
        direction: str,
        total_bytes: int,
        total_files: int,
        log: LogLine,
        every: float = TRANSFER_PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.direction = direction
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.done_bytes = 0
        self.done_files = 0
        self._log = log
        self._every = every
        self._clock = clock
        self._started = clock()
        self._last = self._started

    def line(self) -> str:
        return format_transfer_progress(
            self.direction, self.done_bytes, self.total_bytes, self.done_files, self.total_files, self._clock() - self._started
        )

    def add(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        self._maybe_log()

    def file_done(self) -> None:
        self.done_files += 1
        self._maybe_log()

    def finish(self) -> None:
        self._log(self.line())

    def _maybe_log(self) -> None:
        now = self._clock()
        if now - self._last >= self._every:
            self._last = now
            self._log(self.line())


class HostNotReadyError(RuntimeError):
    """Preflight found something missing; the message says what and how to fix it."""


class GpuHost(dg.ConfigurableResource):
    """Interface every GPU host implements. Subclasses are Dagster resources."""

    @property
    @abstractmethod
    def label(self) -> str:
        """Short name for run tags, metadata and the run history (e.g. ``preview@local``)."""

    @property
    @abstractmethod
    def backend(self) -> str:
        """``preview`` for the no-GPU preview backend, ``cosmos-transfer1`` for the model."""

    @abstractmethod
    def preflight(self, job: InferenceJob, log: LogLine) -> None:
        """Raise :class:`HostNotReadyError` naming what is missing before any GPU time is spent."""

    @abstractmethod
    def upload(self, files: list[StagedFile], log: LogLine) -> TransferStats:
        """Put files under the host's root; unchanged files are skipped, the rest verified."""

    @abstractmethod
    def command_for(self, job: InferenceJob) -> list[str]:
        """The exact command this host runs for ``job``, secrets left out."""

    @abstractmethod
    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        """Run transfer.py for ``job``, passing every output line to ``log`` as it comes."""

    @abstractmethod
    def download(self, remote_dir: str, local_dir: Path, log: LogLine) -> TransferStats:
        """Copy a remote folder into ``local_dir`` (which must not exist yet), verified."""
