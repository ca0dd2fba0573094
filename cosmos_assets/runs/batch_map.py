"""Which output of a batch invocation belongs to which prompt, checked, never assumed from position alone.

Upstream's batch mode (docs/upstream/transfer1.md#batch-mode) writes item ``i`` into ``video_<i>/`` and its final prompt into
``video_<i>/prompt.txt``, except when the guardrail blocks: with ``--batch_size`` 1 a blocked item ends the whole
invocation (a TypeError; items before it saved, items after it never run); with a larger batch size the blocked
items are dropped and the survivors are saved by their position in the shorter list, so a survivor can sit in
another item's folder. So an output is given to the item whose text its ``prompt.txt`` holds (the texts of one
invocation are distinct, :mod:`cosmos_assets.runs.batch` makes sure), and only when that text cannot be checked
(the prompt upsampler rewrites it; the batch size is then 1) to the item of its folder. A folder nobody claims is
left alone. Plain Python, no Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ItemStatus = Literal["succeeded", "blocked", "failed", "not_run"]


@dataclass(frozen=True)
class ItemOutcome:
    """What became of one item: its status, its output folder (succeeded only) and why, in one line."""

    status: ItemStatus
    folder: str | None
    why: str


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def claimed_folders(
    fetched: Path | None, texts: tuple[str | None, ...], folders: tuple[str, ...], prompt_file: str, video: str
) -> tuple[dict[int, str], list[str]]:
    """Item index -> the folder (under ``fetched``) holding its video, and the folders with a video nobody claims."""
    if fetched is None or not fetched.is_dir():
        return {}, []
    written = sorted(p.name for p in fetched.iterdir() if p.is_dir() and (p / video).is_file())
    by_text: dict[str, list[str]] = {}
    for name in written:
        text = _read_text(fetched / name / prompt_file)
        if text is not None:
            by_text.setdefault(text.strip(), []).append(name)
    claimed: dict[int, str] = {}
    for index, text in enumerate(texts):
        if text is None:  # not checkable by text: the batch size is 1, so its folder was written by it alone
            if folders[index] in written:
                claimed[index] = folders[index]
            continue
        holders = by_text.get(text.strip(), [])
        if len(holders) == 1:
            claimed[index] = holders[0]
    unclaimed = [name for name in written if name not in claimed.values()]
    return claimed, unclaimed


def claimed_by_name(fetched: Path | None, names: tuple[str, ...]) -> dict[int, str]:
    """Flat layouts (Transfer2.5): item i's video is ``<name>.mp4`` beside the others', the names unique."""
    if fetched is None or not fetched.is_dir():
        return {}
    return {index: name for index, name in enumerate(names) if (fetched / f"{name}.mp4").is_file()}


def own_files(fetched: Path, files: tuple[str, ...]) -> list[Path]:
    """An item's files in a flat output folder: those whose name is one of ``files`` (the exact names its backend
    says it may own, :attr:`~cosmos_assets.models.base.BatchRequest.item_files`), never by prefix."""
    return [fetched / name for name in files if (fetched / name).is_file()]


def unclaimed_files(
    fetched: Path | None, item_files: tuple[tuple[str, ...], ...], shared: tuple[str, ...]
) -> list[str]:
    """Files of a flat output folder that are no item's and not the invocation's own (its logs and config)."""
    if fetched is None or not fetched.is_dir():
        return []
    known = {name for files in item_files for name in files} | set(shared)
    return sorted(p.name for p in fetched.iterdir() if p.name not in known)


def map_outputs(
    fetched: Path | None,
    texts: tuple[str | None, ...],
    folders: tuple[str, ...],
    prompt_file: str,
    batch_size: int,
    exit_code: int,
    guardrail_seen: bool,
    video: str = "output.mp4",
    names: tuple[str, ...] | None = None,
) -> list[ItemOutcome]:
    """Every item's outcome. Items run in windows of ``batch_size``; when the invocation failed (``exit_code`` != 0),
    the windows after the last one that saved a video did not run, except the first of them, where it stopped.
    A missing video where the guardrail spoke is a block; items after a guardrail crash are ``not_run`` (a follow-up
    runs them); after any other crash they failed, and so did a missing video without a guardrail line."""
    claimed = (
        claimed_by_name(fetched, names)
        if names is not None
        else claimed_folders(fetched, texts, folders, prompt_file, video)[0]
    )
    size = max(1, batch_size)
    windows = [list(range(start, min(start + size, len(texts)))) for start in range(0, len(texts), size)]
    last_saved = max((w for w, members in enumerate(windows) if any(i in claimed for i in members)), default=-1)
    stopped_at = None if exit_code == 0 else last_saved + 1
    outcomes: list[ItemOutcome] = []
    for w, members in enumerate(windows):
        for index in members:
            if index in claimed:
                if names is not None:
                    outcomes.append(ItemOutcome("succeeded", claimed[index], f"{claimed[index]}.mp4 (its own name)"))
                    continue
                checked = "its prompt.txt holds its prompt" if texts[index] is not None else "its own folder"
                outcomes.append(ItemOutcome("succeeded", claimed[index], f"{claimed[index]}/{video} ({checked})"))
            elif stopped_at is not None and w > stopped_at:
                if guardrail_seen:
                    outcomes.append(
                        ItemOutcome(
                            "not_run", None, "did not run: the guardrail block of an earlier item ended the invocation"
                        )
                    )
                else:
                    outcomes.append(
                        ItemOutcome(
                            "failed",
                            None,
                            f"did not run: the invocation ended (exit code {exit_code}) before this item",
                        )
                    )
            elif guardrail_seen:
                outcomes.append(
                    ItemOutcome("blocked", None, "the guardrail blocked it (retrying the same input will not help)")
                )
            elif stopped_at is not None:
                outcomes.append(
                    ItemOutcome("failed", None, f"the invocation failed (exit code {exit_code}) at this item")
                )
            else:
                outcomes.append(ItemOutcome("failed", None, f"the invocation exited 0 but wrote no {video} for it"))
    return outcomes
