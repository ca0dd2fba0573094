"""What a GPU step shows in the UI for its run: the record's figures (host, model, times, transfers, cost), how the model
was served, the GPU's use, and a still and a contact sheet of the video. Derived from the run record."""

from __future__ import annotations

from typing import Any

import dagster as dg

from cosmos_assets.media import VideoReadError, probe_video
from cosmos_assets.media.previews import preview_markdown, video_preview
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.stage import StageResult


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
        "model_load_seconds": "(not derivable from this model's log)"
        if record.model_load_seconds is None
        else round(record.model_load_seconds, 2),
        "cost": "(no COSMOS_GPU_PRICE_PER_HOUR set)" if record.cost is None else round(record.cost, 4),
        "skipped": result.skipped is not None,
        "batch_id": record.batch.batch_id if record.batch else "(not batched)",
        "batch_item": f"{record.batch.index + 1} of {record.batch.items}" if record.batch else "(not batched)",
        **gpu_metadata(record),
        **serving_metadata(record),
    }
    if result.skipped is not None:  # nothing ran: this materialization stands on an earlier run's outputs
        metadata |= {
            "skipped_because": result.skipped,
            "matches_run_id": record.run_id,
            "matches_run_finished_at": str(record.finished_at or record.updated_at),
            "gpu_seconds": 0.0,
            "inference_seconds": 0.0,
            "cost": 0.0,
            "upload_bytes": 0,
            "upload_seconds": 0.0,
            "upload_files_skipped": 0,
            "download_bytes": 0,
            "download_seconds": 0.0,
            "previous_run_moved_to": "(none)",
        }
    return metadata


def serving_metadata(record: RunRecord) -> dict[str, Any]:
    """Which served the run (docs/serving.md): the resident model service (its container, the load it waited for) or
    a one-shot container, and why."""
    serving = record.serving
    if serving is None:
        return {}
    return {
        "served_by": "one-shot"
        if serving.mode == "one-shot"
        else f"service {serving.service_id or serving.service_container}",
        "served_why": serving.reason,
        **(
            {
                "service_load_seconds": "(loaded already)"
                if serving.load_seconds is None
                else round(serving.load_seconds, 2),
                "service_restarted": serving.restarted or "(no)",
            }
            if serving.mode == "served"
            else {}
        ),
    }


def gpu_metadata(record: RunRecord) -> dict[str, Any]:
    """What the GPUs did while it ran (nvidia-smi sampled on the machine), and the offload retry it was, if any."""
    usage = (
        record.gpu_usage.metadata()
        if record.gpu_usage is not None
        else {"gpu_util": "(not sampled: no nvidia-smi on this machine)"}
    )
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
