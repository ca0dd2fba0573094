"""The files a batch invocation leaves besides each prompt's own: ``outputs/.batches/<batch_id>/batch.json`` (what
became of each item) and each prompt's ``run.log`` excerpt of the shared log. Plain Python, no Dagster."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

EXCERPT_TAIL_LINES = 20


class BatchItemRecord(BaseModel):
    """One item of ``batch.json``."""

    index: int
    prompt: str
    run_id: str
    status: str
    folder: str | None = None
    why: str


class BatchFile(BaseModel):
    """``outputs/.batches/<batch_id>/batch.json``: the shared invocation and what became of each item."""

    batch_id: str
    dagster_run_id: str | None
    model: str
    host: str
    batch_size: int
    command: list[str]
    exit_code: int | None
    follow_up_of: str | None = None
    items: list[BatchItemRecord]
    unclaimed_folders: list[str] = []


def excerpt(batch_log: Path, batch_id: str, index: int, prompt: str, run_id: str, folder: str | None, why: str) -> str:
    """A prompt's ``run.log``: what it was in the shared invocation, its own lines, and the invocation's tail."""
    try:
        lines = batch_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    marks = [f"video_{index}/", f"video_{index} ", prompt, run_id] + ([f"{folder}/"] if folder else [])
    own = [line for line in lines if any(mark in line for mark in marks)]
    head = [
        f"[cosmos-assets] generate of {prompt}: item {index} of the shared invocation {batch_id} "
        f"(its whole log: outputs/.batches/{batch_id}/run.log)",
        f"[cosmos-assets] outcome: {why}",
        "[cosmos-assets] lines of the invocation about this prompt:",
    ]
    tail = ["[cosmos-assets] the invocation's last lines:", *lines[-EXCERPT_TAIL_LINES:]]
    return "\n".join(head + own + tail) + "\n"
