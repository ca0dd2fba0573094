"""This computer as a machine: the model root is a local folder and the runtime is a plain process.

Used for the preview backend (no GPU, no docker, no checkpoints). The invocation's argv runs in the root with
the invocation's environment added; a leading ``python3`` is replaced by this interpreter (``sys.executable``),
so the program finds the packages of the environment cosmos-assets runs in (numpy, PyAV), whatever
``python3`` on the PATH is. A cancelled step kills the process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cosmos_assets.files import copy_verified, refuse_existing, remove_tree, rename_no_replace, same_file_content
from cosmos_assets.machines.base import Machine, MachineState
from cosmos_assets.machines.gpu_usage import QUERY, QUERY_TIMEOUT_SECONDS
from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, LogLine, RunOutcome, StagedFile, relative_inside
from cosmos_assets.machines.preflight import is_inside, local_overlap, overlap_error, project_folders, root_setting
from cosmos_assets.progress import TransferProgress, TransferStats

TAG = "[local]"
LOG_TAIL_LINES = 40
MIN_FREE_BYTES = 512 * 1024 * 1024


class LocalMachine(Machine):
    """Runs invocations as a subprocess in ``root`` on this computer."""

    def __init__(self, root: Path, label: str = "local") -> None:
        self.root = Path(root)
        self._label = label
        self._processes: dict[str, subprocess.Popen[str]] = {}
        self._project_root: Path | None = None  # the last preflighted job's project: upload never writes into it

    def describe(self) -> MachineState:
        folder = self.root
        while not folder.exists() and folder != folder.parent:  # the model root is made on first use
            folder = folder.parent
        return MachineState(reachable=True, gpus=0, free_gb=shutil.disk_usage(folder).free / 1e9)

    def __repr__(self) -> str:
        return f"LocalMachine({self.root})"

    @property
    def label(self) -> str:
        return self._label

    @property
    def runtime(self) -> str:
        return "process"

    def _path(self, relative: str) -> Path:
        return self.root / relative_inside(relative, "path")

    def preflight(self, job: InferenceJob, log: LogLine) -> None:
        overlap = local_overlap(self.root, job)
        if overlap is not None and job.project_root is not None:
            raise overlap_error(
                f"{self.label}: the model root {self.root}",
                root_setting(job.invocation.model, True),
                *overlap,
                job.project_root,
                "unset, it is the project's .preview_host/cosmos-transfer1",
            )
        self._project_root = job.project_root
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise HostNotReadyError(
                f"local model folder {self.root} is not writable; fix its permissions or set COSMOS_PREVIEW_DIR"
            )
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            raise HostNotReadyError(f"only {free // 2**20} MiB free under {self.root}; free some disk space")
        entry = self._path(job.invocation.entry_point)
        staged = any(Path(item.remote) == Path(job.invocation.entry_point) for item in job.inputs)
        if not staged and not entry.is_file():
            raise HostNotReadyError(f"{entry} is missing: {job.invocation.model}'s program is not in {self.root}")
        log(f"{TAG} preflight ok: {job.invocation.model} as a local process in {self.root}")

    def upload(self, files: list[StagedFile], log: LogLine) -> TransferStats:
        started = time.monotonic()
        stats = TransferStats(direction="upload")
        pairs = [(item.local, self._path(item.remote)) for item in files]
        sizes = [src.stat().st_size for src, _ in pairs]
        progress = TransferProgress.for_files("upload", sizes, log)
        done = 0
        for _src, dst in pairs:
            self._refuse_project_file(dst)
        for (src, dst), size in zip(pairs, sizes):
            if same_file_content(src, dst):
                stats.files_skipped += 1
            else:
                copy_verified(src, dst, progress.add)
                stats.files_sent += 1
                stats.bytes_sent += size
            done += size
            progress.set(done)
        progress.finish()
        stats.seconds = time.monotonic() - started
        log(f"{TAG} staged {stats.files_sent} file(s), {stats.bytes_sent} bytes; {stats.files_skipped} unchanged")
        return stats

    def _refuse_project_file(self, dst: Path) -> None:
        """Defence in depth behind the preflight: a staged file is never written over a file of the project."""
        if self._project_root is None:
            return
        for name, folder in project_folders(self._project_root).items():
            if is_inside(dst.resolve(), folder.resolve()):
                raise HostNotReadyError(
                    f"{self.label}: refusing to stage over {dst}, a file of the project's {name} "
                    f"folder; set COSMOS_PREVIEW_DIR to a folder of its own"
                )

    def command_for(self, job: InferenceJob) -> list[str]:
        argv = list(job.invocation.argv)
        if argv and argv[0] == "python3":
            argv[0] = sys.executable
        return argv

    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        command = self.command_for(job)
        environment = {"PYTHONUNBUFFERED": "1", **job.invocation.env}
        marker = job.invocation.guardrail_marker
        started = datetime.now(UTC)
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        guardrail = False
        process = subprocess.Popen(
            command,
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, **environment},
        )
        self._processes[job.run_id] = process
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                guardrail = guardrail or (marker is not None and marker in line)
                log(line)
            exit_code = process.wait()
        except BaseException:
            # Run cancelled (Dagster raises into the step): never leave the job running behind us.
            process.kill()
            process.wait()
            raise
        finally:
            self._processes.pop(job.run_id, None)
        return RunOutcome(
            exit_code=exit_code,
            command=command,
            environment=environment,
            container={"runtime": "process", "host": self.label, "cwd": str(self.root)},
            started_at=started,
            finished_at=datetime.now(UTC),
            log_tail=list(tail),
            guardrail_blocked=guardrail,
        )

    def stop(self, job: InferenceJob, log: LogLine) -> bool:
        """Kill the job's process (the stall watchdog); :meth:`run` then returns its exit code."""
        process = self._processes.get(job.run_id)
        if process is not None and process.poll() is None:
            process.kill()
            log(f"{TAG} killed {job.invocation.model} (pid {process.pid})")
        return True

    def gpu_reader(self) -> Callable[[], str | None] | None:
        """This computer's GPUs, only where it has nvidia-smi (the preview needs none)."""
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return None

        def read() -> str | None:
            done = subprocess.run([smi, *QUERY[1:]], capture_output=True, text=True, timeout=QUERY_TIMEOUT_SECONDS)
            return done.stdout if done.returncode == 0 else None

        return read

    def download(self, remote_dir: str, local_dir: Path, log: LogLine) -> TransferStats:
        source = self._path(remote_dir)
        if not source.is_dir():
            raise FileNotFoundError(f"the run left no output folder {source}")
        local_dir = Path(local_dir)
        refuse_existing(local_dir)
        started = time.monotonic()
        stats = TransferStats(direction="download")
        partial = local_dir.with_name(f".{local_dir.name}.partial-{os.getpid()}")
        remove_tree(partial)
        paths = sorted(p for p in source.rglob("*") if p.is_file())
        root = source.resolve()
        for path in paths:  # a symlink in the output folder to a file elsewhere is never copied out
            if not path.resolve().is_relative_to(root):
                raise OSError(
                    f"{path} is a symlink to {path.resolve()}, outside {source}: refusing to copy it; remove the link"
                )
        sizes = [p.stat().st_size for p in paths]
        progress = TransferProgress.for_files("download", sizes, log)
        try:
            partial.mkdir(parents=True)
            for path, size in zip(paths, sizes):
                copy_verified(path, partial / path.relative_to(source), progress.add)
                stats.files_sent += 1
                stats.bytes_sent += size
            progress.finish()
            rename_no_replace(partial, local_dir)
        except BaseException:
            remove_tree(partial)
            raise
        stats.seconds = time.monotonic() - started
        log(f"{TAG} fetched {stats.files_sent} file(s), {stats.bytes_sent} bytes into {local_dir}")
        return stats
