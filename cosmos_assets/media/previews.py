"""Pictures of videos for the Dagster UI: contact sheets, a small JPEG thumbnail, the markdown that shows it.

Plain Python (numpy + PyAV), no Dagster. Two sizes of one picture:

- the **contact sheet**, a PNG written next to the outputs (``inputs/videos/<shot>/contact_sheet.png``,
  ``outputs/<prompt>/contact_sheet.png``), tiles at most ``SHEET_TILE_WIDTH`` px wide;
- a **thumbnail** of it, a JPEG at most ``THUMB_WIDTH`` px wide (a few tens of KB), embedded as a data
  URI in a markdown metadata entry: Dagster's UI renders that image inline in the asset's metadata and in
  the run's materialization event. Every byte of it is stored in the event log, hence small.

Frames shown are the first, middle and last of a video (:func:`sample_indices`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cosmos_assets.media import contact_sheet, probe_video, read_frames, write_png

THUMB_WIDTH = 480
SHEET_TILE_WIDTH = 640
JPEG_QSCALE = 4
"""MJPEG quantiser scale: 2 is best, 31 worst; 4 keeps a 480 px sheet around 15-40 KB."""
SHEET_NAME = "contact_sheet.png"


@dataclass(frozen=True)
class Preview:
    """A contact sheet on disk and its thumbnail in memory."""

    sheet_path: Path
    sheet_size: tuple[int, int]
    thumbnail_jpeg: bytes
    thumbnail_size: tuple[int, int]
    frame_indices: tuple[int, ...]


def sample_indices(frame_count: int) -> list[int]:
    """First, middle and last frame (0-based), without repeats for clips of one or two frames."""
    if frame_count < 1:
        raise ValueError(f"a video needs at least one frame, got {frame_count}")
    return list(dict.fromkeys([0, (frame_count - 1) // 2, frame_count - 1]))


def tile_width_for(video_width: int, limit: int = SHEET_TILE_WIDTH) -> int:
    """Tiles are never wider than the video (no upscaling) nor than ``limit``."""
    return max(2, min(video_width, limit))


def control_sheet(videos: Mapping[str, Path], tile_width: int = SHEET_TILE_WIDTH) -> tuple[np.ndarray, list[int]]:
    """One row per control pass (in ``videos`` order), columns first/middle/last frame.

    Frames are taken from the first video's frame count; every video must have those frames.
    Returns the sheet (HxWx3 uint8) and the frame indices used.
    """
    if not videos:
        raise ValueError("control_sheet needs at least one video")
    first = probe_video(next(iter(videos.values())))
    indices = sample_indices(first.frames)
    images: list[np.ndarray] = []
    for path in videos.values():
        images.extend(read_frames(path, indices))
    return contact_sheet(images, columns=len(indices), thumb_width=tile_width_for(first.width, tile_width)), indices


def frames_sheet(video: Path, tile_width: int = SHEET_TILE_WIDTH) -> tuple[np.ndarray, list[int]]:
    """One row: the video's first, middle and last frame."""
    info = probe_video(video)
    indices = sample_indices(info.frames)
    images = read_frames(video, indices)
    return contact_sheet(images, columns=len(indices), thumb_width=tile_width_for(info.width, tile_width)), indices


def scale_to_width(image: np.ndarray, width: int) -> np.ndarray:
    """Area-resample an RGB image to ``width`` (never larger), keeping aspect; both sides even (for JPEG 4:2:0)."""
    height, current = image.shape[:2]
    width = min(width, current)
    new_w = max(2, width - width % 2)
    new_h = max(2, round(height * new_w / current))
    new_h -= new_h % 2
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., :3]), format="rgb24")
    return frame.reformat(width=new_w, height=new_h, interpolation="AREA").to_ndarray()


def encode_jpeg(image: np.ndarray, qscale: int = JPEG_QSCALE) -> bytes:
    """Encode an RGB uint8 image with even sides as a baseline JPEG (FFmpeg's MJPEG encoder through PyAV)."""
    height, width = image.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"encode_jpeg needs even width and height, got {width}x{height}")
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 1)
    codec.qmin = codec.qmax = qscale
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., :3]), format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


def write_preview(sheet: np.ndarray, sheet_path: Path, indices: list[int], thumb_width: int = THUMB_WIDTH) -> Preview:
    """Write ``sheet`` as PNG at ``sheet_path`` (atomically) and make its JPEG thumbnail."""
    sheet_path = Path(sheet_path)
    sheet_path.parent.mkdir(parents=True, exist_ok=True)
    write_png(sheet_path, sheet)
    thumb = scale_to_width(sheet, thumb_width)
    return Preview(
        sheet_path=sheet_path,
        sheet_size=(sheet.shape[1], sheet.shape[0]),
        thumbnail_jpeg=encode_jpeg(thumb),
        thumbnail_size=(thumb.shape[1], thumb.shape[0]),
        frame_indices=tuple(indices),
    )


def control_preview(videos: Mapping[str, Path], out_dir: Path) -> Preview:
    """Contact sheet of a shot's control passes (rows) at first/middle/last frame (columns)."""
    sheet, indices = control_sheet(videos)
    return write_preview(sheet, Path(out_dir) / SHEET_NAME, indices)


def video_preview(video: Path, out_dir: Path) -> Preview:
    """First/middle/last frame of a generated or upscaled video."""
    sheet, indices = frames_sheet(video)
    return write_preview(sheet, Path(out_dir) / SHEET_NAME, indices)


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def preview_markdown(preview: Preview, caption: str) -> str:
    """Markdown for a ``MetadataValue.md`` entry: the inline thumbnail, what it shows, where the full sheet is."""
    frames = ", ".join(str(i) for i in preview.frame_indices)
    width, height = preview.sheet_size
    return (
        f"![{caption}]({data_uri(preview.thumbnail_jpeg)})\n\n"
        f"{caption}; frames {frames} (0-based). Full size ({width}x{height}): `{preview.sheet_path}`"
    )
