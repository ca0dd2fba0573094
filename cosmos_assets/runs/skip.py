"""Skip what is done: a stage whose work equals its last successful run's, with those outputs still in place, is not
run again (unless forced).

"The same work" is an equal :meth:`~cosmos_assets.runs.record.RunRecord.inputs_digest` (stage, model, spec, every
input's content, the settings, the GPU count and the machine's configured image, all known before anything is sent).
"Still in place" means every file the successful run left in ``outputs/<prompt>/`` (or ``_upscaled/``) is there with
the same sha256 (:attr:`~cosmos_assets.runs.record.RunRecord.output_files`). Only the newest successful run of the
prompt and stage is compared: once a different run has succeeded, its outputs are the ones in the folder. A
reproduction (``cosmos-assets reproduce``, :mod:`cosmos_assets.runs.reproduce`) writes elsewhere and never counts.
Plain Python, no Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cosmos_assets.files import sha256_file
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore


@dataclass(frozen=True)
class SkipDecision:
    """Whether to skip, why (one line, for the log and the metadata), and the run whose outputs stand if skipped."""

    skip: bool
    reason: str
    matches: RunRecord | None = None


def last_success(store: RunStore, prompt: str, stage: str) -> RunRecord | None:
    """The newest succeeded run of ``prompt`` and ``stage`` into its own folder (not a reproduction), if any (from the
    records' index; the same as
    :func:`last_success_in` over every record)."""
    return store.lookup(
        lambda conn: store.index.first(
            conn,
            "prompt = ? AND stage = ? AND state = 'succeeded' AND reproduces IS NULL",
            (prompt, stage),
            order="done_us DESC, created_us ASC, name ASC",
        ),
        lambda records: last_success_in(records, prompt, stage),
    )


def last_success_in(records: list[RunRecord], prompt: str, stage: str) -> RunRecord | None:
    """:func:`last_success` over ``records`` (oldest first), reading each."""
    done = [r for r in records if (r.prompt, r.stage, r.state) == (prompt, stage, "succeeded") and r.reproduces is None]
    return max(done, key=lambda r: r.finished_at or r.updated_at) if done else None


def changed_output(root: Path, record: RunRecord) -> str | None:
    """The first output of ``record`` that is missing or changed under ``root`` (None: all as the run left them)."""
    if not record.output_files:
        return "its record lists no output hashes (a run from before skipping existed)"
    for item in record.output_files:
        path = root / item.path
        if not path.is_file():
            return f"{item.path} is missing"
        if path.stat().st_size != item.size or sha256_file(path) != item.sha256:
            return f"{item.path} has changed"
    return None


def decide(store: RunStore, root: Path, probe: RunRecord, *, force: bool = False) -> SkipDecision:
    """Skip ``probe`` (a planned, unsaved record) when its last successful run did the same work and left its outputs."""
    if force:
        return SkipDecision(False, "forced (run config force=true)")
    done = last_success(store, probe.prompt, probe.stage)
    if done is None:
        return SkipDecision(False, f"no earlier successful {probe.stage} of {probe.prompt}")
    if done.inputs_digest() != probe.inputs_digest():
        return SkipDecision(False, f"the inputs differ from those of its last successful run {done.run_id}")
    changed = changed_output(root, done)
    if changed is not None:
        return SkipDecision(False, f"the outputs of run {done.run_id} are not as it left them: {changed}")
    when = done.finished_at or done.updated_at
    return SkipDecision(
        True,
        f"same inputs as run {done.run_id} (succeeded {when:%Y-%m-%d %H:%M:%S} UTC), whose outputs are unchanged",
        done,
    )
