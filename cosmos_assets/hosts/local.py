"""The local preview host: the "remote" cosmos-transfer1 root is a folder on this machine and the
model is the **preview backend** (:mod:`cosmos_assets.preview_model`), a program with
Cosmos-Transfer1's command line and output layout that composites the control videos. It is a
preview of the pipeline, never the model: it needs no GPU, no Docker and no checkpoints.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from pydantic import Field

from cosmos_assets.command import ENTRY_POINT, transfer_argv
from cosmos_assets.hosts.base import (
    GUARDRAIL_MARKER,
    GpuHost,
    HostNotReadyError,
    InferenceJob,
    LogLine,
    RunOutcome,
    StagedFile,
    TransferProgress,
    TransferStats,
)

PREVIEW_TAG = "[preview]"
LOG_TAIL_LINES = 40
COPY_CHUNK = 1 << 20


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def same_file_content(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)


def copy_with_progress(src: Path, dst: Path, on_bytes: Callable[[int], None] | None = None) -> None:
    """Copy ``src`` to ``dst`` in 1 MiB blocks, calling ``on_bytes(n)`` after each block."""
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        while block := reader.read(COPY_CHUNK):
            writer.write(block)
            if on_bytes is not None:
                on_bytes(len(block))


def copy_verified(src: Path, dst: Path, on_bytes: Callable[[int], None] | None = None) -> None:
    """Copy to a temp name beside ``dst``, check the digest, then rename into place."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    copy_with_progress(src, tmp, on_bytes)
    if sha256_file(tmp) != sha256_file(src):
        tmp.unlink(missing_ok=True)
        raise OSError(f"copy of {src} to {dst} does not match its source (sha256); disk full or failing?")
    os.replace(tmp, dst)


def _flags_after_entry_point(argv: list[str]) -> list[str]:
    return argv[argv.index(ENTRY_POINT) + 1 :]


def _launcher_env(job: InferenceJob) -> dict[str, str]:
    """torchrun's rank variables when the real command launches with torchrun: the one preview process is rank 0."""
    if not job.invocation.uses_torchrun:
        return {}
    return {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": str(job.invocation.num_gpus)}


class LocalPreviewHost(GpuHost):
    """Runs the preview backend as a subprocess in ``remote_dir`` on this machine."""

    remote_dir: str = Field(description="Folder standing in for the host's cosmos-transfer1 root.")
    name: str = Field(default="local", description="Host name shown in tags, metadata and the run history.")

    @property
    def label(self) -> str:
        return f"preview@{self.name}"

    @property
    def backend(self) -> str:
        return "preview"

    @property
    def root(self) -> Path:
        return Path(self.remote_dir)

    def preflight(self, job: InferenceJob, log: LogLine) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise HostNotReadyError(f"preview host folder {self.root} is not writable; fix its permissions or set COSMOS_PREVIEW_DIR")
        free = shutil.disk_usage(self.root).free
        if free < 512 * 1024 * 1024:
            raise HostNotReadyError(f"only {free // 2**20} MiB free under {self.root}; free some disk space")
        log(f"{PREVIEW_TAG} preflight ok: preview backend (not the model) in {self.root}")

    def upload(self, files: list[StagedFile], log: LogLine) -> TransferStats:
        stats = TransferStats()
        started = time.monotonic()
        to_send = [item for item in files if not same_file_content(item.local, self.root / item.remote)]
        stats.files_skipped = len(files) - len(to_send)
        progress = TransferProgress("upload", sum(i.local.stat().st_size for i in to_send), len(to_send), log)
        for item in to_send:
            copy_verified(item.local, self.root / item.remote, progress.add)
            progress.file_done()
            stats.files_sent += 1
            stats.bytes_sent += item.local.stat().st_size
        progress.finish()
        stats.seconds = time.monotonic() - started
        log(f"{PREVIEW_TAG} staged {stats.files_sent} file(s), {stats.bytes_sent} bytes; {stats.files_skipped} unchanged")
        return stats

    def command_for(self, job: InferenceJob) -> list[str]:
        flags = _flags_after_entry_point(transfer_argv(job.invocation))
        return [sys.executable, "-m", "cosmos_assets.preview_model", *flags]

    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        command = self.command_for(job)
        environment = {"PYTHONUNBUFFERED": "1", **_launcher_env(job)}
        started = datetime.now(timezone.utc)
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
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                guardrail = guardrail or GUARDRAIL_MARKER in line
                log(line)
            exit_code = process.wait()
        except BaseException:
            # Run cancelled (Dagster raises into the step): never leave the job running behind us.
            process.kill()
            process.wait()
            raise
        return RunOutcome(
            exit_code=exit_code,
            command=command,
            environment=environment,
            container={"kind": "subprocess (preview backend, no container)", "cwd": str(self.root)},
            started_at=started,
            finished_at=datetime.now(timezone.utc),
            log_tail=list(tail),
            guardrail_blocked=guardrail,
        )

    def download(self, remote_dir: str, local_dir: Path, log: LogLine) -> TransferStats:
        source = self.root / remote_dir
        if not source.is_dir():
            raise FileNotFoundError(f"the run left no output folder {source}")
        if local_dir.exists():
            raise FileExistsError(f"{local_dir} exists; refusing to overwrite an earlier run's outputs")
        stats = TransferStats()
        started = time.monotonic()
        partial = local_dir.with_name(f".{local_dir.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        paths = sorted(p for p in source.rglob("*") if p.is_file())
        progress = TransferProgress("download", sum(p.stat().st_size for p in paths), len(paths), log)
        for path in paths:
            copy_verified(path, partial / path.relative_to(source), progress.add)
            progress.file_done()
            stats.files_sent += 1
            stats.bytes_sent += path.stat().st_size
        progress.finish()
        partial.mkdir(parents=True, exist_ok=True)
        os.replace(partial, local_dir)
        stats.seconds = time.monotonic() - started
        log(f"{PREVIEW_TAG} fetched {stats.files_sent} file(s), {stats.bytes_sent} bytes into {local_dir}")
        return stats
