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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.files import atomic_write_json, fsync_dir, move_aside, rename_no_replace
from cosmos_assets.machines.base import Machine
from cosmos_assets.machines.job import LogLine
from cosmos_assets.models.base import ModelBackend
from cosmos_assets.runs.plan import DEFAULT_UPSCALE_WEIGHT, StagePlan, new_run_id, plan_generation, plan_upscale
from cosmos_assets.runs.record import RunRecord, RunStore, SpecUsed, append_history


class InferenceFailed(RuntimeError):
    """The model program failed (or was blocked by its guardrail); carries the tail of its log."""

    def __init__(self, message: str, log_tail: list[str], guardrail_blocked: bool, log_path: Path) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.guardrail_blocked = guardrail_blocked
        self.log_path = log_path


@dataclass
class StageResult:
    """A finished stage: its record, and where its outputs now are."""

    record: RunRecord
    output_dir: Path
    video: Path
    spec_used: SpecUsed
    outputs: list[Path] = field(default_factory=list)
    previous_moved_to: Path | None = None

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


class _RunLog:
    """Writes every line to the local run log as it comes, and passes it on."""

    def __init__(self, path: Path, forward: LogLine) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = open(path, "a", encoding="utf-8", buffering=1)
        self._forward = forward

    def __call__(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._forward(line)

    def close(self) -> None:
        self._handle.close()


def failed_dir(layout: ProjectLayout, record: RunRecord) -> Path:
    return layout.outputs_dir / ".failed" / record.prompt / record.run_id


def _failure_state(error: BaseException) -> str:
    if isinstance(error, InferenceFailed) and error.guardrail_blocked:
        return "guardrail_blocked"
    # Dagster's run termination (DagsterExecutionInterruptedError) and Ctrl-C are not Exceptions.
    return "failed" if isinstance(error, Exception) else "cancelled"


def _model_failed(layout: ProjectLayout, record: RunRecord, blocked: bool, log_name: str, why: str | None = None) -> InferenceFailed:
    log_path = failed_dir(layout, record) / log_name
    if why is None:
        why = ("the guardrail blocked the prompt or video (retrying the same input will not help)" if blocked
               else f"exit code {record.exit_code}")
    return InferenceFailed(
        f"{record.stage} for {record.prompt} failed on {record.host}: {why}. Log: {log_path}\n" + "\n".join(record.log_tail[-20:]),
        record.log_tail, blocked, log_path,
    )  # fmt: skip


def execute_plan(layout: ProjectLayout, machine: Machine, backend: ModelBackend, plan: StagePlan, log: LogLine) -> StageResult:
    """Run a planned stage on ``machine``; the outputs land in ``plan.dest`` or the run fails, recorded either way."""
    job = plan.job
    atomic_write_json(plan.effective_spec, plan.request.spec)
    store = RunStore(layout.runs_dir)
    record = RunRecord.plan(job, shot=plan.shot, host=machine.label, runtime=machine.runtime, model_label=backend.label,
                            preview=backend.is_preview, spec=plan.request.spec, spec_remote_path=plan.request.spec_remote,
                            project_root=layout.root)  # fmt: skip
    store.save(record)
    staging = plan.effective_spec.parent
    fetched = staging / "fetched"
    run_log = _RunLog(staging / plan.log_name, log)
    t0 = time.monotonic()
    run_log(f"[cosmos-assets] {job.stage} run {job.run_id} for prompt {job.prompt} on {machine.label} ({backend.label})")
    try:
        if plan.request.program_files:
            machine.upload(plan.request.program_files, run_log)  # the model's own code (the preview program)
        machine.preflight(job, run_log)
        record.state = "uploading"
        store.save(record)
        record.upload = machine.upload(job.inputs, run_log)
        command = machine.command_for(job)
        record.command = command
        record.state = "running"
        store.save(record)
        run_log("[cosmos-assets] command: " + record.command_line)
        outcome = machine.run(job, run_log)
        record.ran(command, outcome)
        store.save(record)
        if outcome.exit_code != 0:
            raise _model_failed(layout, record, backend.guardrail_blocked(outcome, None), plan.log_name)
        record.state = "downloading"
        store.save(record)
        record.download = machine.download(job.output_folder, fetched, run_log)
        if not backend.output_video(fetched).exists():
            blocked = backend.guardrail_blocked(outcome, fetched)
            raise _model_failed(layout, record, blocked, plan.log_name,
                                None if blocked else f"it exited 0 but wrote no {backend.output_video(fetched).name}")
    except BaseException as error:
        run_log.close()
        record.state = _failure_state(error)  # type: ignore[assignment]
        record.error = "\n".join(record.log_tail[-5:]) if isinstance(error, InferenceFailed) and record.log_tail else f"{type(error).__name__}: {error}"
        record.total_seconds = time.monotonic() - t0
        _keep_failed(layout, record, staging, plan)
        store.save(record)
        append_history(layout.history_log, record.history())
        raise
    run_log.close()
    video_name = backend.output_video(fetched).name
    spec_used = record.spec_used()
    spec_used.write(fetched / "spec_used.json")
    for name, content in plan.extra_files.items():
        atomic_write_json(fetched / name, content)
    os.replace(staging / plan.log_name, fetched / plan.log_name)
    moved = move_aside(plan.dest, layout.previous_outputs_dir, _previous_run_id(plan.dest)) if plan.dest.exists() else None
    rename_no_replace(fetched, plan.dest)
    fsync_dir(plan.dest.parent)
    _clean_staging(staging, plan)
    outputs = sorted(p for p in plan.dest.iterdir() if p.is_file())
    record.state = "succeeded"
    record.output_dir = str(plan.dest.relative_to(layout.root))
    record.outputs = [str(p.relative_to(layout.root)) for p in outputs]
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


def _keep_failed(layout: ProjectLayout, record: RunRecord, staging: Path, plan: StagePlan) -> None:
    """Keep what the failed run left (its log, spec, any partial download) under ``outputs/.failed``."""
    failed = failed_dir(layout, record)
    failed.parent.mkdir(parents=True, exist_ok=True)
    if staging.exists():
        os.replace(staging, failed)


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
) -> StageResult:
    """The seed's upload -> run -> download for one prompt, into ``outputs/<prompt>/``."""
    run_id = new_run_id(now or datetime.now(timezone.utc), dagster_run_id)
    plan = plan_generation(layout, backend, prompt, run_id=run_id, dagster_run_id=dagster_run_id,
                           videos_subdir=videos_subdir, num_gpus=num_gpus)
    return execute_plan(layout, machine, backend, plan, log)


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
) -> StageResult:
    """4K upscale of ``outputs/<prompt>/output.mp4`` into ``outputs/<prompt>_upscaled/``."""
    run_id = new_run_id(now or datetime.now(timezone.utc), dagster_run_id)
    plan = plan_upscale(layout, backend, prompt, run_id=run_id, dagster_run_id=dagster_run_id,
                        control_weight=control_weight, num_gpus=num_gpus)
    return execute_plan(layout, machine, backend, plan, log)
