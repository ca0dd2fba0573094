"""Stage 2: control videos. A shot's three PNG passes encoded to MP4 in-process with PyAV."""

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from cosmos_assets.defs.assets.renders import shots
from cosmos_assets.defs.check_results import to_result
from cosmos_assets.defs.partitions import SHOTS
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.media import MODALITIES, EncodedVideo, VideoReadError, encode_control_videos, scan_render_folder
from cosmos_assets.media.previews import control_preview, preview_markdown
from cosmos_assets.progress import Throttle
from cosmos_assets.runs.output_rules import check_controls_match_render

PROGRESS_EVERY_SECONDS = 3.0


class ControlVideosConfig(dg.Config):
    max_frames: int | None = Field(
        default=None, ge=1, description="Encode only the first N frames (the seed's frame_count)."
    )


def throttled_progress(
    log: Callable[[str], None], every: float = PROGRESS_EVERY_SECONDS
) -> Callable[[str, int, int], None]:
    """A progress callback that logs each modality's first frame, then at most every ``every`` seconds, and its last frame."""
    throttle = Throttle(every, first_due=True)

    def report(modality: str, done: int, total: int) -> None:
        if throttle.due(modality, final=done == total):
            log(f"encode {modality}: {done}/{total} frames")

    return report


with warnings.catch_warnings():  # a partitioned check spec is a preview feature in 1.13.27: that notice only
    warnings.simplefilter("ignore", dg.PreviewWarning)
    MATCH_RENDER_CHECK = dg.AssetCheckSpec(
        "controls_match_render",
        asset="control_videos",
        partitions_def=SHOTS,
        blocking=True,
        description="The three control videos have the render's frame count (or max_frames), its size padded to even, yuv420p.",
    )


@dg.asset(
    partitions_def=SHOTS,
    deps=[shots],
    group_name="controls",
    kinds={"pyav", "mp4"},
    check_specs=[MATCH_RENDER_CHECK],
    description=(
        "The shot's control videos `inputs/videos/<shot>/{color,depth,segmentation}.mp4`: H.264, CRF 18, yuv420p, "
        "24 fps (the seed's settings), encoded in-process with PyAV. Depth is inverted (near is bright) and "
        "normalised once over the clip, as Cosmos' depth control expects."
    ),
)
def control_videos(
    context: dg.AssetExecutionContext, config: ControlVideosConfig, project: ProjectResource
) -> dg.MaterializeResult:
    layout = project.layout
    shot = context.partition_key
    sequence = scan_render_folder(layout.render_dir(shot))
    out_dir = layout.shot_videos_dir(shot)
    started = time.monotonic()
    videos = encode_control_videos(
        sequence, out_dir, max_frames=config.max_frames, progress=throttled_progress(context.log.info)
    )
    seconds = time.monotonic() - started
    color = videos["color"]
    metadata: dict[str, Any] = {
        "frame_count": color.frames,
        "render_frame_count": sequence.frame_count,
        "max_frames": config.max_frames if config.max_frames is not None else "(all)",
        "duration_seconds": round(color.frames / color.fps, 3),
        "resolution": f"{color.width}x{color.height}",
        "render_resolution": f"{sequence.width}x{sequence.height}",
        "padded_to_even": any(v.padded for v in videos.values()),
        "fps": color.fps,
        **preview_metadata(videos, out_dir, context.log),
        "folder": dg.MetadataValue.path(str(out_dir)),
        "encode_seconds": round(seconds, 2),
        "total_bytes": sum(v.bytes for v in videos.values()),
    }
    for name, video in videos.items():
        metadata[f"{name}_path"] = dg.MetadataValue.path(str(video.path))
    report = check_controls_match_render(
        {m: videos[m].path for m in MODALITIES},
        sequence.frame_count,
        (sequence.width, sequence.height),
        config.max_frames,
    )
    check = to_result(report, "the passes match the render", MATCH_RENDER_CHECK.name)
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


def preview_metadata(videos: dict[str, EncodedVideo], out_dir: Path, log: dg.DagsterLogManager) -> dict[str, Any]:
    """The contact sheet of the passes as an inline thumbnail plus the full sheet's path; a warning if it cannot be made."""
    try:
        preview = control_preview({m: videos[m].path for m in MODALITIES}, out_dir)
    except VideoReadError as error:
        log.warning(f"no contact sheet: {error}")
        return {"contact_sheet_image": f"(no contact sheet: {error})"}
    caption = "rows: " + ", ".join(MODALITIES) + "; columns: first, middle, last frame"
    return {
        "contact_sheet_image": dg.MetadataValue.md(preview_markdown(preview, caption)),
        "contact_sheet": dg.MetadataValue.path(str(preview.sheet_path)),
    }
