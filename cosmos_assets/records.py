"""The files we write about runs: ``spec_used.json`` and ``notes/run_history.log``.

Both are pydantic models, written atomically (temp name in the same folder, then rename) or, for the
history, appended one whole line per ``write`` call so concurrent runs never interleave a record.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from cosmos_assets.command import redacted


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


class SpecUsed(BaseModel):
    """``spec_used.json``: everything needed to reproduce one run, secrets redacted."""

    stage: Literal["generate", "upscale"]
    backend: str = Field(description="'preview' (no model, a pipeline preview) or 'cosmos-transfer1'")
    run_id: str
    dagster_run_id: str | None = None
    prompt: str
    shot: str | None = None
    host: str
    command: list[str]
    command_line: str
    container: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any]
    spec_remote_path: str
    video_save_folder: str
    started_at: datetime
    finished_at: datetime
    exit_code: int

    @classmethod
    def read(cls, path: Path) -> "SpecUsed":
        """Load a run's ``spec_used.json``; a missing or unreadable one says which asset to materialize."""
        try:
            return cls.model_validate_json(path.read_text())
        except (OSError, ValueError) as error:
            raise FileNotFoundError(f"{path} is missing or unreadable ({error}); materialize the asset first") from error

    def write(self, path: Path) -> None:
        """Write atomically; secrets in the environment and the command line are redacted first."""
        safe = self.model_copy(update={"environment": redacted(self.environment), "command": redacted(self.command), "command_line": redacted(self.command_line)})
        atomic_write_text(path, safe.model_dump_json(indent=2) + "\n")


class HistoryRecord(BaseModel):
    """One line of ``notes/run_history.log`` (JSON Lines: greppable, and parseable)."""

    when: datetime
    run_id: str
    dagster_run_id: str | None = None
    stage: Literal["generate", "upscale"]
    prompt: str
    shot: str | None
    host: str
    backend: str
    command: str
    status: Literal["success", "failed", "guardrail_blocked", "cancelled"]
    upload_seconds: float = 0.0
    inference_seconds: float = 0.0
    download_seconds: float = 0.0
    total_seconds: float = 0.0
    outputs: list[str] = Field(default_factory=list)
    error: str | None = None


def append_history(path: Path, record: HistoryRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (record.model_dump_json() + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_history(path: Path) -> list[HistoryRecord]:
    if not path.exists():
        return []
    return [HistoryRecord.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]
