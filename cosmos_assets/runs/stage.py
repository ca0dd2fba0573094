"""A stage's lifecycle, shared by one prompt's run (runs/runner.py) and each prompt of a batch (runs/batch.py).

The planned record (its effective spec written, every input hashed), the model run under the stall watchdog and the
termination check, the promotion of a verified download into ``outputs/<prompt>/`` (an earlier run's folder moved
aside first), and the failure's bookkeeping: state, cause, ``outputs/.failed/<prompt>/<run_id>``, record, history.
Plain Python, no Dagster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cosmos_assets.files import atomic_write_json, fsync_dir, move_aside, rename_no_replace, sha256_file
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines import gpu_usage
from cosmos_assets.machines.base import Machine
from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, LogLine, RunOutcome
from cosmos_assets.machines.transfer_resume import is_partial_download
from cosmos_assets.models.base import ModelBackend
from cosmos_assets.progress import TransferStats
from cosmos_assets.redaction import first_line
from cosmos_assets.runs import oom
from cosmos_assets.runs.causes import failure_cause, left_on_host
from cosmos_assets.runs.history import append_history
from cosmos_assets.runs.identity import program_sha256
from cosmos_assets.runs.plan import StagePlan
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.run_log import RunLog
from cosmos_assets.runs.spec_used import InputFile, SpecUsed
from cosmos_assets.runs.stamp import stamp_outputs
from cosmos_assets.runs.watchdog import Watchdog


class InferenceFailed(RuntimeError):
    """The model program failed (or was blocked by its guardrail); carries the tail of its log."""

    def __init__(
        self, message: str, log_tail: list[str], guardrail_blocked: bool, log_path: Path, cause: str | None = None
    ) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.guardrail_blocked = guardrail_blocked
        self.log_path = log_path
        self.cause = cause or ("guardrail_blocked" if guardrail_blocked else "model_exit")


class OutOfMemory(InferenceFailed):
    """The model ran out of GPU or host memory (:mod:`cosmos_assets.runs.oom`); the message names the fix."""

    def __init__(
        self, message: str, log_tail: list[str], log_path: Path, memory: oom.MemoryFailure, run_id: str
    ) -> None:
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
    def upload(self):
        return self.record.upload

    @property
    def download(self):
        return self.record.download


def failed_dir(layout: ProjectLayout, record: RunRecord) -> Path:
    return layout.outputs_dir / ".failed" / record.prompt / record.run_id


def failure_state(error: BaseException) -> str:
    if isinstance(error, InferenceFailed) and error.guardrail_blocked:
        return "guardrail_blocked"
    # Dagster's run termination (DagsterExecutionInterruptedError) and Ctrl-C are not Exceptions.
    return "failed" if isinstance(error, Exception) else "cancelled"


def planned_record(layout: ProjectLayout, machine: Machine, backend: ModelBackend, plan: StagePlan) -> RunRecord:
    """The record of ``plan`` about to run (its effective spec written, every input hashed); not saved yet."""
    atomic_write_json(plan.effective_spec, plan.request.spec)
    record = RunRecord.plan(
        plan.job,
        shot=plan.shot,
        host=machine.label,
        runtime=machine.runtime,
        model_label=backend.label,
        preview=backend.is_preview,
        spec=plan.request.spec,
        spec_remote_path=plan.request.spec_remote,
        project_root=layout.root,
    )
    record.prompt_spec = plan.prompt_spec
    record.image = machine.image
    record.program_sha256 = program_sha256(plan.request.program_files)
    try:
        record.image_id = machine.image_id()  # before any skip decision: a rebuilt tag is new work
    except (
        HostNotReadyError
    ) as error:  # unknown is not "no image": this attempt fails, on record (retried or elsewhere)
        run_log = RunLog(plan.effective_spec.parent / plan.log_name, lambda line: None)
        run_log(
            f"[cosmos-assets] {plan.stage} run {record.run_id} for prompt {record.prompt} on {record.host}: the "
            f"image's ID could not be read, so whether this work is done is unknown: {first_line(error)}"
        )
        run_log.close()
        record_failure(layout, record, error, lambda line: None, plan=plan)
        raise
    return record


def promote(
    layout: ProjectLayout,
    backend: ModelBackend,
    plan: StagePlan,
    record: RunRecord,
    fetched: Path,
    log: LogLine,
    t0: float,
) -> StageResult:
    """A run's downloaded outputs (``fetched``) into ``plan.dest``, beside its spec_used.json and log; an earlier
    run's folder there moved aside first; the record succeeded and its history line written. ``t0``: its start
    (``time.monotonic``). Shared by one run and by each prompt of a batch (runs/batch.py)."""
    job, staging, store = plan.job, plan.effective_spec.parent, RunStore(layout.runs_dir)
    video_name = backend.output_video(fetched, job.prompt).name
    spec_used = record.spec_used()
    spec_used.write(fetched / "spec_used.json")
    stamp_outputs(
        fetched, record, [item.local for item in job.inputs], lambda line: say(log, line)
    )  # recipe in the MP4s
    for name, content in plan.extra_files.items():
        atomic_write_json(fetched / name, content)
    if (staging / plan.log_name).exists():  # absent only if the local disk refused it (the run went on)
        os.replace(staging / plan.log_name, fetched / plan.log_name)
    moved = (
        move_aside(plan.dest, layout.previous_outputs_dir, _previous_run_id(plan.dest)) if plan.dest.exists() else None
    )
    rename_no_replace(fetched, plan.dest)
    fsync_dir(plan.dest.parent)
    clean_staging(staging, plan)
    outputs = sorted(p for p in plan.dest.iterdir() if p.is_file())
    record.state = "succeeded"
    record.output_dir = str(plan.dest.relative_to(layout.root))
    record.outputs = [str(p.relative_to(layout.root)) for p in outputs]
    record.output_files = [
        InputFile(path=str(p.relative_to(layout.root)), size=p.stat().st_size, sha256=sha256_file(p)) for p in outputs
    ]
    record.previous_moved_to = str(moved) if moved else None
    record.total_seconds = time.monotonic() - t0
    store.save(record)
    append_history(layout.history_log, record.history())
    return StageResult(
        record=record,
        output_dir=plan.dest,
        video=plan.dest / video_name,
        spec_used=spec_used,
        outputs=outputs,
        previous_moved_to=moved,
    )


def _previous_run_id(folder: Path) -> str:
    try:
        return SpecUsed.read(folder / "spec_used.json").run_id
    except FileNotFoundError:
        return datetime.fromtimestamp(folder.stat().st_mtime, UTC).strftime("%Y%m%d_%H%M%S") + "_unknown"


_clock = time.monotonic  # the transfer timer (tests step it by hand)


def timed_transfer(
    records: list[RunRecord], direction: Literal["upload", "download"], transfer: Callable[[], TransferStats]
) -> TransferStats:
    """``transfer()`` (an upload or download, shared by a batch's ``records``), its seconds added to each record's
    attempts whether it completes or fails: a run's transfer seconds count every attempt, not only the last."""
    started, stats = _clock(), None
    try:
        stats = transfer()
        return stats
    finally:
        for record in records:
            record.transferred(direction, _clock() - started, stats)


def say(log: LogLine, line: str) -> None:
    """A line for the caller's log that never stops the run (a Dagster log on a full disk raises)."""
    try:
        log(line)
    except Exception:  # noqa: BLE001
        pass


def best_effort(action: Callable[[], object], log: LogLine) -> None:
    """Bookkeeping while already failing: a local error here (disk full) is said, never raised over the real one."""
    try:
        action()
    except OSError as error:
        try:
            log(f"[cosmos-assets] could not record the failure locally ({error}); free local disk space")
        except Exception:  # noqa: BLE001
            pass


def keep_failed(layout: ProjectLayout, record: RunRecord, staging: Path, plan: StagePlan) -> None:
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


def log_tail(path: Path, lines: int = 40) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def run_watched(
    layout: ProjectLayout,
    machine: Machine,
    job: InferenceJob,
    record: RunRecord,
    plan: StagePlan,
    run_log: RunLog,
    silence_minutes: float,
    cancelled: Callable[[], bool] | None = None,
) -> RunOutcome:
    """``machine.run`` under the stall watchdog: no line for ``silence_minutes`` -> stop the job, fail as stalled."""

    def on_stall() -> None:
        run_log(
            f"[cosmos-assets] no output from the model for {silence_minutes:g} min "
            "(COSMOS_MODEL_SILENCE_MINUTES): treating it as hung and stopping it"
        )
        if not machine.stop(job, run_log):
            run_log(f"[cosmos-assets] {machine.label} cannot stop the job from here; stop it by hand")

    def stalled() -> InferenceFailed:
        log_path = failed_dir(layout, record) / plan.log_name
        return InferenceFailed(
            f"{job.stage} for {job.prompt} stalled on {record.host}: no log line for {silence_minutes:g} min, so it was "
            f"stopped; raise COSMOS_MODEL_SILENCE_MINUTES if the model is quiet that long. Log: {log_path}",
            log_tail(run_log.path),
            False,
            log_path,
            cause="stalled",
        )

    def on_cancel() -> None:
        run_log("[cosmos-assets] the Dagster run was terminated: stopping the GPU job")
        machine.stop(job, run_log)

    def terminated() -> RunTerminated:
        return RunTerminated(
            f"{job.stage} for {job.prompt} on {record.host}: the run was terminated; its job was stopped"
        )

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


def clean_staging(staging: Path, plan: StagePlan) -> None:
    """Drop the run's staged spec; the folder goes too once nothing else is left in it."""
    plan.effective_spec.unlink(missing_ok=True)
    try:
        staging.rmdir()
    except OSError:
        pass


def set_aside_partial(fetched: Path) -> None:
    """A download cut short by a process that died: kept aside beside it, never under a final name."""
    if fetched.exists():
        os.replace(fetched, fetched.with_name(f"{fetched.name}.partial-{time.strftime('%Y%m%dT%H%M%S')}"))


def record_failure(
    layout: ProjectLayout,
    record: RunRecord,
    error: BaseException,
    log: LogLine,
    *,
    phase: str = "planned",
    plan: StagePlan | None = None,
    t0: float | None = None,
    error_text: str | None = None,
) -> None:
    """A stage that failed (or was cancelled) put on record: its state and cause, whether it left its job or outputs
    on the host (``phase``: how far it got), the error (``error_text``, else the exception), its time since ``t0``,
    what it left kept under ``outputs/.failed`` (given its ``plan``), the record saved and its history line. Local
    errors here (disk full) are said in ``log``, never raised over ``error``."""
    record.state = failure_state(error)  # type: ignore[assignment]
    record.cause = failure_cause(error)
    record.detached = left_on_host(record.cause, phase)
    record.error = error_text or f"{type(error).__name__}: {error}"
    if t0 is not None:
        record.total_seconds = time.monotonic() - t0
    if plan is not None:
        best_effort(lambda: keep_failed(layout, record, plan.effective_spec.parent, plan), log)
    best_effort(lambda: RunStore(layout.runs_dir).save(record), log)
    best_effort(lambda: append_history(layout.history_log, record.history()), log)
