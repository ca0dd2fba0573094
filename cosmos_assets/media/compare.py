"""Is a video the same as another? Its encoded video stream packet for packet (the container's tags aside: a clip's
stamped recipe differs by design), else how far it is: PSNR per decoded frame, worst and mean. PyAV, no ffmpeg CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import av
import numpy as np

from cosmos_assets.media.video import VideoReadError


@dataclass(frozen=True)
class StreamFacts:
    """The first video stream's codec, size and encoded packets (bytes, in decoding order)."""

    codec: str
    width: int
    height: int
    extradata: bytes
    packets: list[bytes]


@dataclass
class VideoComparison:
    """``identical``: the same codec, size, codec data and packets; else ``psnr`` per frame (inf: equal pixels)."""

    identical: bool
    frames: tuple[int, int] = (0, 0)
    psnr: list[float] = field(default_factory=list)
    note: str | None = None  # why no PSNR (sizes differ) or what else differs (frame counts)

    @property
    def worst(self) -> tuple[int, float] | None:
        """(frame index, dB) of the lowest PSNR."""
        return min(enumerate(self.psnr), key=lambda item: item[1]) if self.psnr else None

    @property
    def mean(self) -> float | None:
        """Mean PSNR over the frames that differ (equal frames, infinite, are counted apart in :meth:`summary`)."""
        finite = [p for p in self.psnr if math.isfinite(p)]
        return sum(finite) / len(finite) if finite else None

    def summary(self) -> str:
        if self.identical:
            return f"the video stream is bit-identical to the original's ({self.frames[0]} frames)"
        parts = []
        worst, mean = self.worst, self.mean
        if worst is not None and mean is not None:
            equal = sum(1 for p in self.psnr if math.isinf(p))
            parts.append(
                f"PSNR worst {worst[1]:.2f} dB (frame {worst[0]}), mean {mean:.2f} dB over the "
                f"{len(self.psnr) - equal} differing frames of {len(self.psnr)} compared ({equal} equal)"
            )
        elif self.psnr:
            parts.append(f"every one of the {len(self.psnr)} decoded frames is equal, the encoded stream is not")
        if self.note:
            parts.append(self.note)
        return "the video stream differs from the original's: " + "; ".join(parts)


def stream_facts(path: Path) -> StreamFacts:
    """The first video stream of ``path``: codec, size, codec data and every packet's bytes."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path} has no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            packets = [bytes(packet) for packet in container.demux(stream) if packet.size]
            return StreamFacts(ctx.name, ctx.width, ctx.height, bytes(ctx.extradata or b""), packets)
    except (av.FFmpegError, OSError) as error:
        raise VideoReadError(f"{path} cannot be read as a video: {error}") from error


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio of two same-shaped 8-bit images, in dB; inf when they are equal."""
    if a.shape != b.shape:
        raise ValueError(f"frames of different shapes {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _frames(path: Path):
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def compare_videos(original: Path, new: Path) -> VideoComparison:
    """Bit-identical video streams, else PSNR frame by frame over the frames both have."""
    first, second = stream_facts(original), stream_facts(new)
    counts = (len(first.packets), len(second.packets))
    if first == second:
        return VideoComparison(True, counts)
    if (first.width, first.height) != (second.width, second.height):
        return VideoComparison(
            False,
            counts,
            note=f"the frames are {second.width}x{second.height}, the original's {first.width}x{first.height}: no PSNR",
        )
    values: list[float] = []
    decoded = [0, 0]
    try:
        for a, b in zip_longest(_frames(original), _frames(new)):
            decoded[0] += a is not None
            decoded[1] += b is not None
            if a is not None and b is not None:
                values.append(psnr(a, b))
    except (av.FFmpegError, OSError) as error:
        raise VideoReadError(f"{original} or {new} cannot be decoded: {error}") from error
    note = None if decoded[0] == decoded[1] else f"{decoded[1]} frames, the original {decoded[0]}"
    return VideoComparison(False, (decoded[0], decoded[1]), values, note)
