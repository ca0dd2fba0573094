"""Stages 4 and 5: the generated video and its 4K upscale, run on the GPU host resource by the chosen model."""

from typing import Any

import dagster as dg
from pydantic import Field

from cosmos_assets.assets.prompts import prompt_specs
from cosmos_assets.hosts import GpuHost
from cosmos_assets.media import VideoReadError, probe_video
from cosmos_assets.models import backend_named
from cosmos_assets.partitions import PROMPTS
from cosmos_assets.previews import preview_markdown, video_preview
from cosmos_assets.resources import ProjectResource
from cosmos_assets.runs.plan import DEFAULT_UPSCALE_WEIGHT
from cosmos_assets.runs.runner import InferenceFailed, StageResult, run_generation, run_upscale

GPU_POOL = "gpu_host"
"""Concurrency pool of the steps that hold the GPU host (limit it in dagster.yaml)."""


class GenerateConfig(dg.Config):
    videos_subdir: str | None = Field(default=None, description="Use inputs/videos/<this>/ instead of the spec's shot folder (the seed's videos_subdir_override).")
    num_gpus: int | None = Field(default=None, description="GPUs for one run: 1 runs python3, more run torchrun; must divide 16. Default NUM_GPU, else 1.")


class UpscaleConfig(dg.Config):
    control_weight: float = Field(default=DEFAULT_UPSCALE_WEIGHT, ge=0.0, description="Upscale control weight (the seed's --upscale-weight).")
    num_gpus: int | None = Field(default=None, description="GPUs for one run; must divide 16. Default NUM_GPU, else 1.")


def result_metadata(result: StageResult, log: dg.DagsterLogManager | None = None) -> dict[str, Any]:
    """What the UI shows for a generated or upscaled video, derived from the run record and the video itself."""
    record = result.record
    info = probe_video(result.video)
    return {
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
    }


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


def failure_from(error: InferenceFailed) -> dg.Failure:
    return dg.Failure(
        description=str(error).splitlines()[0],
        metadata={
            "log_tail": dg.MetadataValue.md("```\n" + "\n".join(error.log_tail[-30:]) + "\n```"),
            "log": dg.MetadataValue.path(str(error.log_path)),
            "guardrail_blocked": error.guardrail_blocked,
        },
        allow_retries=not error.guardrail_blocked,
    )


@dg.asset(
    partitions_def=PROMPTS,
    deps=[prompt_specs],
    group_name="generation",
    pool=GPU_POOL,
    kinds={"docker", "mp4"},
    description=(
        "The model's output for one prompt: uploads the spec and control videos to the GPU host, runs "
        "inference in Docker with live logs, downloads `outputs/<prompt>/` (output.mp4, spec_used.json, "
        "prompt_spec.json, run.log). With COSMOS_HOST=preview the preview backend runs instead of the model."
    ),
)
def generated_videos(context: dg.AssetExecutionContext, config: GenerateConfig, project: ProjectResource, gpu_host: GpuHost) -> dg.MaterializeResult:
    try:
        result = run_generation(
            project.layout,
            gpu_host.machine(),
            backend_named(gpu_host.model),
            context.partition_key,
            dagster_run_id=context.run.run_id,
            videos_subdir=config.videos_subdir,
            num_gpus=config.num_gpus or project.num_gpus,
            log=context.log.info,
        )
    except InferenceFailed as error:
        raise failure_from(error) from error
    return dg.MaterializeResult(metadata=result_metadata(result, context.log))


@dg.asset(
    partitions_def=PROMPTS,
    deps=[generated_videos],
    group_name="generation",
    pool=GPU_POOL,
    kinds={"docker", "mp4"},
    description=(
        "The 4K upscale of the generated video (spec `{input_video_path, upscale: {control_weight}}`, weight 0.5 "
        "by default) into `outputs/<prompt>_upscaled/`. Leave it out of a selection to skip it (the seed's --no-upscale)."
    ),
)
def upscaled_videos(context: dg.AssetExecutionContext, config: UpscaleConfig, project: ProjectResource, gpu_host: GpuHost) -> dg.MaterializeResult:
    try:
        result = run_upscale(
            project.layout,
            gpu_host.machine(),
            backend_named(gpu_host.model),
            context.partition_key,
            dagster_run_id=context.run.run_id,
            control_weight=config.control_weight,
            num_gpus=config.num_gpus or project.num_gpus,
            log=context.log.info,
        )
    except InferenceFailed as error:
        raise failure_from(error) from error
    metadata = result_metadata(result, context.log)
    metadata["control_weight"] = config.control_weight
    return dg.MaterializeResult(metadata=metadata)
