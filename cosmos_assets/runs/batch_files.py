"""The files a batch invocation leaves besides each prompt's own: ``outputs/.batches/<batch_id>/batch.json`` (what
became of each item) and each prompt's ``run.log`` excerpt of the shared log. Plain Python, no Dagster."""

from __future__ import annotations

import re
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


def mentions(line: str, name: str) -> bool:
    """Whether ``line`` names ``name`` as a whole word or path part: ``city`` is not in ``city_mask_v2.mp4`` (nor
    ``video_1`` in ``video_12/``); a name is bounded by the line's ends, white space, quotes, ``/``, ``:``, ``,``,
    brackets, or a ``.`` that ends a sentence."""
    if not name:
        return False
    return (
        re.search(rf"(?:^|(?<=[\s'\"/:,(\[{{=]))(?:{re.escape(name)})(?=$|[\s'\"/:,)\]}}]|\.(?:$|\s))", line)
        is not None
    )


def excerpt(
    batch_log: Path,
    batch_id: str,
    index: int,
    prompt: str,
    run_id: str,
    folder: str | None,
    why: str,
    own_files: tuple[str, ...] = (),
) -> str:
    """A prompt's ``run.log``: what it was in the shared invocation, its own lines, and the invocation's tail.
    A line is its own when it names the prompt, its run, its item folder or one of ``own_files`` (the exact
    names of its outputs in a flat layout) exactly."""
    try:
        lines = batch_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    marks = [f"video_{index}", prompt, run_id, *own_files] + ([folder] if folder else [])
    own = [line for line in lines if any(mentions(line, mark) for mark in marks)]
    head = [
        f"[cosmos-assets] generate of {prompt}: item {index} of the shared invocation {batch_id} "
        f"(its whole log: outputs/.batches/{batch_id}/run.log)",
        f"[cosmos-assets] outcome: {why}",
        "[cosmos-assets] lines of the invocation about this prompt:",
    ]
    tail = ["[cosmos-assets] the invocation's last lines:", *lines[-EXCERPT_TAIL_LINES:]]
    return "\n".join(head + own + tail) + "\n"
