"""``notes/run_history.log``: one JSON line per finished run (or skip), derived from its run record
(:meth:`cosmos_assets.runs.record.RunRecord.history`); appended whole, read tolerantly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, ValidationError, field_validator

from cosmos_assets.machines.job import Stage
from cosmos_assets.runs.record_rules import Warn, validation_summary, warn_once

HistoryStatus = Literal["success", "failed", "guardrail_blocked", "cancelled", "skipped"]


def storable_text(text: str) -> str:
    """``text`` as it is, except undecodable bytes (lone surrogates from a file name or a log that is not UTF-8),
    shown as ``\\udcff``: JSON files and lines can then always be written, every other character kept."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class HistoryRecord(BaseModel):
    """One line of ``notes/run_history.log`` (JSON Lines: greppable, and parseable). Derived from the run record."""

    when: AwareDatetime  # a line that names no zone cannot be summed per day beside ours: named and left out
    run_id: str
    dagster_run_id: str | None = None
    stage: Stage
    prompt: str
    shot: str | None
    host: str
    backend: str
    command: str
    status: HistoryStatus
    upload_seconds: float = 0.0
    inference_seconds: float = 0.0
    download_seconds: float = 0.0
    total_seconds: float = 0.0
    gpu_seconds: float = 0.0
    outputs: list[str] = Field(default_factory=list)
    error: str | None = None
    cause: str | None = None
    model_load_seconds: float | None = None
    cost: float | None = Field(
        default=None, description="GPU hours x COSMOS_GPU_PRICE_PER_HOUR; None when no price was set"
    )
    batch_id: str | None = Field(default=None, description="the shared invocation this prompt ran in (runs/batch.py)")
    batch_index: int | None = Field(default=None, description="its item in that invocation")
    retry_of: str | None = Field(
        default=None, description="the run this one retried (out of GPU memory, with offload flags)"
    )
    flags_added: list[str] = Field(default_factory=list, description="flags the retry added to the command")
    gpu_util_mean_percent: float | None = Field(default=None, description="mean GPU utilisation sampled during the run")
    served_by: str | None = Field(default=None, description="'service <container id>' or 'one-shot' (docs/serving.md)")

    @field_validator("error")
    @classmethod
    def _storable_error(cls, value: str | None) -> str | None:
        return storable_text(value) if value is not None else None


def append_history(path: Path, record: HistoryRecord) -> None:
    """One whole line per write (O_APPEND), so concurrent runs never interleave a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (record.model_dump_json() + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)  # the umask decides: every artist appends
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_history(path: Path, warn: Warn | None = None) -> list[HistoryRecord]:
    """Every good line of the history; a bad one (not UTF-8, not JSON, not a history record) is named once as
    ``<file>:<line>: <what is wrong>`` through ``warn`` and left out. OSError if the file itself cannot be read."""
    if not path.exists():
        return []
    records = []
    with open(path, "rb") as handle:
        # JSON Lines end at "\n" only: str.splitlines() would also cut at U+2028, U+0085... which JSON leaves unescaped.
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                records.append(HistoryRecord.model_validate_json(raw.rstrip(b"\r\n").decode("utf-8")))
            except UnicodeDecodeError as error:
                warn_once(warn, f"{path}:{number}: not UTF-8 text (byte {error.start}); line left out")
            except ValidationError as error:
                warn_once(warn, f"{path}:{number}: {validation_summary(error)}; line left out")
    return records
