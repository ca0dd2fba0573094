"""One inference run, whatever the host: stage inputs, preflight, run with live logs, fetch, record.

Plain Python (no Dagster) so tests and the CLI can drive it. The asset layer only picks the prompt,
passes the host and turns the :class:`StageResult` into metadata.

Nothing is lost: each run has its own remote folder (``outputs/<prompt>/<run_id>``), outputs come back
into a staging folder, and only a complete, verified folder is renamed into ``outputs/<prompt>``; an
earlier run's folder there is first moved to ``outputs/.previous/<prompt>/<its run_id>``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from cosmos_assets.command import TransferInvocation, redacted, shell_join
from cosmos_assets.config import ProjectLayout
from cosmos_assets.hosts.base import GpuHost, InferenceJob, RunOutcome, StagedFile, TransferStats
from cosmos_assets.records import HistoryRecord, SpecUsed, append_history, atomic_write_json
from cosmos_assets.spec import (
    TransferSpec,
    check_for_run,
    load_spec,
    referenced_paths,
    shot_of,
    upscale_spec,
    with_videos_subdir,
    write_spec,
)

LogLine = Callable[[str], None]
Stage = Literal["generate", "upscale"]
OUTPUT_VIDEO = "output.mp4"
DEFAULT_UPSCALE_WEIGHT = 0.5
UPSCALE_NUM_STEPS = 10


class InferenceFailed(RuntimeError):
    """The model program exited non-zero; carries the tail of its log."""

    def __init__(self, message: str, log_tail: list[str], guardrail_blocked: bool, log_path: Path) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.guardrail_blocked = guardrail_blocked
        self.log_path = log_path


@dataclass
class StageResult:
    stage: Stage
    prompt: str
    shot: str | None
    output_dir: Path
    video: Path
    spec_used: SpecUsed
    outcome: RunOutcome
    upload: TransferStats
    download: TransferStats
    previous_moved_to: Path | None = None
    history: HistoryRecord | None = None
    outputs: list[Path] = field(default_factory=list)


def new_run_id(now: datetime, dagster_run_id: str | None) -> str:
    """``YYYYmmdd_HHMMSS_<8 hex>``: sortable, unique per run, the seed's timestamp style."""
    suffix = (dagster_run_id or os.urandom(4).hex())[:8]
    return f"{now.strftime('%Y%m%d_%H%M%S')}_{suffix}"


def _staged_inputs(layout: ProjectLayout, spec: TransferSpec) -> list[StagedFile]:
    return [StagedFile(local=layout.root / rel, remote=rel) for rel in referenced_paths(spec)]


def _previous_run_id(folder: Path) -> str:
    try:
        return SpecUsed.read(folder / "spec_used.json").run_id
    except FileNotFoundError:
        return datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc).strftime("%Y%m%d_%H%M%S") + "_unknown"


def promote(staged: Path, dest: Path, previous_root: Path) -> Path | None:
    """Rename ``staged`` to ``dest``; an existing ``dest`` is moved under ``previous_root`` first."""
    moved_to = None
    if dest.exists():
        moved_to = previous_root / dest.name / _previous_run_id(dest)
        moved_to.parent.mkdir(parents=True, exist_ok=True)
        if moved_to.exists():
            moved_to = moved_to.with_name(f"{moved_to.name}_{os.urandom(3).hex()}")
        os.replace(dest, moved_to)
    os.replace(staged, dest)
    return moved_to


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


def _execute(
    layout: ProjectLayout,
    host: GpuHost,
    job: InferenceJob,
    *,
    shot: str | None,
    dest: Path,
    log_name: str,
    extra_files: dict[str, object],
    log: LogLine,
) -> StageResult:
    staging = layout.staging_dir / job.run_id
    fetched = staging / "fetched"
    run_log = _RunLog(staging / log_name, log)
    run_log(f"[cosmos-assets] {job.stage} run {job.run_id} for prompt {job.prompt} on {host.label} ({host.backend} backend)")
    progress = _Progress(t0=time.monotonic())
    try:
        host.preflight(job, run_log)
        progress.upload = host.upload(job.inputs, run_log)
        run_log("[cosmos-assets] command: " + shell_join(host.command_for(job)))
        progress.outcome = host.run(job, run_log)
        if progress.outcome.exit_code != 0:
            raise _model_failed(layout, host, job, progress.outcome, log_name)
        download = host.download(job.video_save_folder, fetched, run_log)
        if not (fetched / OUTPUT_VIDEO).exists():
            raise InferenceFailed(
                f"{job.stage} for {job.prompt} exited 0 but wrote no {OUTPUT_VIDEO}; see the log in "
                f"{_failed_dir(layout, job)}",
                progress.outcome.log_tail, False, _failed_dir(layout, job) / log_name,
            )
    except BaseException as error:
        run_log.close()
        _record_failure(layout, host, job, shot, progress, error, staging)
        raise
    run_log.close()
    outcome = progress.outcome
    spec_used = _spec_used(host, job, shot, outcome)
    spec_used.write(fetched / "spec_used.json")
    for name, content in extra_files.items():
        atomic_write_json(fetched / name, content)
    os.replace(staging / log_name, fetched / log_name)
    moved = promote(fetched, dest, layout.previous_outputs_dir)
    outputs = sorted(p for p in dest.iterdir() if p.is_file())
    history = _history_record(
        host, job, shot, progress,
        status="success",
        download_seconds=round(download.seconds, 3),
        outputs=[str(p.relative_to(layout.root)) for p in outputs],
    )
    append_history(layout.history_log, history)
    return StageResult(
        stage=job.stage,
        prompt=job.prompt,
        shot=shot,
        output_dir=dest,
        video=dest / OUTPUT_VIDEO,
        spec_used=spec_used,
        outcome=outcome,
        upload=progress.upload,
        download=download,
        previous_moved_to=moved,
        history=history,
        outputs=outputs,
    )


@dataclass
class _Progress:
    """How far a run got: what the history line of a failed run can still say."""

    t0: float
    upload: TransferStats = field(default_factory=TransferStats)
    outcome: RunOutcome | None = None


def _failed_dir(layout: ProjectLayout, job: InferenceJob) -> Path:
    return layout.outputs_dir / ".failed" / job.prompt / job.run_id


def _model_failed(layout: ProjectLayout, host: GpuHost, job: InferenceJob, outcome: RunOutcome, log_name: str) -> InferenceFailed:
    if outcome.guardrail_blocked:
        reason = "the guardrail blocked the prompt or video (retrying the same input will not help)"
    else:
        reason = f"exit code {outcome.exit_code}"
    log_path = _failed_dir(layout, job) / log_name
    return InferenceFailed(
        f"{job.stage} for {job.prompt} failed on {host.label}: {reason}. Log: {log_path}\n" + "\n".join(outcome.log_tail[-20:]),
        outcome.log_tail,
        outcome.guardrail_blocked,
        log_path,
    )


def _failure_status(error: BaseException) -> str:
    if isinstance(error, InferenceFailed) and error.guardrail_blocked:
        return "guardrail_blocked"
    # Dagster's run termination (DagsterExecutionInterruptedError) and Ctrl-C are not Exceptions.
    return "failed" if isinstance(error, Exception) else "cancelled"


def _record_failure(
    layout: ProjectLayout, host: GpuHost, job: InferenceJob, shot: str | None, progress: _Progress, error: BaseException, staging: Path
) -> None:
    """Keep what the failed run left (its log, spec, any partial download) and write its history line."""
    failed = _failed_dir(layout, job)
    failed.parent.mkdir(parents=True, exist_ok=True)
    if staging.exists():
        os.replace(staging, failed)
    tail = progress.outcome.log_tail[-5:] if progress.outcome else []
    message = "\n".join(tail) if isinstance(error, InferenceFailed) and tail else f"{type(error).__name__}: {error}"
    record = _history_record(host, job, shot, progress, status=_failure_status(error), error=redacted(message))
    append_history(layout.history_log, record)


def _clean_staging(staging: Path) -> None:
    """Drop the run's staged spec; the folder goes too once nothing else is left in it."""
    for name in ("spec.json", "upscale_spec.json"):
        (staging / name).unlink(missing_ok=True)
    try:
        staging.rmdir()
    except OSError:
        pass


def _spec_used(host: GpuHost, job: InferenceJob, shot: str | None, outcome: RunOutcome) -> SpecUsed:
    return SpecUsed(
        stage=job.stage,
        backend=host.backend,
        run_id=job.run_id,
        dagster_run_id=job.dagster_run_id,
        prompt=job.prompt,
        shot=shot,
        host=host.label,
        command=outcome.command,
        command_line=shell_join(outcome.command),
        container=outcome.container,
        environment=outcome.environment,
        settings=job.invocation.model_dump(mode="json"),
        spec=job.spec.to_json_dict(),
        spec_remote_path=job.spec_remote_path,
        video_save_folder=job.video_save_folder,
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
        exit_code=outcome.exit_code,
    )


def _history_record(host: GpuHost, job: InferenceJob, shot: str | None, progress: _Progress, **fields: object) -> HistoryRecord:
    """One run_history.log line for ``job``; ``fields`` add the status and what only that outcome knows."""
    outcome = progress.outcome
    return HistoryRecord(
        when=outcome.finished_at if outcome else datetime.now(timezone.utc),
        run_id=job.run_id,
        dagster_run_id=job.dagster_run_id,
        stage=job.stage,
        prompt=job.prompt,
        shot=shot,
        host=host.label,
        backend=host.backend,
        command=redacted(shell_join(outcome.command)) if outcome else "(not started)",
        upload_seconds=round(progress.upload.seconds, 3),
        inference_seconds=round(outcome.seconds, 3) if outcome else 0.0,
        total_seconds=round(time.monotonic() - progress.t0, 3),
        **fields,
    )


def generation_spec_remote(prompt: str) -> str:
    return f"inputs/prompts/{prompt}.json"


def upscale_spec_remote(prompt: str) -> str:
    return f"inputs/prompts/{prompt}_upscale.json"


def generation_invocation(prompt: str, run_id: str, num_gpus: int = 1) -> TransferInvocation:
    """transfer.py for one prompt, into a folder of its own on the host (``outputs/<prompt>/<run_id>``)."""
    return TransferInvocation(
        spec_path=generation_spec_remote(prompt), video_save_folder=f"outputs/{prompt}/{run_id}", num_gpus=num_gpus
    )


def upscale_invocation(prompt: str, run_id: str, num_gpus: int = 1) -> TransferInvocation:
    """The upscaler as upstream documents it: ``--num_steps 10 --offload_text_encoder_model``."""
    return TransferInvocation(
        spec_path=upscale_spec_remote(prompt),
        video_save_folder=f"outputs/{prompt}_upscaled/{run_id}",
        num_gpus=num_gpus,
        num_steps=UPSCALE_NUM_STEPS,
        offload_guardrail_models=False,
    )


@dataclass
class StagePlan:
    """Everything one stage will do, decided before anything is written or sent."""

    job: InferenceJob
    shot: str | None
    dest: Path
    log_name: str
    effective_spec: Path
    extra_files: dict[str, object] = field(default_factory=dict)


def plan_generation(
    layout: ProjectLayout,
    prompt: str,
    *,
    run_id: str,
    dagster_run_id: str | None = None,
    videos_subdir: str | None = None,
    num_gpus: int = 1,
) -> StagePlan:
    """Validate the prompt and describe its generation run (spec, inputs, command, destination)."""
    prompt_path = layout.prompt_file(prompt)
    original = load_spec(prompt_path)
    spec = with_videos_subdir(original, videos_subdir) if videos_subdir else original
    check_for_run(spec, prompt_path, layout.root)
    effective = layout.staging_dir / run_id / "spec.json"
    spec_remote = generation_spec_remote(prompt)
    job = InferenceJob(
        run_id=run_id,
        dagster_run_id=dagster_run_id,
        stage="generate",
        prompt=prompt,
        spec=spec,
        spec_remote_path=spec_remote,
        invocation=generation_invocation(prompt, run_id, num_gpus),
        inputs=[StagedFile(local=effective, remote=spec_remote), *_staged_inputs(layout, spec)],
    )
    return StagePlan(
        job=job,
        shot=shot_of(spec),
        dest=layout.output_dir(prompt),
        log_name="run.log",
        effective_spec=effective,
        extra_files={"prompt_spec.json": original.to_json_dict()},
    )


def generated_output(layout: ProjectLayout, prompt: str) -> tuple[Path, SpecUsed]:
    """The local generated video of ``prompt`` and its ``spec_used.json``; the upscale's input."""
    generated_dir = layout.output_dir(prompt)
    generated = generated_dir / OUTPUT_VIDEO
    if not generated.exists():
        raise FileNotFoundError(
            f"{generated} does not exist: materialize generated_videos for prompt {prompt} first "
            "(the upscale runs only after a successful generation)"
        )
    return generated, SpecUsed.read(generated_dir / "spec_used.json")


def plan_upscale(
    layout: ProjectLayout,
    prompt: str,
    *,
    run_id: str,
    dagster_run_id: str | None = None,
    control_weight: float = DEFAULT_UPSCALE_WEIGHT,
    num_gpus: int = 1,
) -> StagePlan:
    """Describe the 4K upscale of the prompt's generated video (which must exist locally)."""
    generated, gen_used = generated_output(layout, prompt)
    generated_remote = f"{gen_used.video_save_folder}/{OUTPUT_VIDEO}"
    spec = upscale_spec(generated_remote, control_weight)
    spec_remote = upscale_spec_remote(prompt)
    effective = layout.staging_dir / run_id / "upscale_spec.json"
    job = InferenceJob(
        run_id=run_id,
        dagster_run_id=dagster_run_id,
        stage="upscale",
        prompt=prompt,
        spec=spec,
        spec_remote_path=spec_remote,
        invocation=upscale_invocation(prompt, run_id, num_gpus),
        inputs=[StagedFile(local=effective, remote=spec_remote), StagedFile(local=generated, remote=generated_remote)],
    )
    return StagePlan(job=job, shot=gen_used.shot, dest=layout.upscaled_dir(prompt), log_name="upscale_run.log", effective_spec=effective)


def execute_plan(layout: ProjectLayout, host: GpuHost, plan: StagePlan, log: LogLine) -> StageResult:
    write_spec(plan.job.spec, plan.effective_spec)
    try:
        return _execute(
            layout, host, plan.job,
            shot=plan.shot,
            dest=plan.dest,
            log_name=plan.log_name,
            extra_files=plan.extra_files,
            log=log,
        )
    finally:
        _clean_staging(plan.effective_spec.parent)


def run_generation(
    layout: ProjectLayout,
    host: GpuHost,
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
    plan = plan_generation(layout, prompt, run_id=run_id, dagster_run_id=dagster_run_id, videos_subdir=videos_subdir, num_gpus=num_gpus)
    return execute_plan(layout, host, plan, log)


def run_upscale(
    layout: ProjectLayout,
    host: GpuHost,
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
    plan = plan_upscale(layout, prompt, run_id=run_id, dagster_run_id=dagster_run_id, control_weight=control_weight, num_gpus=num_gpus)
    return execute_plan(layout, host, plan, log)
