"""Executing a planned run on a machine: stage, preflight, run with live logs, fetch, promote, record.

Plain Python (no Dagster) so tests and the CLI can drive it. Nothing is lost: each run has its own
remote folder (``outputs/<prompt>/<run_id>``), outputs come back into a staging folder, and only a
complete, verified folder is renamed into ``outputs/<prompt>``; an earlier run's folder there is first
moved to ``outputs/.previous/<prompt>/<its run_id>``. A failed run keeps its log, spec and any partial
download under ``outputs/.failed/<prompt>/<run_id>``. The run record is saved at every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cosmos_assets.files import atomic_write_json
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.base import Machine
from cosmos_assets.machines.job import HostNotReadyError, RunOutcome
from cosmos_assets.models.base import ModelBackend
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs import identity, oom
from cosmos_assets.runs.adopt import Adoption, find_adoption
from cosmos_assets.runs.batch_adopt import collect_left_batch
from cosmos_assets.runs.history import append_history
from cosmos_assets.runs.ids import new_run_id
from cosmos_assets.runs.options import RunOptions
from cosmos_assets.runs.plan import DEFAULT_UPSCALE_WEIGHT, StagePlan, plan_generation, plan_upscale
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.run_log import RunLog
from cosmos_assets.runs.skip import decide
from cosmos_assets.runs.stage import (
    InferenceFailed,
    OutOfMemory,
    StageResult,
    clean_staging,
    failed_dir,
    log_tail,
    planned_record,
    promote,
    record_failure,
    run_watched,
    say,
    set_aside_partial,
    timed_transfer,
)
from cosmos_assets.runs.worker import Worker


def _model_failed(
    layout: ProjectLayout,
    record: RunRecord,
    blocked: bool,
    log_name: str,
    why: str | None = None,
    cause: str | None = None,
) -> InferenceFailed:
    log_path = failed_dir(layout, record) / log_name
    if why is None:
        why = (
            "the guardrail blocked the prompt or video (retrying the same input will not help)"
            if blocked
            else f"exit code {record.exit_code}"
        )
    return InferenceFailed(
        f"{record.stage} for {record.prompt} failed on {record.host}: {why}. Log: {log_path}\n"
        + "\n".join(record.log_tail[-20:]),
        record.log_tail,
        blocked,
        log_path,
        cause,
    )


def _out_of_memory(
    layout: ProjectLayout,
    record: RunRecord,
    plan: StagePlan,
    backend: ModelBackend,
    memory: oom.MemoryFailure,
    retry_on: bool,
) -> OutOfMemory:
    log_path = failed_dir(layout, record) / plan.log_name
    why = oom.fix_text(memory, backend, plan.job.invocation, retry_on)
    return OutOfMemory(
        f"{record.stage} for {record.prompt} failed on {record.host}: {why}. Log: {log_path}\n"
        + "\n".join(record.log_tail[-20:]),
        record.log_tail,
        log_path,
        memory,
        record.run_id,
    )


def execute_plan(
    layout: ProjectLayout,
    machine: Machine,
    backend: ModelBackend,
    plan: StagePlan,
    options: RunOptions,
    *,
    record: RunRecord | None = None,
    adoption: Adoption | None = None,
) -> StageResult:
    """Run a planned stage on ``machine``; the outputs land in ``plan.dest`` or the run fails, recorded either way.

    With ``adoption`` (an earlier run of the same work, whose run id ``plan`` reuses) nothing is uploaded or started:
    its container is attached to, or its outputs downloaded. ``options``: the watchdog, termination and OOM rules.
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
    set_aside_partial(fetched)
    log = options.log
    run_log = RunLog(staging / plan.log_name, log)
    t0 = time.monotonic()
    phase = "planned"
    run_log(
        f"[cosmos-assets] {job.stage} run {job.run_id} for prompt {job.prompt} on {machine.label} ({backend.label})"
    )
    if adoption is not None:
        run_log(
            f"[cosmos-assets] adopting earlier run {job.run_id} (same inputs; what is left on the host: "
            f"{adoption.state}); nothing is uploaded or started again"
        )
    for warning in plan.warnings:
        run_log(f"[cosmos-assets] warning: {warning}")
    try:
        outcome: RunOutcome | None = None
        if adoption is None:
            if plan.request.program_files:
                machine.upload(plan.request.program_files, run_log)  # the model's own code (the preview program)
            machine.preflight(job, run_log)
            identity.after_preflight(machine, job, [record], run_log)
            record.state = phase = "uploading"
            store.save(record)
            timed_transfer([record], "upload", lambda: machine.upload(job.inputs, run_log))
        if adoption is None or adoption.state in ("running", "exited_ok"):
            command = record.command if adoption is not None and record.command else machine.command_for(job)
            record.command = command
            record.state = phase = "running"
            store.save(record)
            run_log("[cosmos-assets] command: " + record.command_line)
            outcome = run_watched(
                layout, machine, job, record, plan, run_log, options.silence_minutes, options.cancelled
            )
            record.ran(command, outcome)
            identity.note_revisions(machine, job, [record])
            store.save(record)
            if outcome.exit_code != 0:
                blocked = backend.guardrail_blocked(outcome, None)
                oom_killed, kernel_oom = (
                    outcome.container.get("oom_killed"),
                    bool(outcome.container.get("kernel_oom_kill")),
                )
                memory = (
                    None
                    if blocked
                    else oom.memory_failure(
                        outcome.exit_code, log_tail(run_log.path, 400) or outcome.log_tail, oom_killed, kernel_oom
                    )
                )
                if memory is not None:
                    raise _out_of_memory(layout, record, plan, backend, memory, options.oom_retry_offload)
                killed = (
                    None
                    if blocked
                    else oom.killed_from_outside(
                        outcome.exit_code, oom_killed, outcome.container.get("name"), kernel_oom
                    )
                )
                raise _model_failed(layout, record, blocked, plan.log_name, killed, "killed" if killed else None)
        record.state = phase = "downloading"
        store.save(record)
        timed_transfer([record], "download", lambda: machine.download(job.output_folder, fetched, run_log))
        if not backend.output_video(fetched, job.prompt).exists():  # by the sample's known name, never a guess
            blocked = outcome is not None and backend.guardrail_blocked(outcome, fetched)
            raise _model_failed(
                layout,
                record,
                blocked,
                plan.log_name,
                None if blocked else f"it exited 0 but wrote no {backend.output_video(fetched, job.prompt).name}",
            )
    except BaseException as error:
        run_log.close()
        text = "\n".join(record.log_tail[-5:]) if isinstance(error, InferenceFailed) and record.log_tail else None
        record_failure(layout, record, error, log, phase=phase, plan=plan, t0=t0, error_text=text)
        raise
    run_log.close()
    return promote(layout, backend, plan, record, fetched, log, t0)


def run_generation(
    layout: ProjectLayout,
    machine: Machine,
    backend: ModelBackend,
    prompt: str,
    options: RunOptions | None = None,
    *,
    videos_subdir: str | None = None,
    now: datetime | None = None,
    **option_fields: Any,
) -> StageResult:
    """The seed's upload -> run -> download for one prompt, into ``outputs/<prompt>/``.

    ``options`` (or its fields as keywords, which override it): how it runs (:class:`~cosmos_assets.runs.options.
    RunOptions`). An earlier run of the same work left behind (its orchestrator died, or its link stayed down) is
    adopted rather than repeated (:mod:`cosmos_assets.runs.adopt`); unless ``force``, a prompt whose last successful
    run did the same work and left its outputs unchanged is not run at all (:mod:`cosmos_assets.runs.skip`). With
    ``oom_retry_offload`` a run that ran out of GPU memory is retried once, as a new run, with the model's offload
    flags (:mod:`cosmos_assets.runs.oom`).
    """
    options = (options or RunOptions()).replace(**option_fields)
    run_id = new_run_id(now or datetime.now(UTC))

    def make_plan(rid: str) -> StagePlan:
        return plan_generation(
            layout,
            backend,
            prompt,
            run_id=rid,
            dagster_run_id=options.dagster_run_id,
            videos_subdir=videos_subdir,
            num_gpus=options.num_gpus,
        )

    def plan_member(model: str, member: str, rid: str) -> StagePlan:
        return plan_generation(
            layout,
            backend_named(model),
            member,
            run_id=rid,
            dagster_run_id=options.dagster_run_id,
            videos_subdir=videos_subdir,
            num_gpus=options.num_gpus,
        )

    return run_stage(layout, machine, backend, make_plan, run_id, options, plan_member=plan_member)


def run_upscale(
    layout: ProjectLayout,
    machine: Machine,
    backend: ModelBackend,
    prompt: str,
    options: RunOptions | None = None,
    *,
    control_weight: float = DEFAULT_UPSCALE_WEIGHT,
    now: datetime | None = None,
    **option_fields: Any,
) -> StageResult:
    """4K upscale of ``outputs/<prompt>/output.mp4`` into ``outputs/<prompt>_upscaled/`` (``options`` as for
    :func:`run_generation`)."""
    options = (options or RunOptions()).replace(**option_fields)
    run_id = new_run_id(now or datetime.now(UTC), "upscale")

    def make_plan(rid: str) -> StagePlan:
        return plan_upscale(
            layout,
            backend,
            prompt,
            run_id=rid,
            dagster_run_id=options.dagster_run_id,
            control_weight=control_weight,
            num_gpus=options.num_gpus,
        )

    return run_stage(layout, machine, backend, make_plan, run_id, options)


def run_stage(
    layout: ProjectLayout,
    machine: Machine,
    backend: ModelBackend,
    make_plan: Callable[[str], StagePlan],
    run_id: str,
    options: RunOptions,
    plan_member: Callable[[str, str, str], StagePlan] | None = None,
) -> StageResult:
    """Plan under a new run id; skip it if its last success did the same work; adopt an earlier run of the same work
    if one was left behind (``options.run_finished``: whether a Dagster run has ended,
    :mod:`~cosmos_assets.runs.adopt`), else run this plan. ``plan_member(model, prompt, run_id)``: how a prompt is
    planned here, for collecting a batch this prompt's earlier attempt was part of (:mod:`~cosmos_assets.runs.batch_adopt`)."""
    log = options.log
    plan = make_plan(run_id)
    record = planned_record(layout, machine, backend, plan)
    record.gpu_price_per_hour = options.gpu_price_per_hour
    store = RunStore(layout.runs_dir, warn=lambda line: say(log, f"[cosmos-assets] warning: {line}"))
    if plan_member is not None:
        try:
            collected = collect_left_batch(layout, machine, record, plan_member, options)
        except HostNotReadyError as error:  # its batch is still followed by its own orchestrator: refused, on record
            clean_staging(plan.effective_spec.parent, plan)
            record_failure(layout, record, error, log, error_text=str(error).splitlines()[0])
            raise
        if collected is not None:
            clean_staging(plan.effective_spec.parent, plan)
            return collected
    decision = decide(store, layout.root, record, force=options.force)
    if decision.skip and decision.matches is not None:
        clean_staging(plan.effective_spec.parent, plan)
        done = decision.matches
        outputs = sorted(p for p in plan.dest.iterdir() if p.is_file())
        if (
            done.batch is not None
            and done.batch.taken_for is not None
            and done.batch.taken_for == plan.job.dagster_run_id
        ):
            # Another run, holding the host, ran this run's prompt in its invocation while this one waited
            # (runs/company.py): that is this run's work, its record and history line already written.
            say(
                log,
                f"[cosmos-assets] {plan.stage} of {plan.job.prompt} was run for this run while it waited for the "
                f"host, in the shared invocation {done.batch.batch_id} (Dagster run {done.dagster_run_id}): "
                f"run {done.run_id}",
            )
            return StageResult(
                record=done,
                output_dir=plan.dest,
                video=backend.output_video(plan.dest),
                spec_used=done.spec_used(),
                outputs=outputs,
            )
        say(
            log,
            f"[cosmos-assets] {plan.stage} of {plan.job.prompt} skipped: {decision.reason}; nothing uploaded "
            "or started (run config force=true runs it again)",
        )
        append_history(layout.history_log, done.skipped_history(dagster_run_id=plan.job.dagster_run_id))
        return StageResult(
            record=done,
            output_dir=plan.dest,
            video=backend.output_video(plan.dest),
            spec_used=done.spec_used(),
            outputs=outputs,
            skipped=decision.reason,
        )
    say(log, f"[cosmos-assets] running {plan.stage} of {plan.job.prompt}: {decision.reason}")
    try:
        adoption = find_adoption(
            store,
            layout.history_log,
            machine,
            record,
            lambda rid: make_plan(rid).job,
            lambda job: backend.output_video(Path(job.output_folder), job.prompt).as_posix(),
            log,
            options.run_finished,
        )
    except HostNotReadyError as error:  # the same work is in progress elsewhere: this attempt is refused, on record
        clean_staging(plan.effective_spec.parent, plan)
        record_failure(layout, record, error, log, error_text=str(error).splitlines()[0])
        raise
    try:
        if adoption is None:
            return execute_plan(layout, machine, backend, plan, options, record=record)
        clean_staging(plan.effective_spec.parent, plan)  # this attempt's own plan is not used
        if adoption.record.gpu_price_per_hour is None:
            adoption.record.gpu_price_per_hour = options.gpu_price_per_hour
        return execute_plan(layout, machine, backend, make_plan(adoption.record.run_id), options, adoption=adoption)
    except OutOfMemory as error:
        retry = _offload_plan(backend, make_plan, error) if options.oom_retry_offload else None
        if retry is None:
            raise
        flags = oom.missing_offload_flags(backend, plan.job.invocation)
        say(
            log,
            f"[cosmos-assets] {retry.stage} of {retry.job.prompt} ran out of GPU memory in run {error.run_id}; "
            f"COSMOS_OOM_RETRY_OFFLOAD: retrying once as a new run {retry.job.run_id} with {' '.join(flags)}",
        )
        record = planned_record(layout, machine, backend, retry)
        record.gpu_price_per_hour = options.gpu_price_per_hour
        record.retry_of, record.flags_added = error.run_id, flags
        return execute_plan(layout, machine, backend, retry, options.replace(oom_retry_offload=True), record=record)


def _offload_plan(
    backend: ModelBackend, make_plan: Callable[[str], StagePlan], failed: OutOfMemory
) -> StagePlan | None:
    """The one retry of a run that ran out of GPU memory: a new run (``<run id>_offload``) with the offload flags the
    failed command lacked; None when it ran out of host memory or there is no flag left to add."""
    if failed.memory.kind != "gpu":
        return None
    plan = make_plan(oom.retry_run_id(failed.run_id))
    flags = oom.missing_offload_flags(backend, plan.job.invocation)
    return oom.offload_plan(plan, flags) if flags else None
