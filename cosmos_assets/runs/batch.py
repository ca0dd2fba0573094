"""Batched generation: several prompts that can share a model load run as one invocation of the model.

Each prompt stays its own run: its own record (``outputs/.runs/<run_id>.json``, pointing at the shared invocation
through :class:`~cosmos_assets.runs.spec_used.BatchRef`), ``outputs/<prompt>/`` with ``spec_used.json`` and a
``run.log`` excerpt, and its history line. Per prompt, before anything is sent: skipped when done
(:mod:`cosmos_assets.runs.skip`), run alone (and so adopted, :mod:`cosmos_assets.runs.adopt`) when an earlier
attempt was left behind. The others are grouped by the backend's :meth:`~cosmos_assets.models.base.ModelBackend.
batch_key` (control set and per-invocation settings); a group also never holds two prompts with the same text,
as the text is what ties an output to its prompt (:mod:`cosmos_assets.runs.batch_map`). A group of one runs as
a plain invocation. A guardrail block that ends the invocation early leaves later items unrun: a follow-up
invocation runs them. The invocation's GPU time is split equally over the items it ran (one load, run for all).
The shared invocation's own files stay in ``outputs/.batches/<batch_id>/`` (JSONL, log, ``batch.json``).
Plain Python, no Dagster.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cosmos_assets.files import atomic_write_json, atomic_write_text
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.base import JobState, Machine
from cosmos_assets.machines.job import InferenceJob, LogLine, RunOutcome, StagedFile
from cosmos_assets.models.registry import backend_named
from cosmos_assets.models.base import BatchItem, BatchRequest, ModelBackend
from cosmos_assets.runs import identity
from cosmos_assets.runs.adopt import abandon, earlier_attempt
from cosmos_assets.runs.batch_files import BatchFile, BatchItemRecord, excerpt
from cosmos_assets.runs.batch_map import ItemOutcome, claimed_folders, map_outputs, own_files, unclaimed_files
from cosmos_assets.runs.ids import batch_id as batch_id_of, batch_run_id, follow_up_id, new_run_id
from cosmos_assets.runs.plan import StagePlan, plan_generation
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.spec_used import BatchRef
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.run_log import RunLog
from cosmos_assets.runs.options import RunOptions
from cosmos_assets.runs.runner import run_stage
from cosmos_assets.runs.stage import (
    InferenceFailed,
    StageResult,
    clean_staging,
    failed_dir,
    planned_record,
    promote,
    record_failure,
    run_watched,
    say,
    set_aside_partial,
    timed_transfer,
)
from cosmos_assets.runs.skip import decide
from cosmos_assets.runs.worker import Worker

BATCH_GUARDRAIL_LINES = ("GUARDRAIL BLOCKED", "Guardrail blocked generation")


@dataclass
class PromptOutcome:
    """One prompt of a batched request: its result, or the error that failed it (never both)."""

    prompt: str
    result: StageResult | None = None
    error: BaseException | None = None


@dataclass
class _Member:
    """A planned prompt waiting for its invocation."""

    prompt: str
    backend: ModelBackend
    plan: StagePlan
    record: RunRecord
    make_plan: Callable[[str], StagePlan]
    t0: float = field(default_factory=time.monotonic)
    superseded: str | None = None  # an adopted batch's item whose work a newer run did: never promoted (batch_adopt)
    taken_for: str | None = None  # the Dagster run it waited in, when another run's invocation takes it (runs/company.py)

    @property
    def item(self) -> BatchItem:
        assert self.plan.spec is not None
        return BatchItem(prompt=self.prompt, spec=self.plan.spec, request=self.plan.request)

    @property
    def text(self) -> str | None:
        return self.backend.batch_text(self.item)


@dataclass(frozen=True)
class BatchOptions(RunOptions):
    """What every invocation of one request shares: the run's options, the videos folder of its prompts, and
    ``batch_size`` (upstream's ``--batch_size``: items generated at once, more memory)."""

    videos_subdir: str | None = None
    batch_size: int = 1

    @classmethod
    def of(cls, options: RunOptions, **fields: Any) -> BatchOptions:  # noqa: ANN401 - this class's own fields
        """``options`` with a batch's own ``fields``."""
        return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(RunOptions)}, **fields)

    def alone(self, layout: ProjectLayout, machine: Machine, backend: ModelBackend,
              make_plan: Callable[[str], StagePlan], run_id: str) -> StageResult:  # fmt: skip
        """One prompt by the runner's own path (skip, adopt, run, its retries)."""
        def plan_member(model: str, prompt: str, rid: str) -> StagePlan:  # a member of an orphaned batch
            return plan_generation(layout, backend_named(model), prompt, run_id=rid, dagster_run_id=self.dagster_run_id,
                                   videos_subdir=self.videos_subdir, num_gpus=self.num_gpus)  # fmt: skip

        return run_stage(layout, machine, backend, make_plan, run_id, self, plan_member=plan_member)


def group_for_batches(members: list[_Member]) -> list[list[_Member]]:
    """Prompts with the same backend and batch key together, in request order; a text seen twice in a group opens
    another group (an output is tied to its prompt by its text). Unbatchable prompts are groups of one."""
    groups: list[list[_Member]] = []
    by_key: dict[tuple[str, str], list[list[_Member]]] = {}
    for member in members:
        key = member.backend.batch_key(member.item) if member.backend.can_batch else None
        if key is None:
            groups.append([member])
            continue
        candidates = by_key.setdefault((member.backend.name, key), [])
        home = next((g for g in candidates if (member.text is None or member.text not in {m.text for m in g})
                     and member.backend.shares_batch_with(member.item, [m.item for m in g])), None)  # fmt: skip
        if home is None:
            home = []
            candidates.append(home)
            groups.append(home)
        home.append(member)
    return groups


def run_generations(layout: ProjectLayout, prompts: list[str], backend_for: Callable[[str], ModelBackend],
                    machine_for: Callable[[ModelBackend], Machine], options: BatchOptions,
                    now: datetime | None = None) -> dict[str, PromptOutcome]:  # fmt: skip
    """Generate every prompt, sharing invocations where :func:`group_for_batches` allows; one outcome per prompt.

    A prompt's failure (its spec, its block, its invocation) is its outcome's error; a termination (BaseException)
    is recorded for every prompt still open and raised."""
    base = new_run_id(now or datetime.now(timezone.utc))
    log = options.log
    store = RunStore(layout.runs_dir, warn=lambda line: say(log, f"[cosmos-assets] warning: {line}"))
    outcomes: dict[str, PromptOutcome] = {}
    waiting: list[_Member] = []
    for number, prompt in enumerate(dict.fromkeys(prompts)):
        outcome = outcomes[prompt] = PromptOutcome(prompt)
        try:
            backend = backend_for(prompt)
            machine = machine_for(backend)

            def make_plan(rid: str, backend: ModelBackend = backend, prompt: str = prompt) -> StagePlan:
                return plan_generation(layout, backend, prompt, run_id=rid, dagster_run_id=options.dagster_run_id,
                                       videos_subdir=options.videos_subdir, num_gpus=options.num_gpus)  # fmt: skip

            run_id = batch_run_id(base, number)
            plan = make_plan(run_id)
            record = planned_record(layout, machine, backend, plan)
            record.gpu_price_per_hour = options.gpu_price_per_hour
            decision = decide(store, layout.root, record, force=options.force)
            if decision.skip or earlier_attempt(store, record) is not None:
                # Done, or left behind by an earlier attempt: the one-prompt path skips it, or adopts that run.
                clean_staging(plan.effective_spec.parent, plan)
                outcome.result = options.alone(layout, machine, backend, make_plan, run_id)
                continue
            say(log, f"[cosmos-assets] generate of {prompt}: {decision.reason}")
            waiting.append(_Member(prompt, backend, plan, record, make_plan))
        except Exception as error:  # noqa: BLE001 - this prompt fails, the others go on
            outcome.error = error
    for number, group in enumerate(group_for_batches(waiting)):
        machine = machine_for(group[0].backend)
        if len(group) == 1:  # nothing to share a load with: a plain invocation, by the runner's own path
            member = group[0]
            clean_staging(member.plan.effective_spec.parent, member.plan)
            try:
                outcomes[member.prompt].result = options.alone(layout, machine, member.backend, member.make_plan,
                                                               member.record.run_id)  # fmt: skip
            except Exception as error:  # noqa: BLE001
                outcomes[member.prompt].error = error
        else:
            run_batch(layout, machine, group, batch_id_of(base, number), options, outcomes)
    return outcomes


def _label(group: list[_Member]) -> str:
    """The invocation's name on the host (container label and name): its prompts, shortened."""
    label = "+".join(m.prompt for m in group)
    return label if len(label) <= 120 else f"{label[:100]}+{len(group)}-prompts"


def _save_all(store: RunStore, group: list[_Member], state: str) -> None:
    for member in group:
        member.record.state = state  # type: ignore[assignment]
        store.save(member.record)


def _guardrail_seen(batch_log: Path, flagged: bool) -> bool:
    try:
        text = batch_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return flagged
    return flagged or any(marker in text for marker in BATCH_GUARDRAIL_LINES)


def _stage_inputs(layout: ProjectLayout, batch: BatchRequest, folder: Path, group: list[_Member]) -> list[StagedFile]:
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


def run_batch(layout: ProjectLayout, machine: Machine, group: list[_Member], batch_id: str, options: BatchOptions,
              outcomes: dict[str, PromptOutcome], follow_up_of: str | None = None,
              adopted: JobState | None = None) -> None:  # fmt: skip
    """One invocation for ``group`` (one backend, one batch key); each prompt promoted or failed on its own, the
    items a guardrail crash left unrun sent to a follow-up invocation. ``adopted``: the invocation was started by an
    orchestrator that died, and this is what is left of it on the host (runs/batch_adopt.py): nothing is uploaded or
    started, its container is attached to (or its outputs downloaded), then it is settled as any invocation."""
    backend, log, store = group[0].backend, options.log, RunStore(layout.runs_dir)
    folder = layout.outputs_dir / ".batches" / batch_id
    try:
        batch = backend.batch_generation(batch_id, [m.item for m in group], options.num_gpus, options.batch_size)
        folder.mkdir(parents=True, exist_ok=True)
        job = InferenceJob(run_id=batch_id, dagster_run_id=options.dagster_run_id, stage=group[0].plan.stage,
                           prompt=_label(group), invocation=batch.request.invocation,
                           inputs=_stage_inputs(layout, batch, folder, group), project_root=layout.root)  # fmt: skip
    except Exception as error:  # noqa: BLE001 - the batch cannot be described or staged: each of its prompts fails
        for member in group:
            _fail(layout, member, error, "planned", log, outcomes)
        return
    for index, member in enumerate(group):
        member.record.batch = BatchRef(batch_id=batch_id, index=index, items=len(group), gpu_share=1 / len(group),
                                       follow_up_of=follow_up_of, batch_size=batch.batch_size,
                                       taken_for=member.taken_for)  # fmt: skip
        member.record.remote_output_folder = f"{job.output_folder}/{batch.item_folders[index]}"
        member.record.worker = Worker.current().to_text()
        store.save(member.record)
    batch_log = folder / "run.log"
    run_log = RunLog(batch_log, log)
    run_log(f"[cosmos-assets] {group[0].plan.stage} of {len(group)} prompts in one invocation {batch_id} on {machine.label} "
            f"({backend.label}), batch size {batch.batch_size}" + (f"; follow-up of {follow_up_of}" if follow_up_of else ""))  # fmt: skip
    for index, member in enumerate(group):
        run_log(f"[cosmos-assets] item {index}: {member.prompt} (run {member.record.run_id}) -> {batch.item_folders[index]}/")
    if adopted is not None:
        run_log(f"[cosmos-assets] adopting the invocation {batch_id} its orchestrator left behind (what is left on "
                f"{machine.label}: {adopted}); nothing is uploaded or started again")  # fmt: skip
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
        command = group[0].record.command if adopted is not None and group[0].record.command else machine.command_for(job)
        for member in group:
            member.record.command = command
        phase = "running"
        _save_all(store, group, phase)
        run_log("[cosmos-assets] command: " + group[0].record.command_line)
        outcome = run_watched(layout, machine, job, group[0].record, group[0].plan, run_log, options.silence_minutes,
                              options.cancelled) if adopted != "outputs" else left_outputs(group[0].record, command)  # fmt: skip
        for member in group:
            member.record.ran(command, outcome)
        identity.note_revisions(machine, job, [m.record for m in group])
        phase = "downloading"
        _save_all(store, group, phase)
        try:
            download = timed_transfer([m.record for m in group], "download",
                                      lambda: machine.download(job.output_folder, fetched, run_log))
        except FileNotFoundError:
            if outcome.exit_code == 0:
                raise
            run_log(f"[cosmos-assets] the invocation left no output folder {job.output_folder} (exit code {outcome.exit_code})")
    except BaseException as error:
        run_log.close()
        for member in group:
            _fail(layout, member, error, phase, log, outcomes)
        if isinstance(error, Exception):
            return
        raise
    run_log.close()
    guardrail = _guardrail_seen(batch_log, outcome.guardrail_blocked)
    results = map_outputs(fetched if download is not None else None, batch.item_texts, batch.item_folders,
                          batch.prompt_file, batch.batch_size, outcome.exit_code, guardrail, video=batch.item_video,
                          names=batch.item_names)  # fmt: skip
    unclaimed = unclaimed_files(fetched if download is not None else None, batch.item_files, batch.shared_files) \
        if batch.item_files is not None else claimed_folders(
        fetched if download is not None else None, batch.item_texts, batch.item_folders, batch.prompt_file,
        batch.item_video)[1]  # fmt: skip
    ran = [r for r in results if r.status != "not_run"]
    share = 1 / len(ran) if ran else 0.0
    left: list[_Member] = []
    for index, (member, result) in enumerate(zip(group, results)):
        if result.status == "not_run":
            left.append(member)
            continue
        assert member.record.batch is not None
        member.record.batch = member.record.batch.model_copy(update={"gpu_share": share})
        _settle(layout, backend, member, index, result, batch_id, batch_log, fetched, download, job, log, outcomes,
                flat=batch.item_files[index] if batch.item_files is not None else None, nested=batch.nested)  # fmt: skip
    _write_batch_file(folder, batch_id, options, backend, machine, batch, group, results, unclaimed, outcome.exit_code, follow_up_of)
    if unclaimed:
        why = ("are files no sample of the batch is named for" if batch.item_files is not None else
               "hold a video no prompt of the batch claims (its prompt.txt matches none)")
        say(log, f"[cosmos-assets] batch {batch_id}: {', '.join(unclaimed)} {why}; left in outputs/.batches, "
                  "attached to no prompt")  # fmt: skip
    if left:
        say(log, f"[cosmos-assets] batch {batch_id}: {len(left)} prompt(s) did not run ({', '.join(m.prompt for m in left)}); "
                  "running them in a follow-up invocation")  # fmt: skip
        for member in left:
            member.record.state = "planned"
            member.record.exit_code = None
        run_batch(layout, machine, left, follow_up_id(batch_id), options, outcomes, follow_up_of=batch_id)


def left_outputs(record: RunRecord, command: list[str]) -> RunOutcome:
    """An adopted invocation whose container is gone but whose outputs are on the host: taken as having exited 0
    (what it wrote is mapped item by item; an item without its video fails as any such item does)."""
    now = datetime.now(timezone.utc)
    return RunOutcome(exit_code=0, command=command, started_at=record.started_at or now, finished_at=now)


def _write_batch_file(folder: Path, batch_id: str, options: BatchOptions, backend: ModelBackend, machine: Machine,
                      batch: BatchRequest, group: list[_Member], results: list[ItemOutcome], unclaimed: list[str],
                      exit_code: int, follow_up_of: str | None) -> None:  # fmt: skip
    content = BatchFile(
        batch_id=batch_id, dagster_run_id=options.dagster_run_id, model=backend.name, host=machine.label,
        batch_size=batch.batch_size, command=group[0].record.command, exit_code=exit_code, follow_up_of=follow_up_of,
        unclaimed_folders=unclaimed,
        items=[BatchItemRecord(index=i, prompt=m.prompt, run_id=m.record.run_id, status=r.status, folder=r.folder,
                               why=r.why) for i, (m, r) in enumerate(zip(group, results))],
    )  # fmt: skip
    atomic_write_text(folder / "batch.json", content.model_dump_json(indent=2) + "\n")


def _settle(layout: ProjectLayout, backend: ModelBackend, member: _Member, index: int, result: ItemOutcome,
            batch_id: str, batch_log: Path, fetched: Path, download, job: InferenceJob, log: LogLine,  # noqa: ANN001
            outcomes: dict[str, PromptOutcome], flat: tuple[str, ...] | None = None, nested: bool = False) -> None:  # fmt: skip
    """One item after the invocation: promoted into ``outputs/<prompt>/``, or failed (blocked) with its reason.
    ``flat``: a flat layout's exact file names this item may own."""
    plan, record = member.plan, member.record
    staging = plan.effective_spec.parent
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write_text(staging / plan.log_name, excerpt(batch_log, batch_id, index, member.prompt, member.record.run_id,
                                                       result.folder, result.why, flat or ()))  # fmt: skip
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
    error = InferenceFailed(f"{plan.stage} for {member.prompt} failed on {record.host} in the shared invocation {batch_id} "
                            f"(item {index}): {result.why}. Log: {log_path}", record.log_tail, blocked, log_path,
                            cause="guardrail_blocked" if blocked else "model_exit")  # fmt: skip
    _fail(layout, member, error, "running", log, outcomes, error_text=result.why)


def _fail(layout: ProjectLayout, member: _Member, error: BaseException, phase: str, log: LogLine,
          outcomes: dict[str, PromptOutcome], error_text: str | None = None) -> None:  # fmt: skip
    """Record a prompt's failure as the runner does (state, cause, ``outputs/.failed``, history)."""
    record_failure(layout, member.record, error, log, phase=phase, plan=member.plan, t0=member.t0, error_text=error_text)
    if isinstance(error, Exception):
        outcomes[member.prompt].error = error
