"""An orphaned batch is adopted as a batch: a shared invocation whose orchestrator died is collected once, for all
of its prompts, by the next attempt of any of them (or of their range).

A prompt's left-behind run that belongs to a batch (its record's ``batch``) is not the prompt's own job: its container
and remote folder are the invocation's (``outputs/.batches/<batch_id>/``). So the attempt that finds it (the one-prompt
path, :func:`~cosmos_assets.runs.runner._run_stage`, which a range's prompts take too once a left-behind attempt is
found) collects the whole invocation: every member's record is found through the records' index (their run ids
share the request's base, ``<base>_p<n>``), the invocation is rebuilt from the members' prompt files (the same work:
each member's inputs digest is checked), and :func:`~cosmos_assets.runs.batch_run.run_batch` runs with what is left on
the host (``adopted``): the container attached to, or its outputs downloaded; nothing uploaded or started. Each
member is promoted or failed on its own, and items the invocation never ran go to its follow-up (``runs/ids.py``),
as for a batch that was never orphaned.

Only one process collects an invocation: the collector holds ``outputs/.batches/<batch_id>/collect.lock`` (an
exclusive ``flock``, released by the kernel when its process dies, so a collector killed in turn never blocks the
next). Another attempt of one of its prompts (several prompts of the batch retried in parallel Dagster runs) waits for
that lock, then finds its prompt's record final and takes its video from that invocation (the skip decision that
follows sees it done). Plain Python, no Dagster.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.base import Machine
from cosmos_assets.machines.job import InferenceJob, LogLine
from cosmos_assets.models.base import BatchRequest
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.adopt import abandon, earlier_attempt, newer_success, refuse_if_still_followed
from cosmos_assets.runs.batch_files import BatchFile
from cosmos_assets.runs.batch_members import BatchOptions, Member, PromptOutcome
from cosmos_assets.runs.batch_run import invocation_label, run_batch
from cosmos_assets.runs.ids import follow_up_id, run_id_base
from cosmos_assets.runs.options import RunOptions
from cosmos_assets.runs.plan import StagePlan
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.stage import RunTerminated, StageResult, clean_staging, planned_record, say
from cosmos_assets.runs.worker import Worker

LOCK_NAME = "collect.lock"
LOCK_POLL_SECONDS = 1.0
LEFT = {
    "running": "its container is still running",
    "exited_ok": "its container finished",
    "failed": "its container exited non-zero (each item's outcome is read from what it wrote)",
    "outputs": "its outputs are on the host",
}  # "failed" too: a batch's exit code is mapped item by item


def batch_members(store: RunStore, member: RunRecord) -> list[RunRecord]:
    """Every prompt's record of ``member``'s invocation, by item index, from the records' index (their run ids
    start with the request's base; the full scan reads every record when the index cannot be used)."""
    assert member.batch is not None
    batch_id, base = member.batch.batch_id, run_id_base(member.run_id)
    if base is None:
        return [member]
    prefix = f"{base}_p"

    def indexed(conn: sqlite3.Connection) -> list[RunRecord]:
        ids = store.index.run_ids(conn, "substr(run_id, 1, ?) = ?", (len(prefix), prefix), order="run_id")
        return [store.index.load(conn, run_id) for run_id in ids]

    def scanned(records: list[RunRecord]) -> list[RunRecord]:
        return [r for r in records if r.run_id.startswith(prefix)]

    found = store.lookup(indexed, scanned)
    mine = [r for r in found if r.batch is not None and r.batch.batch_id == batch_id and r.stage == member.stage]
    return sorted(mine, key=lambda r: r.batch.index if r.batch else 0)


@contextmanager
def collecting(
    folder: Path, log: LogLine, batch_id: str, poll: Callable[[], None] = lambda: time.sleep(LOCK_POLL_SECONDS)
) -> Iterator[None]:
    """Hold the invocation's collect lock; while another process holds it, wait, saying once who it is."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another process"
                    say(
                        log,
                        f"[cosmos-assets] the orphaned invocation {batch_id} is being collected by {holder}: "
                        "waiting for it, then taking this prompt's video from it",
                    )
                    said = True
                poll()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{Worker.current().to_text()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def collect_left_batch(
    layout: ProjectLayout,
    machine: Machine,
    probe: RunRecord,
    make_plan: Callable[[str, str, str], StagePlan],
    run: RunOptions,
) -> StageResult | None:
    """If ``probe``'s work was left behind in a batch, collect that invocation (or wait for whoever collects it).

    ``make_plan(model, prompt, run_id)``: a member's generation plan. Returns ``probe``'s result when this call
    promoted it; None when there is no such batch, someone else collected it (the caller's skip decision then finds
    the prompt done), or nothing of it was left (its records are closed: the caller runs the prompt anew)."""
    store = RunStore(layout.runs_dir)
    earlier = earlier_attempt(store, probe)
    if earlier is None or earlier.batch is None:
        return None
    batch_id = earlier.batch.batch_id
    options = BatchOptions.of(run.replace(num_gpus=earlier.num_gpus), batch_size=earlier.batch.batch_size or 1)
    log = options.log
    folder = layout.outputs_dir / ".batches" / batch_id

    def poll() -> None:
        if options.cancelled is not None and options.cancelled():
            raise RunTerminated(
                f"generate for {probe.prompt}: the run was terminated while it waited for the collector of "
                f"the invocation {batch_id}"
            )
        time.sleep(LOCK_POLL_SECONDS)

    with collecting(folder, log, batch_id, poll):
        members = batch_members(store, earlier)
        open_members = [m for m in members if not m.is_final or m.detached]
        if not any(m.prompt == probe.prompt for m in open_members):
            return None  # collected meanwhile by another attempt: the caller's skip decision takes it
        for member in open_members:
            refuse_if_still_followed(member, options.run_finished)  # its own orchestrator still runs it
        return _collect(layout, machine, probe, members, open_members, make_plan, options, folder)


def _collect(
    layout: ProjectLayout,
    machine: Machine,
    probe: RunRecord,
    members: list[RunRecord],
    open_members: list[RunRecord],
    make_plan: Callable[[str, str, str], StagePlan],
    options: BatchOptions,
    folder: Path,
) -> StageResult | None:
    log, store = options.log, RunStore(layout.runs_dir)
    first = members[0]
    assert first.batch is not None
    batch_id = first.batch.batch_id
    settled = _settled_items(folder)
    if settled is not None:  # the invocation was settled; its orchestrator died before the follow-up ran
        return _follow_up(layout, machine, probe, members, open_members, settled, make_plan, options)
    if len(open_members) < len(members):  # it died while settling the items: the rest are not collected again
        _close(layout, open_members, f"its invocation {batch_id} was being settled when its orchestrator died", log)
        return None
    rebuilt = _rebuild(layout, machine, members, make_plan, options)
    if isinstance(rebuilt, str):
        _close(layout, open_members, f"the orphaned invocation {batch_id} cannot be rebuilt ({rebuilt})", log)
        return None
    group, job, batch = rebuilt
    first_video = f"{batch.item_names[0]}.mp4" if batch.item_names else f"{batch.item_folders[0]}/{batch.item_video}"
    output_file = f"{job.output_folder}/{first_video}"
    state = machine.job_state(job, output_file)
    if state not in LEFT:
        _close(layout, open_members, f"nothing of its invocation {batch_id} is left on {machine.label}", log)
        return None
    superseded = {m.run_id: done for m in open_members if (done := newer_success(store, m)) is not None}
    if len(superseded) == len(open_members):
        machine.stop(job, log)
        _close(
            layout,
            open_members,
            f"superseded: each prompt of the invocation {batch_id} has a newer successful run, "
            f"so its container on {machine.label} was stopped",
            log,
        )
        return None
    for member in group:  # collected with the others, never promoted over the newer run's outputs
        if (done := superseded.get(member.record.run_id)) is not None:
            member.superseded = (
                f"superseded: run {done.run_id} did this work on {done.host} and succeeded, so this "
                f"item of the invocation {batch_id} is not promoted over its outputs"
            )
    say(
        log,
        f"[cosmos-assets] adopting the invocation {batch_id} ({len(members)} prompts: "
        f"{', '.join(m.prompt for m in members)}) left behind on {machine.label} by "
        f"{first.worker or 'an earlier process'}: {LEFT[state]}; one collection for all of them, nothing started",
    )
    for member in group:
        record = member.record
        record.detached, record.error, record.cause = False, None, None
        record.gpu_price_per_hour = (
            record.gpu_price_per_hour if record.gpu_price_per_hour is not None else options.gpu_price_per_hour
        )
        record.adopted_by = [*record.adopted_by, options.dagster_run_id or "(no Dagster run)"]
    outcomes = {m.prompt: PromptOutcome(m.prompt) for m in group}
    run_batch(layout, machine, group, batch_id, options, outcomes, follow_up_of=first.batch.follow_up_of, adopted=state)
    return _probe_result(outcomes, probe)


def _rebuild(
    layout: ProjectLayout,
    machine: Machine,
    members: list[RunRecord],
    make_plan: Callable[[str, str, str], StagePlan],
    options: BatchOptions,
) -> tuple[list[Member], InferenceJob, BatchRequest] | str:
    """The invocation's members and job as they were started, or why not (a member's prompt changed since)."""
    group: list[Member] = []
    for record in members:
        try:
            backend = backend_named(record.model)
            plan = make_plan(record.model, record.prompt, record.run_id)
            again = planned_record(layout, machine, backend, plan)
        except Exception as error:  # noqa: BLE001 - a prompt file broken since: said, the batch not adopted
            _clean_all(group)
            return f"{record.prompt}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        if again.inputs_digest() != record.inputs_digest():
            _clean_all(group)
            clean_staging(plan.effective_spec.parent, plan)
            return f"the inputs of {record.prompt} changed since it started"
        group.append(
            Member(
                record.prompt, backend, plan, record, lambda rid, m=record.model, p=record.prompt: make_plan(m, p, rid)
            )
        )
    first = members[0]
    assert first.batch is not None
    if len(group) != first.batch.items:
        _clean_all(group)
        return f"{first.batch.items - len(group)} of its prompts' records are missing"
    backend = group[0].backend
    batch = backend.batch_generation(
        first.batch.batch_id, [m.item for m in group], first.num_gpus, first.batch.batch_size or 1
    )
    job = InferenceJob(
        run_id=first.batch.batch_id,
        dagster_run_id=options.dagster_run_id,
        stage="generate",
        prompt=invocation_label(group),
        invocation=batch.request.invocation,
        inputs=[],
        project_root=layout.root,
    )
    return group, job, batch


def _clean_all(group: list[Member]) -> None:
    for member in group:
        clean_staging(member.plan.effective_spec.parent, member.plan)


def _settled_items(folder: Path) -> dict[str, str] | None:
    """Run id -> item status of an invocation already settled (its ``batch.json`` written), else None."""
    try:
        content = BatchFile.model_validate_json((folder / "batch.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {item.run_id: item.status for item in content.items}


def _follow_up(
    layout: ProjectLayout,
    machine: Machine,
    probe: RunRecord,
    members: list[RunRecord],
    open_members: list[RunRecord],
    settled: dict[str, str],
    make_plan: Callable[[str, str, str], StagePlan],
    options: BatchOptions,
) -> StageResult | None:
    """The items a settled invocation never ran, whose follow-up its dead orchestrator did not start: run now as that
    follow-up (``<batch_id>_f<m+1>``), as it would have."""
    batch_id = members[0].batch.batch_id if members[0].batch else ""
    unrun = [m for m in open_members if settled.get(m.run_id) == "not_run"]
    others = [m for m in open_members if m not in unrun]
    if others:
        _close(layout, others, f"the invocation {batch_id} was settled without it", options.log)
    if not unrun:
        return None
    group = []
    for record in unrun:
        backend = backend_named(record.model)
        group.append(
            Member(
                record.prompt,
                backend,
                make_plan(record.model, record.prompt, record.run_id),
                record,
                lambda rid, m=record.model, p=record.prompt: make_plan(m, p, rid),
            )
        )
        record.state, record.exit_code = "planned", None
    say(
        options.log,
        f"[cosmos-assets] batch {batch_id}: {len(group)} prompt(s) it did not run were left without "
        f"their follow-up ({', '.join(m.prompt for m in group)}); running it now",
    )
    outcomes = {m.prompt: PromptOutcome(m.prompt) for m in group}
    run_batch(layout, machine, group, follow_up_id(batch_id), options, outcomes, follow_up_of=batch_id)
    return _probe_result(outcomes, probe)


def _probe_result(outcomes: dict[str, PromptOutcome], probe: RunRecord) -> StageResult | None:
    outcome = outcomes.get(probe.prompt)
    if outcome is None:
        return None
    if outcome.error is not None:
        raise outcome.error
    return outcome.result


def _close(layout: ProjectLayout, records: list[RunRecord], why: str, log: LogLine) -> None:
    store = RunStore(layout.runs_dir)
    for record in records:
        say(
            log,
            f"[cosmos-assets] earlier run {record.run_id} of {record.stage} for {record.prompt} cannot be "
            f"adopted ({why}); it runs anew",
        )
        abandon(store, layout.history_log, record, why)
