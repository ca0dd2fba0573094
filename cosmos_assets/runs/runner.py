"""Executing a planned run on a machine: stage, preflight, run with live logs, fetch, promote, record.

Plain Python (no Dagster) so tests and the CLI can drive it. Nothing is lost: each run has its own
remote folder (``outputs/<prompt>/<run_id>``), outputs come back into a staging folder, and only a
complete, verified folder is renamed into ``outputs/<prompt>``; an earlier run's folder there is first
moved to ``outputs/.previous/<prompt>/<its run_id>``. A failed run keeps its log, spec and any partial
download under ``outputs/.failed/<prompt>/<run_id>``. The run record is saved at every step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.files import atomic_write_json, fsync_dir, move_aside, rename_no_replace, sha256_file
from cosmos_assets.machines.base import Machine
from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, LogLine, RunOutcome
from cosmos_assets.machines.transfer_resume import is_partial_download
from cosmos_assets.models import backend_named
from cosmos_assets.models.base import ModelBackend
from cosmos_assets.runs.adopt import Adoption, find_adoption
from cosmos_assets.machines import gpu_usage
from cosmos_assets.runs import oom
from cosmos_assets.runs.causes import failure_cause, left_on_host
from cosmos_assets.progress import TransferStats
from cosmos_assets.runs.ids import new_run_id
from cosmos_assets.runs.plan import DEFAULT_UPSCALE_WEIGHT, StagePlan, plan_generation, plan_upscale
from cosmos_assets.runs.history import append_history
from cosmos_assets.runs.record import InputFile, RunRecord, RunStore, SpecUsed
from cosmos_assets.runs.skip import decide
from cosmos_assets.runs.stamp import stamp_outputs
from cosmos_assets.runs.run_log import RunLog
from cosmos_assets.runs.watchdog import Watchdog
from cosmos_assets.runs.worker import Worker


class InferenceFailed(RuntimeError):
    """The model program failed (or was blocked by its guardrail); carries the tail of its log."""

    def __init__(self, message: str, log_tail: list[str], guardrail_blocked: bool, log_path: Path,
                 cause: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.log_tail = log_tail
        self.guardrail_blocked = guardrail_blocked
        self.log_path = log_path
        self.cause = cause or ("guardrail_blocked" if guardrail_blocked else "model_exit")


class OutOfMemory(InferenceFailed):
    """The model ran out of GPU or host memory (:mod:`cosmos_assets.runs.oom`); the message names the fix."""

    def __init__(self, message: str, log_tail: list[str], log_path: Path, memory: oom.MemoryFailure, run_id: str) -> None:
        super().__init__(message, log_tail, False, log_path, cause="out_of_memory")
        self.memory = memory
        self.run_id = run_id


class RunTerminated(BaseException):
    """The run was terminated from outside (seen by the watchdog, not as an interrupt); its GPU job was stopped.

    A BaseException, like Dagster's own interrupt, so it is recorded as cancelled and never mistaken for a failure."""


@dataclass
class StageResult:
    """A finished stage: its record, and where its outputs now are."""

    record: RunRecord
    output_dir: Path
    video: Path
    spec_used: SpecUsed
    outputs: list[Path] = field(default_factory=list)
    previous_moved_to: Path | None = None
    skipped: str | None = None  # why nothing ran: ``record`` is then the earlier run whose outputs stand

    @property
    def data_version(self) -> str:
        """The work's identity (the inputs digest): equal for a run and every later skip of it."""
        return self.record.inputs_digest()

    @property
    def stage(self) -> str:
        return self.record.stage

    @property
    def prompt(self) -> str:
        return self.record.prompt

    @property
    def shot(self) -> str | None:
        return self.record.shot

    @property
    def upload(self):  # noqa: ANN201 - TransferStats
        return self.record.upload

    @property
    def download(self):  # noqa: ANN201 - TransferStats
        return self.record.download


def failed_dir(layout: ProjectLayout, record: RunRecord) -> Path:
    return layout.outputs_dir / ".failed" / record.prompt / record.run_id


def _failure_state(error: BaseException) -> str:
    if isinstance(error, InferenceFailed) and error.guardrail_blocked:
        return "guardrail_blocked"
    # Dagster's run termination (DagsterExecutionInterruptedError) and Ctrl-C are not Exceptions.
    return "failed" if isinstance(error, Exception) else "cancelled"


def _model_failed(layout: ProjectLayout, record: RunRecord, blocked: bool, log_name: str, why: str | None = None,
                  cause: str | None = None) -> InferenceFailed:  # fmt: skip
    log_path = failed_dir(layout, record) / log_name
    if why is None:
        why = ("the guardrail blocked the prompt or video (retrying the same input will not help)" if blocked
               else f"exit code {record.exit_code}")
    return InferenceFailed(
        f"{record.stage} for {record.prompt} failed on {record.host}: {why}. Log: {log_path}\n" + "\n".join(record.log_tail[-20:]),
        record.log_tail, blocked, log_path, cause,
    )  # fmt: skip


def _out_of_memory(layout: ProjectLayout, record: RunRecord, plan: StagePlan, backend: ModelBackend,
                   memory: oom.MemoryFailure, retry_on: bool) -> OutOfMemory:  # fmt: skip
    log_path = failed_dir(layout, record) / plan.log_name
    why = oom.fix_text(memory, backend, plan.job.invocation, retry_on)
    return OutOfMemory(f"{record.stage} for {record.prompt} failed on {record.host}: {why}. Log: {log_path}\n"
                       + "\n".join(record.log_tail[-20:]), record.log_tail, log_path, memory, record.run_id)  # fmt: skip


def planned_record(layout: ProjectLayout, machine: Machine, backend: ModelBackend, plan: StagePlan) -> RunRecord:
    """The record of ``plan`` about to run (its effective spec written, every input hashed); not saved yet."""
    atomic_write_json(plan.effective_spec, plan.request.spec)
    record = RunRecord.plan(plan.job, shot=plan.shot, host=machine.label, runtime=machine.runtime,
                            model_label=backend.label, preview=backend.is_preview, spec=plan.request.spec,
                            spec_remote_path=plan.request.spec_remote, project_root=layout.root)  # fmt: skip
    record.prompt_spec = plan.prompt_spec
    record.image = machine.image
    return record


def execute_plan(layout: ProjectLayout, machine: Machine, backend: ModelBackend, plan: StagePlan, log: LogLine, *,
                 record: RunRecord | None = None, adoption: Adoption | None = None,
                 silence_minutes: float = 0.0, cancelled: Callable[[], bool] | None = None,
                 oom_retry_offload: bool = False) -> StageResult:  # fmt: skip
    """Run a planned stage on ``machine``; the outputs land in ``plan.dest`` or the run fails, recorded either way.

    With ``adoption`` (an earlier run of the same work, whose run id ``plan`` reuses) nothing is uploaded or started:
    its container is attached to, or its outputs downloaded. ``silence_minutes`` > 0: the stall watchdog's limit.
    ``cancelled``: asked every few seconds while the model runs; True stops the job (:class:`RunTerminated`).
    """
    job = plan.job
    store = RunStore(layout.runs_dir)
    if adoption is not None:
        atomic_write_json(plan.effective_spec, plan.request.spec)
        record = adoption.record
        record.detached, record.error, record.cause = False, None, None
        record.adopted_by = [*record.adopted_by, job.dagster_run_id or "(no Dagster run)"]
    elif record is None:
        record = planned_record(layout, machine, backend, plan)
    record.worker = Worker.current().to_text()
    store.save(record)
    staging = plan.effective_spec.parent
    fetched = staging / "fetched"
    if fetched.exists():  # a download cut short by the process that died: kept aside, never under a final name
        os.replace(fetched, staging / f"fetched.partial-{time.strftime('%Y%m%dT%H%M%S')}")
    run_log = RunLog(staging / plan.log_name, log)
    t0 = time.monotonic()
    phase = "planned"
    run_log(f"[cosmos-assets] {job.stage} run {job.run_id} for prompt {job.prompt} on {machine.label} ({backend.label})")
    if adoption is not None:
        run_log(f"[cosmos-assets] adopting earlier run {job.run_id} (same inputs; what is left on the host: "
                f"{adoption.state}); nothing is uploaded or started again")  # fmt: skip
    for warning in plan.warnings:
        run_log(f"[cosmos-assets] warning: {warning}")
    try:
        outcome: RunOutcome | None = None
        if adoption is None:
            if plan.request.program_files:
                machine.upload(plan.request.program_files, run_log)  # the model's own code (the preview program)
            machine.preflight(job, run_log)
            record.state = phase = "uploading"
            store.save(record)
            timed_transfer([record], "upload", lambda: machine.upload(job.inputs, run_log))
        if adoption is None or adoption.state in ("running", "exited_ok"):
            command = record.command if adoption is not None and record.command else machine.command_for(job)
            record.command = command
            record.state = phase = "running"
            store.save(record)
            run_log("[cosmos-assets] command: " + record.command_line)
            outcome = _run_watched(layout, machine, job, record, plan, run_log, silence_minutes, cancelled)
            record.ran(command, outcome)
            store.save(record)
            if outcome.exit_code != 0:
                blocked = backend.guardrail_blocked(outcome, None)
                oom_killed, kernel_oom = outcome.container.get("oom_killed"), bool(outcome.container.get("kernel_oom_kill"))
                memory = None if blocked else oom.memory_failure(
                    outcome.exit_code, _log_tail(run_log.path, 400) or outcome.log_tail, oom_killed, kernel_oom)
                if memory is not None:
                    raise _out_of_memory(layout, record, plan, backend, memory, oom_retry_offload)
                killed = None if blocked else oom.killed_from_outside(
                    outcome.exit_code, oom_killed, outcome.container.get("name"), kernel_oom)
                raise _model_failed(layout, record, blocked, plan.log_name, killed, "killed" if killed else None)
        record.state = phase = "downloading"
        store.save(record)
        timed_transfer([record], "download", lambda: machine.download(job.output_folder, fetched, run_log))
        if not backend.output_video(fetched, job.prompt).exists():  # by the sample's known name, never a guess
            blocked = outcome is not None and backend.guardrail_blocked(outcome, fetched)
            raise _model_failed(layout, record, blocked, plan.log_name, None if blocked else
                                f"it exited 0 but wrote no {backend.output_video(fetched, job.prompt).name}")
    except BaseException as error:
        run_log.close()
        record.state = _failure_state(error)  # type: ignore[assignment]
        record.cause = failure_cause(error)
        record.detached = left_on_host(record.cause, phase)
        record.error = "\n".join(record.log_tail[-5:]) if isinstance(error, InferenceFailed) and record.log_tail else f"{type(error).__name__}: {error}"
        record.total_seconds = time.monotonic() - t0
        _best_effort(lambda: _keep_failed(layout, record, staging, plan), log)
        _best_effort(lambda: store.save(record), log)
        _best_effort(lambda: append_history(layout.history_log, record.history()), log)
        raise
    run_log.close()
    return promote(layout, backend, plan, record, fetched, log, t0)


def promote(layout: ProjectLayout, backend: ModelBackend, plan: StagePlan, record: RunRecord, fetched: Path,
            log: LogLine, t0: float) -> StageResult:  # fmt: skip
    """A run's downloaded outputs (``fetched``) into ``plan.dest``, beside its spec_used.json and log; an earlier
    run's folder there moved aside first; the record succeeded and its history line written. ``t0``: its start
    (``time.monotonic``). Shared by one run and by each prompt of a batch (runs/batch.py)."""
    job, staging, store = plan.job, plan.effective_spec.parent, RunStore(layout.runs_dir)
    video_name = backend.output_video(fetched, job.prompt).name
    spec_used = record.spec_used()
    spec_used.write(fetched / "spec_used.json")
    stamp_outputs(fetched, record, [item.local for item in job.inputs], lambda line: _say(log, line))  # recipe in the MP4s
    for name, content in plan.extra_files.items():
        atomic_write_json(fetched / name, content)
    if (staging / plan.log_name).exists():  # absent only if the local disk refused it (the run went on)
        os.replace(staging / plan.log_name, fetched / plan.log_name)
    moved = move_aside(plan.dest, layout.previous_outputs_dir, _previous_run_id(plan.dest)) if plan.dest.exists() else None
    rename_no_replace(fetched, plan.dest)
    fsync_dir(plan.dest.parent)
    _clean_staging(staging, plan)
    outputs = sorted(p for p in plan.dest.iterdir() if p.is_file())
    record.state = "succeeded"
    record.output_dir = str(plan.dest.relative_to(layout.root))
    record.outputs = [str(p.relative_to(layout.root)) for p in outputs]
    record.output_files = [InputFile(path=str(p.relative_to(layout.root)), size=p.stat().st_size, sha256=sha256_file(p))
                           for p in outputs]  # fmt: skip
    record.previous_moved_to = str(moved) if moved else None
    record.total_seconds = time.monotonic() - t0
    store.save(record)
    append_history(layout.history_log, record.history())
    return StageResult(record=record, output_dir=plan.dest, video=plan.dest / video_name, spec_used=spec_used,
                       outputs=outputs, previous_moved_to=moved)


def _previous_run_id(folder: Path) -> str:
    try:
        return SpecUsed.read(folder / "spec_used.json").run_id
    except FileNotFoundError:
        return datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc).strftime("%Y%m%d_%H%M%S") + "_unknown"


_clock = time.monotonic  # the transfer timer (tests step it by hand)


def timed_transfer(records: list[RunRecord], direction: Literal["upload", "download"],
                   transfer: Callable[[], TransferStats]) -> TransferStats:  # fmt: skip
    """``transfer()`` (an upload or download, shared by a batch's ``records``), its seconds added to each record's
    attempts whether it completes or fails: a run's transfer seconds count every attempt, not only the last."""
    started, stats = _clock(), None
    try:
        stats = transfer()
        return stats
    finally:
        for record in records:
            record.transferred(direction, _clock() - started, stats)


def _say(log: LogLine, line: str) -> None:
    """A line for the caller's log that never stops the run (a Dagster log on a full disk raises)."""
    try:
        log(line)
    except Exception:  # noqa: BLE001
        pass


def _best_effort(action: Callable[[], object], log: LogLine) -> None:
    """Bookkeeping while already failing: a local error here (disk full) is said, never raised over the real one."""
    try:
        action()
    except OSError as error:
        try:
            log(f"[cosmos-assets] could not record the failure locally ({error}); free local disk space")
        except Exception:  # noqa: BLE001
            pass


def _keep_failed(layout: ProjectLayout, record: RunRecord, staging: Path, plan: StagePlan) -> None:
    """Keep what the failed run left (its log, spec, any partial download) under ``outputs/.failed``.

    An attempt that adopted the run and failed again keeps its own folder beside the first (``<run_id>.2`` ...).
    """
    failed = failed_dir(layout, record)
    failed.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while failed.exists():
        n += 1
        failed = failed.with_name(f"{record.run_id}.{n}")
    if not staging.exists():
        return
    # A download cut by a lost link left its verified files and .part files beside `fetched`: they stay in the
    # staging folder, which the attempt that adopts this run uses again, so its download resumes from them.
    resumable = [p for p in staging.iterdir() if is_partial_download(p.name, "fetched")]
    os.replace(staging, failed)
    if resumable:
        staging.mkdir(parents=True)
        for folder in resumable:
            os.replace(failed / folder.name, staging / folder.name)


def _log_tail(path: Path, lines: int = 40) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _run_watched(layout: ProjectLayout, machine: Machine, job: InferenceJob, record: RunRecord, plan: StagePlan,
                 run_log: RunLog, silence_minutes: float, cancelled: Callable[[], bool] | None = None) -> RunOutcome:  # fmt: skip
    """``machine.run`` under the stall watchdog: no line for ``silence_minutes`` -> stop the job, fail as stalled."""

    def on_stall() -> None:
        run_log(f"[cosmos-assets] no output from the model for {silence_minutes:g} min "
                "(COSMOS_MODEL_SILENCE_MINUTES): treating it as hung and stopping it")  # fmt: skip
        if not machine.stop(job, run_log):
            run_log(f"[cosmos-assets] {machine.label} cannot stop the job from here; stop it by hand")

    def stalled() -> InferenceFailed:
        log_path = failed_dir(layout, record) / plan.log_name
        return InferenceFailed(
            f"{job.stage} for {job.prompt} stalled on {record.host}: no log line for {silence_minutes:g} min, so it was "
            f"stopped; raise COSMOS_MODEL_SILENCE_MINUTES if the model is quiet that long. Log: {log_path}",
            _log_tail(run_log.path), False, log_path, cause="stalled",
        )  # fmt: skip

    def on_cancel() -> None:
        run_log("[cosmos-assets] the Dagster run was terminated: stopping the GPU job")
        machine.stop(job, run_log)

    def terminated() -> RunTerminated:
        return RunTerminated(f"{job.stage} for {job.prompt} on {record.host}: the run was terminated; its job was stopped")

    watchdog = Watchdog(silence_minutes * 60.0, on_stall, cancelled=cancelled, on_cancel=on_cancel)
    run_log.touch = watchdog.touch
    reader = machine.gpu_reader()  # GPU utilisation sampled on the machine beside the run; never fails it
    sampler = gpu_usage.GpuSampler(reader, gpu_usage.INTERVAL_SECONDS) if reader is not None else None
    try:
        with watchdog, sampler or nullcontext():
            outcome = machine.run(job, run_log)
    except Exception as error:
        if watchdog.cancel_seen:
            raise terminated() from error
        if watchdog.fired:
            raise stalled() from error
        raise
    finally:
        run_log.touch = lambda: None
        if sampler is not None:
            record.gpu_usage = sampler.summary()
    if watchdog.cancel_seen:
        raise terminated()
    if watchdog.fired:
        record.ran(record.command, outcome)
        raise stalled()
    return outcome


def _clean_staging(staging: Path, plan: StagePlan) -> None:
    """Drop the run's staged spec; the folder goes too once nothing else is left in it."""
    plan.effective_spec.unlink(missing_ok=True)
    try:
        staging.rmdir()
    except OSError:
        pass


def run_generation(
    layout: ProjectLayout,
    machine: Machine,
    backend: ModelBackend,
    prompt: str,
    *,
    dagster_run_id: str | None = None,
    videos_subdir: str | None = None,
    num_gpus: int = 1,
    log: LogLine = print,
    now: datetime | None = None,
    silence_minutes: float = 0.0,
    cancelled: Callable[[], bool] | None = None,
    force: bool = False,
    gpu_price_per_hour: float | None = None,
    run_finished: Callable[[str], bool] | None = None,
    oom_retry_offload: bool = False,
) -> StageResult:
    """The seed's upload -> run -> download for one prompt, into ``outputs/<prompt>/``.

    An earlier run of the same work left behind (its orchestrator died, or its link stayed down) is adopted rather
    than repeated (:mod:`cosmos_assets.runs.adopt`); unless ``force``, a prompt whose last successful run did the
    same work and left its outputs unchanged is not run at all (:mod:`cosmos_assets.runs.skip`). With
    ``oom_retry_offload`` a run that ran out of GPU memory is retried once, as a new run, with the model's offload
    flags (:mod:`cosmos_assets.runs.oom`).
    """
    run_id = new_run_id(now or datetime.now(timezone.utc))

    def make_plan(rid: str) -> StagePlan:
        return plan_generation(layout, backend, prompt, run_id=rid, dagster_run_id=dagster_run_id,
                               videos_subdir=videos_subdir, num_gpus=num_gpus)  # fmt: skip

    def plan_member(model: str, member: str, rid: str) -> StagePlan:
        return plan_generation(layout, backend_named(model), member, run_id=rid, dagster_run_id=dagster_run_id,
                               videos_subdir=videos_subdir, num_gpus=num_gpus)  # fmt: skip

    return _run_stage(layout, machine, backend, make_plan, run_id, log, silence_minutes, cancelled,
                      force=force, gpu_price_per_hour=gpu_price_per_hour, run_finished=run_finished,
                      oom_retry_offload=oom_retry_offload, plan_member=plan_member)  # fmt: skip


def run_upscale(
    layout: ProjectLayout,
    machine: Machine,
    backend: ModelBackend,
    prompt: str,
    *,
    dagster_run_id: str | None = None,
    control_weight: float = DEFAULT_UPSCALE_WEIGHT,
    num_gpus: int = 1,
    log: LogLine = print,
    now: datetime | None = None,
    silence_minutes: float = 0.0,
    cancelled: Callable[[], bool] | None = None,
    force: bool = False,
    gpu_price_per_hour: float | None = None,
    run_finished: Callable[[str], bool] | None = None,
    oom_retry_offload: bool = False,
) -> StageResult:
    """4K upscale of ``outputs/<prompt>/output.mp4`` into ``outputs/<prompt>_upscaled/``."""
    run_id = new_run_id(now or datetime.now(timezone.utc), "upscale")

    def make_plan(rid: str) -> StagePlan:
        return plan_upscale(layout, backend, prompt, run_id=rid, dagster_run_id=dagster_run_id,
                            control_weight=control_weight, num_gpus=num_gpus)  # fmt: skip

    return _run_stage(layout, machine, backend, make_plan, run_id, log, silence_minutes, cancelled,
                      force=force, gpu_price_per_hour=gpu_price_per_hour, run_finished=run_finished,
                      oom_retry_offload=oom_retry_offload)  # fmt: skip


def _run_stage(layout: ProjectLayout, machine: Machine, backend: ModelBackend, make_plan: Callable[[str], StagePlan],
               run_id: str, log: LogLine, silence_minutes: float,
               cancelled: Callable[[], bool] | None = None, *, force: bool = False,
               gpu_price_per_hour: float | None = None,
               run_finished: Callable[[str], bool] | None = None,
               oom_retry_offload: bool = False,
               plan_member: Callable[[str, str, str], StagePlan] | None = None) -> StageResult:  # fmt: skip
    """Plan under a new run id; skip it if its last success did the same work; adopt an earlier run of the same work
    if one was left behind (``run_finished``: whether a Dagster run has ended, :mod:`~cosmos_assets.runs.adopt`),
    else run this plan. ``plan_member(model, prompt, run_id)``: how a prompt is planned here, for collecting a
    batch this prompt's earlier attempt was part of (:mod:`~cosmos_assets.runs.batch_adopt`)."""
    plan = make_plan(run_id)
    record = planned_record(layout, machine, backend, plan)
    record.gpu_price_per_hour = gpu_price_per_hour
    store = RunStore(layout.runs_dir, warn=lambda line: _say(log, f"[cosmos-assets] warning: {line}"))
    if plan_member is not None:
        from cosmos_assets.runs.batch_adopt import collect_left_batch  # a circle: runs/batch_adopt.py runs batches

        collected = collect_left_batch(layout, machine, record, plan_member, log=log, silence_minutes=silence_minutes,
                                       cancelled=cancelled, gpu_price_per_hour=gpu_price_per_hour,
                                       run_finished=run_finished)  # fmt: skip
        if collected is not None:
            _clean_staging(plan.effective_spec.parent, plan)
            return collected
    decision = decide(store, layout.root, record, force=force)
    if decision.skip and decision.matches is not None:
        _clean_staging(plan.effective_spec.parent, plan)
        done = decision.matches
        _say(log, f"[cosmos-assets] {plan.stage} of {plan.job.prompt} skipped: {decision.reason}; nothing uploaded "
                  "or started (run config force=true runs it again)")  # fmt: skip
        append_history(layout.history_log, done.skipped_history(dagster_run_id=plan.job.dagster_run_id))
        return StageResult(record=done, output_dir=plan.dest, video=backend.output_video(plan.dest),
                           spec_used=done.spec_used(), outputs=sorted(p for p in plan.dest.iterdir() if p.is_file()),
                           skipped=decision.reason)  # fmt: skip
    _say(log, f"[cosmos-assets] running {plan.stage} of {plan.job.prompt}: {decision.reason}")
    try:
        adoption = find_adoption(store, layout.history_log, machine, record,
                                 lambda rid: make_plan(rid).job,
                                 lambda job: backend.output_video(Path(job.output_folder), job.prompt).as_posix(), log,
                                 run_finished)  # fmt: skip
    except HostNotReadyError as error:  # the same work is in progress elsewhere: this attempt is refused, on record
        _clean_staging(plan.effective_spec.parent, plan)
        record.state, record.cause, record.error = "failed", failure_cause(error), str(error).splitlines()[0]
        _best_effort(lambda: RunStore(layout.runs_dir).save(record), log)
        _best_effort(lambda: append_history(layout.history_log, record.history()), log)
        raise
    try:
        if adoption is None:
            return execute_plan(layout, machine, backend, plan, log, record=record, silence_minutes=silence_minutes,
                                cancelled=cancelled, oom_retry_offload=oom_retry_offload)  # fmt: skip
        _clean_staging(plan.effective_spec.parent, plan)  # this attempt's own plan is not used
        if adoption.record.gpu_price_per_hour is None:
            adoption.record.gpu_price_per_hour = gpu_price_per_hour
        return execute_plan(layout, machine, backend, make_plan(adoption.record.run_id), log, adoption=adoption,
                            silence_minutes=silence_minutes, cancelled=cancelled, oom_retry_offload=oom_retry_offload)  # fmt: skip
    except OutOfMemory as error:
        retry = _offload_plan(backend, make_plan, error) if oom_retry_offload else None
        if retry is None:
            raise
        flags = oom.missing_offload_flags(backend, plan.job.invocation)
        _say(log, f"[cosmos-assets] {retry.stage} of {retry.job.prompt} ran out of GPU memory in run {error.run_id}; "
                  f"COSMOS_OOM_RETRY_OFFLOAD: retrying once as a new run {retry.job.run_id} with {' '.join(flags)}")
        record = planned_record(layout, machine, backend, retry)
        record.gpu_price_per_hour = gpu_price_per_hour
        record.retry_of, record.flags_added = error.run_id, flags
        return execute_plan(layout, machine, backend, retry, log, record=record, silence_minutes=silence_minutes,
                            cancelled=cancelled, oom_retry_offload=True)  # fmt: skip


def _offload_plan(backend: ModelBackend, make_plan: Callable[[str], StagePlan], failed: "OutOfMemory") -> StagePlan | None:
    """The one retry of a run that ran out of GPU memory: a new run (``<run id>_offload``) with the offload flags the
    failed command lacked; None when it ran out of host memory or there is no flag left to add."""
    if failed.memory.kind != "gpu":
        return None
    plan = make_plan(oom.retry_run_id(failed.run_id))
    flags = oom.missing_offload_flags(backend, plan.job.invocation)
    return oom.offload_plan(plan, flags) if flags else None
