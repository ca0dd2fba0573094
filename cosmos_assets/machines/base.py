"""Where a run happens: the interface every machine implements (this computer, or a host over SSH).

A machine puts files under its model root (``REMOTE_DIR``), checks it can run a job, runs one
:class:`~cosmos_assets.machines.job.InferenceJob` with live log lines (in docker, or as a plain
process), and brings an output folder back, verified. What to run and what to record is decided by
the model backend and the run (:mod:`cosmos_assets.models`, :mod:`cosmos_assets.runs`), not here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from cosmos_assets.machines.job import InferenceJob, LogLine, RunOutcome, StagedFile
from cosmos_assets.progress import TransferStats

JobState = Literal["running", "exited_ok", "outputs", "failed", "gone"]
"""What a machine knows of an earlier run's job: its container still running; exited 0 with the container still
there; no container but its output file present; exited non-zero; or nothing left (start a new one)."""


class MachineState(BaseModel):
    """What a machine says of itself now (``cosmos-assets hosts``): whether it answers, and if so its GPUs, free disk
    under the model root and whether its image is there (None: it could not say)."""

    reachable: bool
    problem: str | None = None
    gpus: int | None = None
    free_gb: float | None = None
    image_present: bool | None = None


class Machine(ABC):
    """A place that runs model invocations. Dagster-free; the Dagster resources wrap one."""

    @property
    @abstractmethod
    def label(self) -> str:
        """Short name for run tags, metadata and the run history (e.g. ``local``, ``ssh@gpu1``)."""

    @property
    @abstractmethod
    def runtime(self) -> str:
        """``docker`` or ``process``."""

    @abstractmethod
    def preflight(self, job: InferenceJob, log: LogLine) -> None:
        """Raise :class:`~cosmos_assets.machines.job.HostNotReadyError` naming what is missing, before GPU time."""

    @abstractmethod
    def upload(self, files: list[StagedFile], log: LogLine) -> TransferStats:
        """Put files under the model root; unchanged files are skipped, the rest verified."""

    @abstractmethod
    def command_for(self, job: InferenceJob) -> list[str]:
        """The exact command this machine runs for ``job``, secrets left out."""

    @abstractmethod
    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        """Run the job's invocation, passing every output line to ``log`` as it comes."""

    @abstractmethod
    def download(self, remote_dir: str, local_dir: Path, log: LogLine) -> TransferStats:
        """Copy a folder under the model root into ``local_dir`` (which must not exist yet), verified."""

    def close(self) -> None:  # noqa: B027 - a machine with no connection has nothing to close
        """Release connections; the machine reconnects when used again."""

    @property
    def image(self) -> str | None:
        """The container image runs use here (part of a run's identity); None where there is none."""
        return None

    def image_id(self) -> str | None:
        """The ID :attr:`image` has on the machine now (``docker image inspect``): a rebuilt tag is a new ID. None where
        there is no image or it is not there yet; a machine that cannot be asked raises (unknown is never None)."""
        return None

    def checkpoint_revisions(self, job: InferenceJob) -> dict[str, str]:
        """Repository -> the commit its cache's ``refs/main`` names now, for each of ``job.invocation.revision_files``
        that can be read (a 40-hex commit); the rest are left out."""
        return {}

    def job_state(self, job: InferenceJob, output_file: str) -> JobState:
        """What is left on the machine of ``job`` (an earlier attempt's), ``output_file`` being the output it must
        leave (relative to the model root). The default knows nothing: "gone" (the runner starts a new job)."""
        return "gone"

    def stop(self, job: InferenceJob, log: LogLine) -> bool:
        """Stop ``job`` while :meth:`run` follows it in another thread (the stall watchdog); False if not supported."""
        return False

    @abstractmethod
    def describe(self) -> MachineState:
        """Its state now, asked of the machine itself; never raises for a machine that cannot be reached or asked."""

    def gpu_reader(self) -> Callable[[], str | None] | None:
        """How to read the GPUs here while a run goes on (``machines/gpu_usage.QUERY``'s output, None when it cannot
        this time), called from another thread; None: this machine has no GPUs to sample."""
        return None
