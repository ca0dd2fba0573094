"""Stages 4 and 5: the generated video and its 4K upscale, run on the GPU host resource by the chosen model."""

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from cosmos_assets.defs.resources.placement import is_terminating
from cosmos_assets.defs.resources.slots import ANY_GPU_POOL
from pydantic import Field

from cosmos_assets.defs.assets.prompts import prompt_specs
from cosmos_assets.defs.resources import GpuHost
from cosmos_assets.media import VideoReadError, probe_video
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.media.previews import preview_markdown, video_preview
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.defs.resources.waiting import company_for
from cosmos_assets.models.base import ModelBackend
from cosmos_assets.runs.company import own_result, run_with_company
from cosmos_assets.runs.gather import BatchWindow
from cosmos_assets.runs.plan import DEFAULT_UPSCALE_WEIGHT, StagePlan, model_for, plan_generation, plan_upscale, upscaler_for
from cosmos_assets.runs.causes import failure_cause, retryable
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.batch import BatchOptions, run_generations
from cosmos_assets.runs.options import RunOptions
from cosmos_assets.runs.stage import InferenceFailed, RunTerminated, StageResult

# Dagster 1.13.27 has no public way to give each partition of a multi-partition step its own data version (an
# output's data version and tags are shared by all its partitions): these tags are what it writes itself
# (execute_step._build_data_version_tags), put on one AssetMaterialization per partition.
from dagster._core.definitions.data_version import (  # noqa: E402
    CODE_VERSION_TAG as _CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG as _USER_PROVIDED_TAG,
    DATA_VERSION_TAG as _DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION as _DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER as _NULL_EVENT_POINTER,
    get_input_data_version_tag as _input_data_version_tag,
    get_input_event_pointer_tag as _input_event_pointer_tag,
)

# generated_videos' single-run backfill policy differs from its neighbours' (none): Dagster 1.13.27 warns at every
# resolution of a job holding both (generate_job, full_cycle_job, an ephemeral materialize) and gives that JOB one
# partition per run, which is what those jobs want (one prompt per request); batching comes from asset backfills
# and ranges, which follow each asset's own policy (docs/batching.md). That notice only is silenced.
warnings.filterwarnings("ignore", message=r"Asset job .* materializes assets with varying BackfillPolicies",
                        category=UserWarning)

GPU_POOL = ANY_GPU_POOL  # every GPU step waits here; a host pool adds one pool per host (docs/hosts.md)
"""Concurrency pool of the steps that hold the GPU host (limit it in dagster.yaml)."""


class GenerateConfig(dg.Config):
    model: str | None = Field(default=None, description="Model for this run: cosmos-transfer1, cosmos-transfer2.5 or cosmos3 (or transfer1, transfer2.5). Default: the prompt file's cosmos_assets.model, else COSMOS_MODEL (docs/models.md).")
    videos_subdir: str | None = Field(default=None, description="Use inputs/videos/<this>/ instead of the spec's shot folder (the seed's videos_subdir_override).")
    force: bool = Field(default=False, description="Run even when the last successful run did the same work and its outputs are unchanged (otherwise skipped).")
    num_gpus: int | None = Field(default=None, description="GPUs for one run: 1 runs python, more run torchrun; Transfer1: divides 16, Transfer2.5: 1/2/4/8, Cosmos 3: 1 or even. Default NUM_GPU, else 1.")
    batch_size: int = Field(default=1, ge=1, description="Several prompts in one run (a backfill): items Cosmos-Transfer1 generates at once in its batch mode (--batch_size). 1 (default): one after another after one model load; more needs more GPU memory (docs/batching.md).")


class UpscaleConfig(dg.Config):
    control_weight: float = Field(default=DEFAULT_UPSCALE_WEIGHT, ge=0.0, description="Upscale control weight (the seed's --upscale-weight).")
    num_gpus: int | None = Field(default=None, description="GPUs for one run; must divide 16. Default NUM_GPU, else 1.")
    force: bool = Field(default=False, description="Run even when the last successful upscale did the same work and its outputs are unchanged (otherwise skipped).")


def result_metadata(result: StageResult, log: dg.DagsterLogManager | None = None) -> dict[str, Any]:
    """What the UI shows for a generated or upscaled video, derived from the run record and the video itself."""
    record = result.record
    info = probe_video(result.video)
    metadata: dict[str, Any] = {
        "frame_count": info.frames,
        "resolution": f"{info.width}x{info.height}",
        "duration_seconds": round(info.duration, 3),
        "fps": round(info.fps, 3),
        **picture_metadata(result, log),
        "backend": record.model_label,
        "host": record.host,
        "gpu_seconds": round(record.gpu_seconds, 2),
        "inference_seconds": round(record.inference_seconds, 2),
        "num_gpus": record.num_gpus,
        "command": dg.MetadataValue.md(f"```\n{record.command_line}\n```"),
        "run_id": record.run_id,
        "shot": record.shot or "(none)",
        "output_dir": dg.MetadataValue.path(str(result.output_dir)),
        "video": dg.MetadataValue.path(str(result.video)),
        "upload_bytes": record.upload.bytes_sent,
        "upload_seconds": round(record.upload.seconds, 2),
        "upload_files_skipped": record.upload.files_skipped,
        "download_bytes": record.download.bytes_sent,
        "download_seconds": round(record.download.seconds, 2),
        "previous_run_moved_to": record.previous_moved_to or "(none)",
        "model_load_seconds": "(not derivable from this model's log)" if record.model_load_seconds is None
                              else round(record.model_load_seconds, 2),
        "cost": "(no COSMOS_GPU_PRICE_PER_HOUR set)" if record.cost is None else round(record.cost, 4),
        "skipped": result.skipped is not None,
        "batch_id": record.batch.batch_id if record.batch else "(not batched)",
        "batch_item": f"{record.batch.index + 1} of {record.batch.items}" if record.batch else "(not batched)",
        **gpu_metadata(record),
    }
    if result.skipped is not None:  # nothing ran: this materialization stands on an earlier run's outputs
        metadata |= {
            "skipped_because": result.skipped,
            "matches_run_id": record.run_id,
            "matches_run_finished_at": str(record.finished_at or record.updated_at),
            "gpu_seconds": 0.0, "inference_seconds": 0.0, "cost": 0.0,
            "upload_bytes": 0, "upload_seconds": 0.0, "upload_files_skipped": 0,
            "download_bytes": 0, "download_seconds": 0.0, "previous_run_moved_to": "(none)",
        }
    return metadata


def gpu_metadata(record: RunRecord) -> dict[str, Any]:
    """What the GPUs did while it ran (nvidia-smi sampled on the machine), and the offload retry it was, if any."""
    usage = record.gpu_usage.metadata() if record.gpu_usage is not None else {"gpu_util": "(not sampled: no nvidia-smi on this machine)"}
    if record.retry_of:
        usage |= {"retry_of": record.retry_of, "flags_added": " ".join(record.flags_added)}
    return usage


def picture_metadata(result: StageResult, log: dg.DagsterLogManager | None) -> dict[str, Any]:
    """First/middle/last frame inline (small JPEG) and the full-size sheet beside the video."""
    try:
        preview = video_preview(result.video, result.output_dir)
    except VideoReadError as error:
        if log is not None:
            log.warning(f"no preview frames: {error}")
        return {"frames_image": f"(no frames to show: {error})"}
    return {
        "frames_image": dg.MetadataValue.md(preview_markdown(preview, f"{result.stage}: first, middle, last frame")),
        "contact_sheet": dg.MetadataValue.path(str(preview.sheet_path)),
    }


GPU_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
"""Retries of a GPU step (30 s, then 60 s): only for causes a later attempt can fix (``runs.causes.RETRYABLE``: a
lost link, an unreachable host, docker that went away); every other failure is a ``Failure(allow_retries=False)``. A retry adopts what the failed attempt left."""


def terminating(context: dg.AssetExecutionContext) -> Callable[[], bool]:
    """Whether this run was terminated from outside: asked by the runner while the model runs, so a run no interrupt
    reaches (started by `dagster asset materialize`, terminated in the UI) still stops its GPU job."""
    instance, run_id = context.instance, context.run.run_id
    return lambda: is_terminating(instance, run_id)


def run_has_ended(context: dg.AssetExecutionContext) -> Callable[[str], bool]:
    """Whether a Dagster run has ended: a left-behind GPU job whose run was failed by Dagster (its run worker
    container died, seen by run monitoring) is followed by nobody, wherever its worker was (runs/adopt.py)."""
    instance = context.instance

    def ended(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    return ended


def terminated(error: BaseException) -> dg.Failure:
    """A terminated step (UI Terminate, Ctrl-C): its GPU job is already stopped. Dagster 1.13.27 turns an interrupt
    of a step that has a RetryPolicy into a retry (``op_execution_error_boundary``), which would start it again:
    this Failure is never retried, and Dagster still ends a CANCELING run as canceled."""
    return dg.Failure(description="terminated: the GPU job was stopped and its container removed",
                      metadata={"cause": "cancelled", "retryable": False}, allow_retries=False)  # fmt: skip


def failure_from(error: Exception) -> dg.Failure:
    """The step's failure, with its cause; retried (by GPU_RETRY) only when the cause is retryable."""
    cause = failure_cause(error)
    metadata: dict[str, Any] = {"cause": cause, "retryable": retryable(cause)}
    if isinstance(error, InferenceFailed):
        metadata |= {
            "log_tail": dg.MetadataValue.md("```\n" + "\n".join(error.log_tail[-30:]) + "\n```"),
            "log": dg.MetadataValue.path(str(error.log_path)),
            "guardrail_blocked": error.guardrail_blocked,
        }
    return dg.Failure(description=str(error).splitlines()[0] if str(error) else type(error).__name__,
                      metadata=metadata, allow_retries=retryable(cause))  # fmt: skip


# No code_version on the GPU assets: what makes their output (model, image, spec, inputs, settings, GPUs) is chosen
# per run and is all in the data version (the inputs digest); a hand-bumped constant would mark every prompt stale
# for a change of this module that alters no output, and a bump that does matter is not a reason to skip anyway.
def _run_options(context: dg.AssetExecutionContext, project: ProjectResource, num_gpus: int | None,
                 force: bool) -> RunOptions:  # fmt: skip
    """What both GPU steps pass the runner: the run's identity, its log, and the deployment's run settings."""
    return RunOptions(
        dagster_run_id=context.run.run_id,
        num_gpus=num_gpus or project.num_gpus,
        log=context.log.info,
        silence_minutes=project.model_silence_minutes,
        cancelled=terminating(context),
        force=force,
        gpu_price_per_hour=project.gpu_price_per_hour,
        oom_retry_offload=project.oom_retry_offload,
        run_finished=run_has_ended(context),
    )


def _gpu_step(run: Callable[[], StageResult]) -> StageResult:
    """Run a GPU stage; a termination and every failure become the Dagster Failure that says whether to retry."""
    try:
        return run()
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt, RunTerminated) as error:
        raise terminated(error) from error  # the runner stopped the GPU job; Dagster would retry a bare interrupt
    except Exception as error:
        raise failure_from(error) from error


def _data_version_tags(context: dg.AssetExecutionContext, prompt: str, version: str) -> dict[str, str]:
    """The data-version tags Dagster would write for ``prompt`` alone: its version, and each upstream asset's data
    version and event of the same partition (identity mappings), so staleness is judged per prompt."""
    tags = {_CODE_VERSION_TAG: context.run.run_id, _DATA_VERSION_TAG: version, _USER_PROVIDED_TAG: "true"}
    for dep in context.assets_def.asset_deps[context.asset_key]:
        found = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dep, asset_partitions=[prompt]),
                                                        limit=1).records  # fmt: skip
        event = found[0].asset_materialization if found else None
        dep_version = (event.tags or {}).get(_DATA_VERSION_TAG) if event is not None else None
        tags[_input_data_version_tag(dep)] = dep_version or _DEFAULT_DATA_VERSION.value
        tags[_input_event_pointer_tag(dep)] = str(found[0].storage_id) if found else _NULL_EVENT_POINTER
    return tags


def _batch_failure(failures: dict[str, BaseException], total: int) -> dg.Failure:
    """The step's failure when some prompts of a batched run failed: each named with its cause; retried only if one
    of them can be helped by a retry (a retry skips the prompts that succeeded)."""
    causes = {prompt: failure_cause(error) if isinstance(error, Exception) else "cancelled" for prompt, error in failures.items()}
    first = {prompt: (str(error).splitlines() or [type(error).__name__])[0] for prompt, error in failures.items()}
    metadata: dict[str, Any] = {
        "failed_prompts": dg.MetadataValue.json({p: {"cause": c, "error": first[p]} for p, c in causes.items()}),
        "guardrail_blocked": sorted(p for p, c in causes.items() if c == "guardrail_blocked"),
        "retryable": any(retryable(c) for c in causes.values()),
    }
    named = ", ".join(f"{p} ({c})" for p, c in causes.items())
    return dg.Failure(description=f"{len(failures)} of {total} prompts failed: {named}; the others are materialized",
                      metadata=metadata, allow_retries=metadata["retryable"])  # fmt: skip


def _generate_batch(context: dg.AssetExecutionContext, config: GenerateConfig, project: ProjectResource,
                    gpu_host: GpuHost) -> None:  # fmt: skip
    """Several prompts in one run (a backfill, or --partition-range): per model, one host, and per batch key one
    invocation (runs/batch.py); each prompt materialized as it succeeds, with its own metadata and data version."""
    keys = list(context.partition_keys)
    failures: dict[str, BaseException] = {}
    by_model: dict[str, list[str]] = {}
    backends: dict[str, Any] = {}
    for key in keys:
        try:
            backends[key] = model_for(project.layout, key, config.model, gpu_host.model)
            by_model.setdefault(backends[key].name, []).append(key)
        except (ValueError, FileNotFoundError) as error:
            failures[key] = error
    context.log.info(f"{len(keys)} prompts in this run: " + "; ".join(f"{m}: {', '.join(p)}" for m, p in by_model.items()))
    for model, prompts in by_model.items():
        def work(host: GpuHost, prompts: list[str] = prompts) -> dict:
            options = BatchOptions.of(host.priced(_run_options(context, project, config.num_gpus, config.force)),
                                      videos_subdir=config.videos_subdir, batch_size=config.batch_size)  # fmt: skip
            return run_generations(project.layout, prompts, backends.__getitem__, lambda b: host.machine_for(b.name), options)

        try:
            outcomes = gpu_host.on_free_host(context, model, work)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt, RunTerminated) as error:
            raise terminated(error) from error
        except Exception as error:  # noqa: BLE001 - no host for this model: its prompts fail, the others went on
            failures |= {prompt: error for prompt in prompts}
            continue
        for prompt, outcome in outcomes.items():
            if outcome.result is None:
                failures[prompt] = outcome.error or RuntimeError(f"{prompt}: no result")
                continue
            context.log_event(dg.AssetMaterialization(
                asset_key=context.asset_key, partition=prompt, metadata=result_metadata(outcome.result, context.log),
                tags=_data_version_tags(context, prompt, outcome.result.data_version)))  # fmt: skip
    if failures:
        raise _batch_failure(failures, len(keys))


# backfill_policy is a beta parameter in Dagster 1.13.27: that notice only is silenced, at this definition.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    _generated_videos_asset = dg.asset(
        partitions_def=PROMPTS,
        deps=[prompt_specs],
        group_name="generation",
        pool=GPU_POOL,
        retry_policy=GPU_RETRY,
        kinds={"docker", "mp4"},
        # One run for a backfill of many prompts; prompts that can share a model load share one invocation
        # (docs/batching.md). Such a run materializes each prompt by an event of its own and yields no output.
        backfill_policy=dg.BackfillPolicy.single_run(),
        output_required=False,
        description=(
            "The model's output for one prompt: uploads the spec and control videos to the GPU host, runs "
            "inference in Docker with live logs, downloads `outputs/<prompt>/` (output.mp4, spec_used.json, "
            "prompt_spec.json, run.log). With COSMOS_HOST=preview the preview backend runs instead of the model. "
            "Skipped (nothing uploaded or started) when its last successful run did the same work and left its outputs "
            "unchanged; config `force` runs it anyway. Data version: the run's inputs digest. A backfill of several "
            "prompts is one run, and prompts that can share a model load share one invocation (docs/batching.md)."
        ),
    )


@_generated_videos_asset
def generated_videos(context: dg.AssetExecutionContext, config: GenerateConfig, project: ProjectResource, gpu_host: GpuHost) -> Iterator[dg.MaterializeResult]:
    if not context.has_partition_key:  # several prompts in one run
        _generate_batch(context, config, project, gpu_host)
        return
    yield _generate_one(context, config, project, gpu_host)


def _generate_one(context: dg.AssetExecutionContext, config: GenerateConfig, project: ProjectResource, gpu_host: GpuHost) -> dg.MaterializeResult:
    try:
        backend = model_for(project.layout, context.partition_key, config.model, gpu_host.model)
    except (ValueError, FileNotFoundError) as error:  # an unknown model name, or an unreadable prompt file
        raise dg.Failure(description=str(error).splitlines()[0], allow_retries=False) from error
    context.log.info(f"model: {backend.label} (run config > prompt file's cosmos_assets.model > COSMOS_MODEL)")
    layout, run_id = project.layout, context.run.run_id

    def work(host: GpuHost) -> StageResult:
        options = BatchOptions.of(host.priced(_run_options(context, project, config.num_gpus, config.force)),
                                  videos_subdir=config.videos_subdir, batch_size=config.batch_size)  # fmt: skip

        def planner(b: ModelBackend, prompt: str, rid: str) -> StagePlan:
            return plan_generation(layout, b, prompt, run_id=rid, dagster_run_id=run_id,
                                   videos_subdir=config.videos_subdir, num_gpus=options.num_gpus)  # fmt: skip

        def backend_for(prompt: str) -> ModelBackend:
            return model_for(layout, prompt, config.model, gpu_host.model)

        find = company_for(context, layout, host.label, config, GenerateConfig, _window(project),
                           able_hosts=_able(gpu_host, backend.name))  # fmt: skip
        return own_result(run_with_company(layout, context.partition_key, find, backend_for,
                                           host.machine_for(backend.name), options, planner), context.partition_key,
                          context.log.info)  # fmt: skip

    # on_free_host: the first free host of the pool that has the model holds its Dagster slot meanwhile (docs/hosts.md);
    # the prompts waiting for that host that can share the model load run in the same invocation (docs/batching.md)
    result = _gpu_step(lambda: gpu_host.on_free_host(context, backend.name, work,
                                                     left_behind=(layout.runs_dir, context.partition_key, "generate")))  # fmt: skip
    return dg.MaterializeResult(metadata=result_metadata(result, context.log), data_version=dg.DataVersion(result.data_version))


def _window(project: ProjectResource) -> BatchWindow:
    return BatchWindow(project.batch_window_seconds, project.batch_max_prompts)


def _able(gpu_host: GpuHost, model: str) -> int:
    return sum(1 for member in gpu_host.members() if member.has_model(model))


@dg.asset(
    partitions_def=PROMPTS,
    deps=[generated_videos],
    group_name="generation",
    pool=GPU_POOL,
    retry_policy=GPU_RETRY,
    kinds={"docker", "mp4"},
    description=(
        "The 4K upscale of the generated video (spec `{input_video_path, upscale: {control_weight}}`, weight 0.5 "
        "by default) into `outputs/<prompt>_upscaled/`. Leave it out of a selection to skip it (the seed's --no-upscale). "
        "Skipped like the generation when nothing changed (config `force` runs it anyway)."
    ),
)
def upscaled_videos(context: dg.AssetExecutionContext, config: UpscaleConfig, project: ProjectResource, gpu_host: GpuHost) -> dg.MaterializeResult:
    layout, run_id = project.layout, context.run.run_id
    upscaler = upscaler_for(gpu_host.model)  # Transfer1's 4K upscaler whichever model generated

    def work(host: GpuHost) -> StageResult:
        options = BatchOptions.of(host.priced(_run_options(context, project, config.num_gpus, config.force)))

        def planner(b: ModelBackend, prompt: str, rid: str) -> StagePlan:
            return plan_upscale(layout, b, prompt, run_id=rid, dagster_run_id=run_id,
                                control_weight=config.control_weight, num_gpus=options.num_gpus)  # fmt: skip

        find = company_for(context, layout, host.label, config, UpscaleConfig, _window(project),
                           able_hosts=_able(gpu_host, upscaler.name))  # fmt: skip
        return own_result(run_with_company(layout, context.partition_key, find, lambda prompt: upscaler,
                                           host.machine_for(upscaler.name), options, planner, stage="upscale"),
                          context.partition_key, context.log.info)  # fmt: skip

    def upscale() -> StageResult:
        return gpu_host.on_free_host(context, upscaler.name, work, left_behind=(layout.runs_dir, context.partition_key, "upscale"))

    result = _gpu_step(upscale)
    metadata = result_metadata(result, context.log)
    metadata["control_weight"] = config.control_weight
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(result.data_version))
