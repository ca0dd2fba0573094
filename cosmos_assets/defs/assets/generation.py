"""Stages 4 and 5: the generated video and its 4K upscale, run on the GPU host resource by the chosen model."""

import warnings
from collections.abc import Iterator
from typing import Any

import dagster as dg

# Dagster 1.13.27 has no public way to give each partition of a multi-partition step its own data version (an
# output's data version and tags are shared by all its partitions): these tags are what it writes itself
# (execute_step._build_data_version_tags), put on one AssetMaterialization per partition.
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG as _CODE_VERSION_TAG,
)
from dagster._core.definitions.data_version import (
    DATA_VERSION_IS_USER_PROVIDED_TAG as _USER_PROVIDED_TAG,
)
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG as _DATA_VERSION_TAG,
)
from dagster._core.definitions.data_version import (
    DEFAULT_DATA_VERSION as _DEFAULT_DATA_VERSION,
)
from dagster._core.definitions.data_version import (
    NULL_EVENT_POINTER as _NULL_EVENT_POINTER,
)
from dagster._core.definitions.data_version import (
    get_input_data_version_tag as _input_data_version_tag,
)
from dagster._core.definitions.data_version import (
    get_input_event_pointer_tag as _input_event_pointer_tag,
)
from pydantic import Field

from cosmos_assets.defs.assets.gpu_step import GPU_RETRY, gpu_step, run_has_ended, terminated, terminating
from cosmos_assets.defs.assets.prompts import prompt_specs
from cosmos_assets.defs.assets.run_metadata import result_metadata
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.resources import GpuHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.defs.resources.slots import ANY_GPU_POOL
from cosmos_assets.defs.resources.waiting import company_for
from cosmos_assets.models.base import ModelBackend
from cosmos_assets.runs.batch import run_generations
from cosmos_assets.runs.batch_members import BatchOptions
from cosmos_assets.runs.causes import failure_cause, retryable
from cosmos_assets.runs.company import own_result, run_with_company
from cosmos_assets.runs.gather import BatchWindow
from cosmos_assets.runs.options import RunOptions
from cosmos_assets.runs.plan import (
    DEFAULT_UPSCALE_WEIGHT,
    StagePlan,
    model_for,
    plan_generation,
    plan_upscale,
    upscaler_for,
)
from cosmos_assets.runs.stage import RunTerminated, StageResult

# generated_videos' single-run backfill policy differs from its neighbours' (none): Dagster 1.13.27 warns at every
# resolution of a job holding both (generate_job, full_cycle_job, an ephemeral materialize) and gives that JOB one
# partition per run, which is what those jobs want (one prompt per request); batching comes from asset backfills
# and ranges, which follow each asset's own policy (docs/batching.md). That notice only is silenced.
warnings.filterwarnings(
    "ignore", message=r"Asset job .* materializes assets with varying BackfillPolicies", category=UserWarning
)

GPU_POOL = ANY_GPU_POOL  # every GPU step waits here; a host pool adds one pool per host (docs/hosts.md)
"""Concurrency pool of the steps that hold the GPU host (limit it in dagster.yaml)."""


class GenerateConfig(dg.Config):
    model: str | None = Field(
        default=None,
        description="Model for this run: cosmos-transfer1, cosmos-transfer2.5 or cosmos3 (or transfer1, transfer2.5). Default: the prompt file's cosmos_assets.model, else COSMOS_MODEL (docs/models.md).",
    )
    videos_subdir: str | None = Field(
        default=None,
        description="Use inputs/videos/<this>/ instead of the spec's shot folder (the seed's videos_subdir_override).",
    )
    force: bool = Field(
        default=False,
        description="Run even when the last successful run did the same work and its outputs are unchanged (otherwise skipped).",
    )
    num_gpus: int | None = Field(
        default=None,
        description="GPUs for one run: 1 runs python, more run torchrun; Transfer1: divides 16, Transfer2.5: 1/2/4/8, Cosmos 3: 1 or even. Default NUM_GPU, else 1.",
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        description="Several prompts in one run (a backfill): items Cosmos-Transfer1 generates at once in its batch mode (--batch_size). 1 (default): one after another after one model load; more needs more GPU memory (docs/batching.md).",
    )


class UpscaleConfig(dg.Config):
    control_weight: float = Field(
        default=DEFAULT_UPSCALE_WEIGHT, ge=0.0, description="Upscale control weight (the seed's --upscale-weight)."
    )
    num_gpus: int | None = Field(default=None, description="GPUs for one run; must divide 16. Default NUM_GPU, else 1.")
    force: bool = Field(
        default=False,
        description="Run even when the last successful upscale did the same work and its outputs are unchanged (otherwise skipped).",
    )


# No code_version on the GPU assets: what makes their output (model, image, spec, inputs, settings, GPUs) is chosen
# per run and is all in the data version (the inputs digest); a hand-bumped constant would mark every prompt stale
# for a change of this module that alters no output, and a bump that does matter is not a reason to skip anyway.
def _run_options(
    context: dg.AssetExecutionContext, project: ProjectResource, num_gpus: int | None, force: bool
) -> RunOptions:
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


def _data_version_tags(context: dg.AssetExecutionContext, prompt: str, version: str) -> dict[str, str]:
    """The data-version tags Dagster would write for ``prompt`` alone: its version, and each upstream asset's data
    version and event of the same partition (identity mappings), so staleness is judged per prompt."""
    tags = {_CODE_VERSION_TAG: context.run.run_id, _DATA_VERSION_TAG: version, _USER_PROVIDED_TAG: "true"}
    for dep in context.assets_def.asset_deps[context.asset_key]:
        found = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dep, asset_partitions=[prompt]), limit=1
        ).records
        event = found[0].asset_materialization if found else None
        dep_version = (event.tags or {}).get(_DATA_VERSION_TAG) if event is not None else None
        tags[_input_data_version_tag(dep)] = dep_version or _DEFAULT_DATA_VERSION.value
        tags[_input_event_pointer_tag(dep)] = str(found[0].storage_id) if found else _NULL_EVENT_POINTER
    return tags


def _batch_failure(failures: dict[str, BaseException], total: int) -> dg.Failure:
    """The step's failure when some prompts of a batched run failed: each named with its cause; retried only if one
    of them can be helped by a retry (a retry skips the prompts that succeeded)."""
    causes = {
        prompt: failure_cause(error) if isinstance(error, Exception) else "cancelled"
        for prompt, error in failures.items()
    }
    first = {prompt: (str(error).splitlines() or [type(error).__name__])[0] for prompt, error in failures.items()}
    metadata: dict[str, Any] = {
        "failed_prompts": dg.MetadataValue.json({p: {"cause": c, "error": first[p]} for p, c in causes.items()}),
        "guardrail_blocked": sorted(p for p, c in causes.items() if c == "guardrail_blocked"),
        "retryable": any(retryable(c) for c in causes.values()),
    }
    named = ", ".join(f"{p} ({c})" for p, c in causes.items())
    return dg.Failure(
        description=f"{len(failures)} of {total} prompts failed: {named}; the others are materialized",
        metadata=metadata,
        allow_retries=metadata["retryable"],
    )


def _generate_batch(
    context: dg.AssetExecutionContext, config: GenerateConfig, project: ProjectResource, gpu_host: GpuHost
) -> None:
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
    context.log.info(
        f"{len(keys)} prompts in this run: " + "; ".join(f"{m}: {', '.join(p)}" for m, p in by_model.items())
    )
    for model, prompts in by_model.items():

        def work(host: GpuHost, prompts: list[str] = prompts) -> dict:
            options = BatchOptions.of(
                host.priced(_run_options(context, project, config.num_gpus, config.force)),
                videos_subdir=config.videos_subdir,
                batch_size=config.batch_size,
            )
            return run_generations(
                project.layout, prompts, backends.__getitem__, lambda b: host.machine_for(b.name), options
            )

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
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=context.asset_key,
                    partition=prompt,
                    metadata=result_metadata(outcome.result, context.log),
                    tags=_data_version_tags(context, prompt, outcome.result.data_version),
                )
            )
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
def generated_videos(
    context: dg.AssetExecutionContext, config: GenerateConfig, project: ProjectResource, gpu_host: GpuHost
) -> Iterator[dg.MaterializeResult]:
    if not context.has_partition_key:  # several prompts in one run
        _generate_batch(context, config, project, gpu_host)
        return
    yield _generate_one(context, config, project, gpu_host)


def _generate_one(
    context: dg.AssetExecutionContext, config: GenerateConfig, project: ProjectResource, gpu_host: GpuHost
) -> dg.MaterializeResult:
    try:
        backend = model_for(project.layout, context.partition_key, config.model, gpu_host.model)
    except (ValueError, FileNotFoundError) as error:  # an unknown model name, or an unreadable prompt file
        raise dg.Failure(description=str(error).splitlines()[0], allow_retries=False) from error
    context.log.info(f"model: {backend.label} (run config > prompt file's cosmos_assets.model > COSMOS_MODEL)")
    layout, run_id = project.layout, context.run.run_id

    def work(host: GpuHost) -> StageResult:
        options = BatchOptions.of(
            host.priced(_run_options(context, project, config.num_gpus, config.force)),
            videos_subdir=config.videos_subdir,
            batch_size=config.batch_size,
        )

        def planner(b: ModelBackend, prompt: str, rid: str) -> StagePlan:
            return plan_generation(
                layout,
                b,
                prompt,
                run_id=rid,
                dagster_run_id=run_id,
                videos_subdir=config.videos_subdir,
                num_gpus=options.num_gpus,
            )

        def backend_for(prompt: str) -> ModelBackend:
            return model_for(layout, prompt, config.model, gpu_host.model)

        find = company_for(
            context,
            layout,
            host.label,
            config,
            GenerateConfig,
            _window(project),
            able_hosts=_able(gpu_host, backend.name),
        )
        return own_result(
            run_with_company(
                layout, context.partition_key, find, backend_for, host.machine_for(backend.name), options, planner
            ),
            context.partition_key,
            context.log.info,
        )

    # on_free_host: the first free host of the pool that has the model holds its Dagster slot meanwhile (docs/hosts.md);
    # the prompts waiting for that host that can share the model load run in the same invocation (docs/batching.md)
    result = gpu_step(
        lambda: gpu_host.on_free_host(
            context, backend.name, work, left_behind=(layout.runs_dir, context.partition_key, "generate")
        )
    )
    return dg.MaterializeResult(
        metadata=result_metadata(result, context.log), data_version=dg.DataVersion(result.data_version)
    )


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
def upscaled_videos(
    context: dg.AssetExecutionContext, config: UpscaleConfig, project: ProjectResource, gpu_host: GpuHost
) -> dg.MaterializeResult:
    layout, run_id = project.layout, context.run.run_id
    upscaler = upscaler_for(gpu_host.model)  # Transfer1's 4K upscaler whichever model generated

    def work(host: GpuHost) -> StageResult:
        options = BatchOptions.of(host.priced(_run_options(context, project, config.num_gpus, config.force)))

        def planner(b: ModelBackend, prompt: str, rid: str) -> StagePlan:
            return plan_upscale(
                layout,
                b,
                prompt,
                run_id=rid,
                dagster_run_id=run_id,
                control_weight=config.control_weight,
                num_gpus=options.num_gpus,
            )

        find = company_for(
            context,
            layout,
            host.label,
            config,
            UpscaleConfig,
            _window(project),
            able_hosts=_able(gpu_host, upscaler.name),
        )
        return own_result(
            run_with_company(
                layout,
                context.partition_key,
                find,
                lambda prompt: upscaler,
                host.machine_for(upscaler.name),
                options,
                planner,
                stage="upscale",
            ),
            context.partition_key,
            context.log.info,
        )

    def upscale() -> StageResult:
        return gpu_host.on_free_host(
            context, upscaler.name, work, left_behind=(layout.runs_dir, context.partition_key, "upscale")
        )

    result = gpu_step(upscale)
    metadata = result_metadata(result, context.log)
    metadata["control_weight"] = config.control_weight
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(result.data_version))
