"""Adopt, don't repeat: a new attempt of a prompt and stage first looks for an earlier run doing the same work.

"The same work" is an equal :meth:`~cosmos_assets.runs.record.RunRecord.inputs_digest` (spec, every input's content,
model, image, settings, GPUs) on the same host. Only runs left behind are looked at: a record that never reached a
final state (its orchestrator died: SIGKILL, power loss) or one that failed with its container or outputs left on
the host (``detached``: the link stayed down, or the local download failed). The machine then says what is left
(:meth:`~cosmos_assets.machines.base.Machine.job_state`): a running or finished container is attached to, outputs
without a container are downloaded, and nothing (or a failed container) means a new run. A record whose worker is
still alive is someone else's run in progress: refused, naming it and how to stop it. Where the worker cannot be
judged from here (another machine, another container) but the Dagster run it belonged to has finished (failed by
Dagster's run monitoring when its run worker container died, then retried), nobody follows it any more.

A left-behind run whose work a newer run has since done (a pool failed it over to another host while this one was
unreachable: docs/hosts.md) is *superseded*: never adopted nor promoted over the newer outputs. When an attempt of
that work reaches its host again, its container is stopped and removed and its record closed, naming the newer run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from sqlite3 import Connection

from cosmos_assets.machines.base import JobState, Machine
from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, LogLine
from cosmos_assets.runs.history import append_history
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_index import UNFINISHED, created_us
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.worker import Worker

ADOPTABLE_STATES: frozenset[str] = frozenset({"running", "exited_ok", "outputs"})


@dataclass(frozen=True)
class Adoption:
    """An earlier run to take over, and what of its job is left on the machine."""

    record: RunRecord
    state: JobState


def earlier_attempt(store: RunStore, probe: RunRecord) -> RunRecord | None:
    """The newest left-behind run of the same work as ``probe`` (see the module doc), if any; from the records'
    index, the same as :func:`earlier_attempt_in` over every record."""
    return store.lookup(
        lambda conn: store.index.first(
            conn,
            f"prompt = ? AND stage = ? AND host = ? AND run_id != ? AND digest = ? AND {UNFINISHED} "
            "AND reproduces IS NULL",
            (probe.prompt, probe.stage, probe.host, probe.run_id, probe.inputs_digest()),
            order="created_us DESC, name DESC",
        ),
        lambda records: earlier_attempt_in(records, probe),
    )


def earlier_attempt_in(records: list[RunRecord], probe: RunRecord) -> RunRecord | None:
    """:func:`earlier_attempt` over ``records`` (oldest first), reading each."""
    digest = probe.inputs_digest()
    for record in reversed(records):
        if record.run_id == probe.run_id or (record.prompt, record.stage, record.host) != (
            probe.prompt,
            probe.stage,
            probe.host,
        ):
            continue
        if record.reproduces is not None:  # a reproduction writes elsewhere: never adopted as the prompt's run
            continue
        if (not record.is_final or record.detached) and record.inputs_digest() == digest:
            return record
    return None


def superseded_by(records: list[RunRecord], left: RunRecord) -> RunRecord | None:
    """The newest successful run of ``left``'s prompt and stage started after it (on any host), if any: its work is
    done, so ``left`` must not pin the work to its host nor be collected over that run's outputs."""
    newer = [
        r
        for r in records
        if (r.prompt, r.stage) == (left.prompt, left.stage)
        and r.run_id != left.run_id
        and r.state == "succeeded"
        and r.created_at > left.created_at
        and r.reproduces is None
    ]
    return max(newer, key=lambda r: r.created_at) if newer else None


def newer_success(store: RunStore, left: RunRecord) -> RunRecord | None:
    """:func:`superseded_by` over ``store``'s records, from their index."""
    return store.lookup(
        lambda conn: newer_success_in_index(store, conn, left), lambda records: superseded_by(records, left)
    )


def newer_success_in_index(store: RunStore, conn: Connection, left: RunRecord) -> RunRecord | None:
    return store.index.first(
        conn,
        "prompt = ? AND stage = ? AND run_id != ? AND state = 'succeeded' AND created_us > ? AND reproduces IS NULL",
        (left.prompt, left.stage, left.run_id, created_us(left)),
        order="created_us DESC, name ASC",
    )


def refuse_if_still_followed(record: RunRecord, run_finished: Callable[[str], bool] | None = None) -> None:
    """An unfinished run whose orchestrating process is alive is in progress elsewhere: refuse to run it twice.

    ``run_finished(dagster_run_id)``: whether that Dagster run has ended (the Dagster edge knows; plain callers pass
    nothing)."""
    if record.is_final or not record.worker:
        return
    worker = Worker.from_text(record.worker)
    if worker is None or worker == Worker.current() or worker.provably_dead():
        return
    if run_finished is not None and record.dagster_run_id and run_finished(record.dagster_run_id):
        return
    stop = (
        f"terminate Dagster run {record.dagster_run_id} (UI, or `dagster run terminate {record.dagster_run_id}`)"
        if record.dagster_run_id
        else f"stop process {worker.pid} on {worker.host}"
    )
    raise HostNotReadyError(
        f"run {record.run_id} ({record.stage} of {record.prompt}, the same inputs) is still in progress on {record.host}, "
        f"followed by {worker}; wait for it, or {stop} and materialize again."
    )


def abandon(store: RunStore, history_log: Path, record: RunRecord, why: str) -> None:
    """Close a left-behind record that cannot be adopted (its job failed or is gone): failed, with the reason."""
    record.state = "failed"
    record.cause = record.cause or "orchestrator_died"
    record.detached = False
    record.error = f"abandoned: {why}"
    record.finished_at = record.finished_at or datetime.now(UTC)
    store.save(record)
    append_history(history_log, record.history())


def find_adoption(
    store: RunStore,
    history_log: Path,
    machine: Machine,
    probe: RunRecord,
    job_of: Callable[[str], InferenceJob],
    output_file_of: Callable[[InferenceJob], str],
    log: LogLine,
    run_finished: Callable[[str], bool] | None = None,
) -> Adoption | None:
    """The earlier run to adopt for ``probe``, or None (start a new one); closes earlier runs that left nothing."""
    earlier = earlier_attempt(store, probe)
    if earlier is None:
        return None
    refuse_if_still_followed(earlier, run_finished)
    job = job_of(earlier.run_id)
    done = newer_success(store, earlier)
    if done is not None:
        machine.stop(job, log)  # whatever of it is left here: the work was done elsewhere
        why = (
            f"superseded: run {done.run_id} did this work on {done.host} and succeeded, so this run's container on "
            f"{machine.label} was stopped and its outputs are not collected"
        )
        log(
            f"[cosmos-assets] earlier run {earlier.run_id} of {probe.stage} for {probe.prompt} left on {machine.label}: {why}"
        )
        abandon(store, history_log, earlier, why)
        return None
    state = machine.job_state(job, output_file_of(job))
    if state in ADOPTABLE_STATES:
        what = {
            "running": "its container is still running: attaching to its log",
            "exited_ok": "its container finished: collecting its log and outputs",
            "outputs": "its outputs are on the host: downloading them, no container started",
        }[state]
        log(
            f"[cosmos-assets] adopting earlier run {earlier.run_id} of {probe.stage} for {probe.prompt} "
            f"(same inputs, left behind by {earlier.worker or 'an earlier process'}): {what}"
        )
        return Adoption(earlier, state)
    why = "its container exited non-zero" if state == "failed" else f"nothing of its job is left on {machine.label}"
    log(
        f"[cosmos-assets] earlier run {earlier.run_id} of {probe.stage} for {probe.prompt} cannot be adopted ({why}); "
        "starting a new run"
    )
    abandon(store, history_log, earlier, why)
    return None
