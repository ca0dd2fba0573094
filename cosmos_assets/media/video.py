"""Video files: probe, read frames, and the contact sheets shown in the UI."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from pydantic import BaseModel


class VideoReadError(ValueError):
    """A video file that cannot be probed or decoded; the message names the file."""


class VideoInfo(BaseModel):
    """What ``probe_video`` found in a video file."""

    path: Path
    frames: int
    width: int
    height: int
    fps: float
    codec: str
    pix_fmt: str
    duration: float


# --------------------------------------------------------------------------------------------------
# Probing, frame access, thumbnails
# --------------------------------------------------------------------------------------------------


def probe_video(path: Path) -> VideoInfo:
    """Size, frame count, rate, codec and duration of a video's first video stream.

    ``frames`` comes from the container; when it reports 0 (some muxers do) the frames are decoded
    and counted. Raises ``VideoReadError`` naming the file when it is missing or undecodable.
    """
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path} has no video stream")
            stream = container.streams.video[0]
            frames = stream.frames
            if not frames:
                frames = sum(1 for _ in container.decode(stream))
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = frames / float(rate) if rate else 0.0
            info = VideoInfo(
                path=path,
                frames=frames,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=float(rate),
                codec=stream.codec_context.name,
                pix_fmt=stream.codec_context.pix_fmt or "",
                duration=duration,
            )
    except VideoReadError:
        raise
    except (av.FFmpegError, OSError) as exc:
        raise VideoReadError(f"{path} cannot be read as a video: {exc}") from exc
    if info.frames == 0:
        raise VideoReadError(f"{path} holds no decodable video frames")
    return info


def read_frames(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    """Decode the frames at ``indices`` (0-based, any order) as HxWx3 uint8 RGB arrays, in that order."""
    path = Path(path)
    wanted = set(indices)
    if any(i < 0 for i in wanted):
        raise ValueError(f"frame indices must be >= 0, got {sorted(indices)} for {path}")
    got: dict[int, np.ndarray] = {}
    last = max(wanted, default=-1)
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except (av.FFmpegError, OSError) as exc:
        raise VideoReadError(f"{path} cannot be decoded: {exc}") from exc
    missing = sorted(wanted - got.keys())
    if missing:
        raise VideoReadError(f"{path} has no frame(s) {missing}: it holds {len(got) and max(got) + 1} or fewer frames")
    return [got[i] for i in indices]


def _resize_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=width, height=height, interpolation="AREA").to_ndarray()


def contact_sheet(
    images: list[np.ndarray], columns: int, thumb_width: int, gap: int = 4, background: int = 24
) -> np.ndarray:
    """Tile RGB images into one HxWx3 uint8 sheet, each scaled to ``thumb_width`` keeping its aspect.

    Gray (HxW) inputs are expanded to RGB. Thumbnail height follows the first image's aspect.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if columns < 1 or thumb_width < 2:
        raise ValueError(f"contact_sheet needs columns >= 1 and thumb_width >= 2, got {columns}, {thumb_width}")
    rgb = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3] for im in images]
    rgb = [im.astype(np.uint8) if im.dtype == np.uint8 else (im >> 8).astype(np.uint8) for im in rgb]
    thumb_height = max(2, round(thumb_width * rgb[0].shape[0] / rgb[0].shape[1]))
    rows = -(-len(rgb) // columns)
    sheet = np.full(
        (rows * thumb_height + (rows + 1) * gap, columns * thumb_width + (columns + 1) * gap, 3),
        background,
        dtype=np.uint8,
    )
    for i, image in enumerate(rgb):
        r, c = divmod(i, columns)
        y, x = gap + r * (thumb_height + gap), gap + c * (thumb_width + gap)
        sheet[y : y + thumb_height, x : x + thumb_width] = _resize_rgb(image, thumb_width, thumb_height)
    return sheet
