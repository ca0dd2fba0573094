"""The GPU host: one interface, picked per deployment (local preview host, or a real host over SSH).

A host knows how to put files in its cosmos-transfer1 root (``REMOTE_DIR``, mounted at ``/workspace``),
check it is ready, run one transfer.py invocation with live log lines, and bring an output folder
back. What to run and what to record is decided by :mod:`cosmos_assets.runner`, not here.
"""

from __future__ import annotations

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
