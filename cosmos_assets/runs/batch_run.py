"""One shared invocation of the model for a group of prompts that share a model load (:mod:`cosmos_assets.runs.batch`
groups them): its inputs staged once, one container, each item's outputs mapped back to its prompt
(:mod:`cosmos_assets.runs.batch_map`) and promoted or failed on its own, the items a guardrail crash left unrun sent to a
follow-up invocation; ``batch.json`` and each prompt's log excerpt. Also what an orphaned batch's collection
(:mod:`cosmos_assets.runs.batch_adopt`) runs again, with nothing uploaded or started. Plain Python, no Dagster.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from cosmos_assets.files import atomic_write_json, atomic_write_text
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.base import JobState, Machine
from cosmos_assets.machines.job import InferenceJob, LogLine, RunOutcome, StagedFile
from cosmos_assets.models.base import BatchRequest, ModelBackend
from cosmos_assets.runs import identity
from cosmos_assets.runs.adopt import abandon
from cosmos_assets.runs.batch_files import BatchFile, BatchItemRecord, excerpt
from cosmos_assets.runs.batch_map import ItemOutcome, claimed_folders, map_outputs, own_files, unclaimed_files
from cosmos_assets.runs.batch_members import BatchOptions, Member, PromptOutcome
from cosmos_assets.runs.ids import follow_up_id
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.run_log import RunLog
from cosmos_assets.runs.spec_used import BatchRef
from cosmos_assets.runs.stage import (
    InferenceFailed,
    failed_dir,
    promote,
    record_failure,
    run_watched,
    say,
    set_aside_partial,
    timed_transfer,
)
from cosmos_assets.runs.worker import Worker

BATCH_GUARDRAIL_LINES = ("GUARDRAIL BLOCKED", "Guardrail blocked generation")


def invocation_label(group: list[Member]) -> str:
    """The invocation's name on the host (container label and name): its prompts, shortened."""
    label = "+".join(m.prompt for m in group)
    return label if len(label) <= 120 else f"{label[:100]}+{len(group)}-prompts"


def _save_all(store: RunStore, group: list[Member], state: str) -> None:
    for member in group:
        member.record.state = state  # type: ignore[assignment]
        store.save(member.record)


def _guardrail_seen(batch_log: Path, flagged: bool) -> bool:
    try:
        text = batch_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return flagged
    return flagged or any(marker in text for marker in BATCH_GUARDRAIL_LINES)


def _stage_inputs(layout: ProjectLayout, batch: BatchRequest, folder: Path, group: list[Member]) -> list[StagedFile]:
    """The batch's spec and JSONL (written into its local folder) and every item's videos, each once."""
    spec_local = folder / "spec.json"
    atomic_write_json(spec_local, batch.request.spec)
    staged = [StagedFile(local=spec_local, remote=batch.request.spec_remote)]
    if batch.batch_file is not None:
        remote, content = batch.batch_file
        atomic_write_text(folder / "batch.jsonl", content)
        staged.append(StagedFile(local=folder / "batch.jsonl", remote=remote))
    seen = {item.remote for item in staged}
    for member in group:
        for item in member.plan.job.inputs:  # its own spec too: Transfer2.5 reads each (transfer.py does not)
            if item.remote not in seen:
                seen.add(item.remote)
                staged.append(item)
    return staged


def run_batch(
    layout: ProjectLayout,
    machine: Machine,
    group: list[Member],
    batch_id: str,
    options: BatchOptions,
    outcomes: dict[str, PromptOutcome],
    follow_up_of: str | None = None,
    adopted: JobState | None = None,
) -> None:
    """One invocation for ``group`` (one backend, one batch key); each prompt promoted or failed on its own, the
    items a guardrail crash left unrun sent to a follow-up invocation. ``adopted``: the invocation was started by an
    orchestrator that died, and this is what is left of it on the host (runs/batch_adopt.py): nothing is uploaded or
    started, its container is attached to (or its outputs downloaded), then it is settled as any invocation."""
    backend, log, store = group[0].backend, options.log, RunStore(layout.runs_dir)
    folder = layout.outputs_dir / ".batches" / batch_id
    try:
        batch = backend.batch_generation(batch_id, [m.item for m in group], options.num_gpus, options.batch_size)
        folder.mkdir(parents=True, exist_ok=True)
        job = InferenceJob(
            run_id=batch_id,
            dagster_run_id=options.dagster_run_id,
            stage=group[0].plan.stage,
            prompt=invocation_label(group),
            invocation=batch.request.invocation,
            inputs=_stage_inputs(layout, batch, folder, group),
            project_root=layout.root,
        )
    except Exception as error:  # noqa: BLE001 - the batch cannot be described or staged: each of its prompts fails
        for member in group:
            _fail(layout, member, error, "planned", log, outcomes)
        return
    for index, member in enumerate(group):
        member.record.batch = BatchRef(
            batch_id=batch_id,
            index=index,
            items=len(group),
            gpu_share=1 / len(group),
            follow_up_of=follow_up_of,
            batch_size=batch.batch_size,
            taken_for=member.taken_for,
        )
        member.record.remote_output_folder = f"{job.output_folder}/{batch.item_folders[index]}"
        member.record.worker = Worker.current().to_text()
        store.save(member.record)
    batch_log = folder / "run.log"
    run_log = RunLog(batch_log, log)
    run_log(
        f"[cosmos-assets] {group[0].plan.stage} of {len(group)} prompts in one invocation {batch_id} on {machine.label} "
        f"({backend.label}), batch size {batch.batch_size}" + (f"; follow-up of {follow_up_of}" if follow_up_of else "")
    )
    for index, member in enumerate(group):
        run_log(
            f"[cosmos-assets] item {index}: {member.prompt} (run {member.record.run_id}) -> {batch.item_folders[index]}/"
        )
    if adopted is not None:
        run_log(
            f"[cosmos-assets] adopting the invocation {batch_id} its orchestrator left behind (what is left on "
            f"{machine.label}: {adopted}); nothing is uploaded or started again"
        )
    phase, fetched, download = "planned", folder / "fetched", None
    try:
        if adopted is None:
            if batch.request.program_files:
                machine.upload(batch.request.program_files, run_log)
            machine.preflight(job, run_log)
            identity.after_preflight(machine, job, [m.record for m in group], run_log)
            phase = "uploading"
            _save_all(store, group, phase)
            timed_transfer([m.record for m in group], "upload", lambda: machine.upload(job.inputs, run_log))
        command = (
            group[0].record.command if adopted is not None and group[0].record.command else machine.command_for(job)
        )
        for member in group:
            member.record.command = command
        phase = "running"
        _save_all(store, group, phase)
        run_log("[cosmos-assets] command: " + group[0].record.command_line)
        outcome = (
            run_watched(
                layout,
                machine,
                job,
                group[0].record,
                group[0].plan,
                run_log,
                options.silence_minutes,
                options.cancelled,
            )
            if adopted != "outputs"
            else left_outputs(group[0].record, command)
        )
        for member in group:
            member.record.ran(command, outcome)
        identity.note_revisions(machine, job, [m.record for m in group])
        phase = "downloading"
        _save_all(store, group, phase)
        try:
            download = timed_transfer(
                [m.record for m in group], "download", lambda: machine.download(job.output_folder, fetched, run_log)
            )
        except FileNotFoundError:
            if outcome.exit_code == 0:
                raise
            run_log(
                f"[cosmos-assets] the invocation left no output folder {job.output_folder} (exit code {outcome.exit_code})"
            )
    except BaseException as error:
        run_log.close()
        for member in group:
            _fail(layout, member, error, phase, log, outcomes)
        if isinstance(error, Exception):
            return
        raise
    run_log.close()
    guardrail = _guardrail_seen(batch_log, outcome.guardrail_blocked)
    results = map_outputs(
        fetched if download is not None else None,
        batch.item_texts,
        batch.item_folders,
        batch.prompt_file,
        batch.batch_size,
        outcome.exit_code,
        guardrail,
        video=batch.item_video,
        names=batch.item_names,
    )
    unclaimed = (
        unclaimed_files(fetched if download is not None else None, batch.item_files, batch.shared_files)
        if batch.item_files is not None
        else claimed_folders(
            fetched if download is not None else None,
            batch.item_texts,
            batch.item_folders,
            batch.prompt_file,
            batch.item_video,
        )[1]
    )
    ran = [r for r in results if r.status != "not_run"]
    share = 1 / len(ran) if ran else 0.0
    left: list[Member] = []
    for index, (member, result) in enumerate(zip(group, results)):
        if result.status == "not_run":
            left.append(member)
            continue
        assert member.record.batch is not None
        member.record.batch = member.record.batch.model_copy(update={"gpu_share": share})
        _settle(
            layout,
            backend,
            member,
            index,
            result,
            batch_id,
            batch_log,
            fetched,
            download,
            job,
            log,
            outcomes,
            flat=batch.item_files[index] if batch.item_files is not None else None,
            nested=batch.nested,
        )
    _write_batch_file(
        folder, batch_id, options, backend, machine, batch, group, results, unclaimed, outcome.exit_code, follow_up_of
    )
    if unclaimed:
        why = (
            "are files no sample of the batch is named for"
            if batch.item_files is not None
            else "hold a video no prompt of the batch claims (its prompt.txt matches none)"
        )
        say(
            log,
            f"[cosmos-assets] batch {batch_id}: {', '.join(unclaimed)} {why}; left in outputs/.batches, "
            "attached to no prompt",
        )
    if left:
        say(
            log,
            f"[cosmos-assets] batch {batch_id}: {len(left)} prompt(s) did not run ({', '.join(m.prompt for m in left)}); "
            "running them in a follow-up invocation",
        )
        for member in left:
            member.record.state = "planned"
            member.record.exit_code = None
        run_batch(layout, machine, left, follow_up_id(batch_id), options, outcomes, follow_up_of=batch_id)


def left_outputs(record: RunRecord, command: list[str]) -> RunOutcome:
    """An adopted invocation whose container is gone but whose outputs are on the host: taken as having exited 0
    (what it wrote is mapped item by item; an item without its video fails as any such item does)."""
    now = datetime.now(UTC)
    return RunOutcome(exit_code=0, command=command, started_at=record.started_at or now, finished_at=now)


def _write_batch_file(
    folder: Path,
    batch_id: str,
    options: BatchOptions,
    backend: ModelBackend,
    machine: Machine,
    batch: BatchRequest,
    group: list[Member],
    results: list[ItemOutcome],
    unclaimed: list[str],
    exit_code: int,
    follow_up_of: str | None,
) -> None:
    content = BatchFile(
        batch_id=batch_id,
        dagster_run_id=options.dagster_run_id,
        model=backend.name,
        host=machine.label,
        batch_size=batch.batch_size,
        command=group[0].record.command,
        exit_code=exit_code,
        follow_up_of=follow_up_of,
        unclaimed_folders=unclaimed,
        items=[
            BatchItemRecord(
                index=i, prompt=m.prompt, run_id=m.record.run_id, status=r.status, folder=r.folder, why=r.why
            )
            for i, (m, r) in enumerate(zip(group, results))
        ],
    )
    atomic_write_text(folder / "batch.json", content.model_dump_json(indent=2) + "\n")


def _settle(
    layout: ProjectLayout,
    backend: ModelBackend,
    member: Member,
    index: int,
    result: ItemOutcome,
    batch_id: str,
    batch_log: Path,
    fetched: Path,
    download,
    job: InferenceJob,
    log: LogLine,
    outcomes: dict[str, PromptOutcome],
    flat: tuple[str, ...] | None = None,
    nested: bool = False,
) -> None:
    """One item after the invocation: promoted into ``outputs/<prompt>/``, or failed (blocked) with its reason.
    ``flat``: a flat layout's exact file names this item may own."""
    plan, record = member.plan, member.record
    staging = plan.effective_spec.parent
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        staging / plan.log_name,
        excerpt(batch_log, batch_id, index, member.prompt, member.record.run_id, result.folder, result.why, flat or ()),
    )
    if member.superseded is not None:
        abandon(RunStore(layout.runs_dir), layout.history_log, record, member.superseded)
        return
    if result.status == "succeeded" and result.folder is not None:
        item_fetched = staging / "fetched"
        set_aside_partial(item_fetched)
        if flat is not None:  # its files sit beside the other items' (and the shared logs), named exactly
            item_fetched.mkdir(parents=True)
            for path in own_files(fetched, flat):
                shutil.move(str(path), str(item_fetched / path.name))
            record.remote_output_folder = job.output_folder
        elif nested:  # <name>/ stays a folder, as the model writes it for one sample alone
            item_fetched.mkdir(parents=True)
            shutil.move(str(fetched / result.folder), str(item_fetched / result.folder))
            record.remote_output_folder = job.output_folder
        else:
            shutil.move(str(fetched / result.folder), str(item_fetched))
            record.remote_output_folder = f"{job.output_folder}/{result.folder}"
        video = backend.output_video(item_fetched, member.prompt)
        if not video.exists():
            result = ItemOutcome("failed", None, f"its outputs hold no usable video ({video.name})")
            _settle(layout, backend, member, index, result, batch_id, batch_log, fetched, download, job, log, outcomes)
            return
        try:
            outcomes[member.prompt].result = promote(layout, backend, plan, record, item_fetched, log, member.t0)
        except Exception as error:  # noqa: BLE001 - a local disk error: this prompt fails, the others go on
            _fail(layout, member, error, "downloading", log, outcomes)
        return
    blocked = result.status == "blocked"
    log_path = failed_dir(layout, record) / plan.log_name
    error = InferenceFailed(
        f"{plan.stage} for {member.prompt} failed on {record.host} in the shared invocation {batch_id} "
        f"(item {index}): {result.why}. Log: {log_path}",
        record.log_tail,
        blocked,
        log_path,
        cause="guardrail_blocked" if blocked else "model_exit",
    )
    _fail(layout, member, error, "running", log, outcomes, error_text=result.why)


def _fail(
    layout: ProjectLayout,
    member: Member,
    error: BaseException,
    phase: str,
    log: LogLine,
    outcomes: dict[str, PromptOutcome],
    error_text: str | None = None,
) -> None:
    """Record a prompt's failure as the runner does (state, cause, ``outputs/.failed``, history)."""
    record_failure(
        layout, member.record, error, log, phase=phase, plan=member.plan, t0=member.t0, error_text=error_text
    )
    if isinstance(error, Exception):
        outcomes[member.prompt].error = error
