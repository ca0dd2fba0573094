"""Control videos: a shot's three PNG passes encoded to H.264 MP4 in-process with PyAV.

The seed's settings: H.264 (libx264), CRF 18, yuv420p (limited range), 24 fps. Depth is inverted (near
is bright) and normalised once over the clip, as Cosmos' depth control expects. The three passes are
encoded concurrently and published together.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import ColorRange
from pydantic import BaseModel

from cosmos_assets.files import new_temp_path
from cosmos_assets.media.frames import MODALITIES, RenderSequence, decode_png
from cosmos_assets.media.recipe import MUXER_OPTIONS, ControlRecipe

ProgressCallback = Callable[[str, int, int], None]

# Decoded depth frames kept in memory between the min/max pass and the encode pass; above this the
# frames are decoded twice instead (long or huge clips).
DEPTH_CACHE_BYTES = 768 * 1024 * 1024
_DECODE_LOOKAHEAD = 6


class EncodedVideo(BaseModel):
    """One control video written by ``encode_control_videos``."""

    modality: str
    path: Path
    frames: int
    width: int
    height: int
    fps: int
    bytes: int
    padded: bool


# --------------------------------------------------------------------------------------------------
# Control video encoding
# --------------------------------------------------------------------------------------------------


def _pad_even(rgb: np.ndarray) -> np.ndarray:
    """Replicate the last column/row so width and height are even (yuv420p needs 2x2 chroma blocks)."""
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    if not (pad_h or pad_w):
        return rgb
    widths = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (rgb.ndim - 2)
    return np.pad(rgb, widths, mode="edge")


def _to_yuv_frame(frame: av.VideoFrame, padded: bool) -> av.VideoFrame:
    """Any decoded PNG (RGB/RGBA/gray/palette, 8/16-bit) -> yuv420p, alpha dropped, odd sizes padded.

    Limited ("MPEG") range, as the stream is tagged and as players assume: decoded PNGs are full range,
    and keeping that would wash the picture out on playback.
    """
    if padded:
        frame = av.VideoFrame.from_ndarray(_pad_even(frame.to_ndarray(format="rgb24")), format="rgb24")
    return frame.reformat(format="yuv420p", dst_color_range=ColorRange.MPEG)


def _depth_values(frame: av.VideoFrame) -> np.ndarray:
    """Raw Z values (HxW, uint8 or uint16) of a depth PNG; the first channel of RGB depth exports."""
    name = frame.format.name
    if name in ("gray", "gray16be", "gray16le"):
        return frame.to_ndarray()
    if name in ("rgb48be", "rgba64be"):
        return np.ascontiguousarray(frame.to_ndarray()[..., 0])
    if name == "ya16be":
        return frame.reformat(format="gray16le").to_ndarray()
    if name == "ya8":
        return frame.reformat(format="gray").to_ndarray()
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24")[..., 0])


def _valid_depth(values: np.ndarray) -> np.ndarray:
    """Mask of real depth samples: 0 ("no hit") and the format's maximum (clipped sky) are background."""
    top = 65535 if values.dtype == np.uint16 else 255
    return (values != 0) & (values != top)


def _depth_range(values: np.ndarray) -> tuple[int, int] | None:
    valid = values[_valid_depth(values)]
    if valid.size == 0:
        return None
    return int(valid.min()), int(valid.max())


def depth_lut(z_min: int, z_max: int, levels: int) -> np.ndarray:
    """Raw Z code -> 8-bit gray, inverse depth normalised over the clip: near = 255, far = 0.

    Gray is ``255 * (1/z - 1/z_max) / (1/z_min - 1/z_max)``: inverse depth matches the relative
    inverse depth (disparity) Depth-Anything-V2 produces when Cosmos derives depth itself, and one
    (z_min, z_max) for the whole clip means a surface keeps its gray level from frame to frame
    (per-frame normalisation flickers). 0 and the format maximum are background and map to 0 (far).
    """
    codes = np.arange(levels, dtype=np.float64)
    lut = np.zeros(levels, dtype=np.uint8)
    if z_max > z_min:
        inv = 1.0 / np.clip(codes, z_min, z_max)
        gray = (inv - 1.0 / z_max) / (1.0 / z_min - 1.0 / z_max) * 255.0
        lut[:] = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    else:
        lut[:] = 255  # a flat clip: everything is "near"
    lut[0] = 0
    lut[levels - 1] = 0
    return lut


def _gray_to_yuv_frame(gray: np.ndarray) -> av.VideoFrame:
    """8-bit gray -> yuv420p frame (limited range Y, neutral chroma), built directly in numpy."""
    gray = _pad_even(gray)
    height, width = gray.shape
    y = (16 + (gray.astype(np.uint16) * 219 + 127) // 255).astype(np.uint8)
    planes = np.empty((height * 3 // 2, width), dtype=np.uint8)
    planes[:height] = y
    planes[height:] = 128
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def _prefetch(pool: ThreadPoolExecutor, fn: Callable, items: Sequence, depth: int) -> Iterator:
    """Map ``fn`` over ``items`` in ``pool``, in order, with at most ``depth`` results in flight."""
    pending: deque[Future] = deque()
    iterator = iter(items)
    for item in iterator:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            break
    while pending:
        result = pending.popleft().result()
        nxt = next(iterator, None)
        if nxt is not None:
            pending.append(pool.submit(fn, nxt))
        yield result


class _Writer:
    """An H.264 mp4 written to a temp name in the output folder; ``publish`` renames it into place."""

    def __init__(self, path: Path, width: int, height: int, fps: int, crf: int, tags: dict[str, str] | None = None):
        self.path = path
        # Made by us first (the umask's mode, a name no one else has); PyAV's muxer then truncates it, keeping both.
        self.tmp = new_temp_path(path.parent, f".{path.stem}.", ".partial.mp4")
        try:
            self.container = av.open(str(self.tmp), "w", format="mp4", options=dict(MUXER_OPTIONS) if tags else {})
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        self.container.metadata.update(tags or {})  # provenance (media/recipe.py): shows in ffprobe
        stream = self.container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Frame threading (x264's default, and what the ffmpeg CLI uses) scales far better than
        # slice threading for a whole-file encode.
        stream.codec_context.thread_type = "FRAME"
        stream.codec_context.thread_count = 0
        stream.codec_context.options = {"crf": str(crf)}
        self.stream = stream
        self.time_base = Fraction(1, fps)
        self.frames = 0

    def write(self, frame: av.VideoFrame) -> None:
        frame.pts = self.frames
        frame.time_base = self.time_base  # decoded frames carry their source's time base
        # A decoded PNG is marked as an I picture and libx264 obeys that: every frame would be a keyframe.
        frame.pict_type = PictureType.NONE
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def finish(self) -> None:
        """Flush the encoder and close the temp file (still under its temp name)."""
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def publish(self) -> None:
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the original error matters, not the cleanup's
            pass
        self.tmp.unlink(missing_ok=True)


def _encode_stream(
    modality: str, frames: Iterable[av.VideoFrame], total: int, writer: _Writer, progress: ProgressCallback | None
) -> int:
    for frame in frames:
        writer.write(frame)
        if progress is not None:
            progress(modality, writer.frames, total)
    writer.finish()
    return writer.frames


def _rgb_frames(paths: Sequence[Path], pool: ThreadPoolExecutor, padded: bool) -> Iterator[av.VideoFrame]:
    return _prefetch(pool, lambda p: _to_yuv_frame(decode_png(p), padded), paths, _DECODE_LOOKAHEAD)


def _depth_frames(paths: Sequence[Path], pool: ThreadPoolExecutor) -> Iterator[av.VideoFrame]:
    """Two passes: clip-wide min/max of valid Z, then a lookup table per frame (see ``depth_lut``)."""
    cache: list[np.ndarray] | None = []
    cached_bytes = 0
    z_min, z_max, levels = None, None, 256
    for values in _prefetch(pool, lambda p: _depth_values(decode_png(p)), paths, _DECODE_LOOKAHEAD):
        levels = 65536 if values.dtype == np.uint16 else 256
        found = _depth_range(values)
        if found is not None:
            z_min = found[0] if z_min is None else min(z_min, found[0])
            z_max = found[1] if z_max is None else max(z_max, found[1])
        if cache is not None:
            cached_bytes += values.nbytes
            if cached_bytes <= DEPTH_CACHE_BYTES:
                cache.append(values)
            else:
                cache = None  # too big to keep: decode again in the second pass
    lut = depth_lut(z_min or 1, z_max or 1, levels) if z_min is not None else np.zeros(levels, np.uint8)

    def convert(values: np.ndarray) -> av.VideoFrame:
        return _gray_to_yuv_frame(lut[values])

    if cache is not None:
        return _prefetch(pool, convert, cache, _DECODE_LOOKAHEAD)
    return _prefetch(pool, lambda p: convert(_depth_values(decode_png(p))), paths, _DECODE_LOOKAHEAD)


def control_tags(seq: RenderSequence, modality: str, total: int, crf: int) -> dict[str, str]:
    """What identifies a control video, written into its container metadata (no run made it, so no run id)."""
    frames = seq.frames[modality][:total]
    return ControlRecipe(
        shot=seq.folder.name,
        pass_name=modality,
        source_folder=str(seq.folder),
        source_frames=f"{frames[0].name} .. {frames[-1].name} ({len(frames)} frames)",
        source_digest=seq.fingerprint(),
        encoder=f"cosmos-assets libx264 crf {crf} yuv420p",
    ).to_tags()


def encode_control_videos(
    seq: RenderSequence,
    out_dir: Path,
    *,
    max_frames: int | None = None,
    fps: int = 24,
    crf: int = 18,
    progress: ProgressCallback | None = None,
) -> dict[str, EncodedVideo]:
    """Encode a render sequence to ``out_dir/{color,depth,segmentation}.mp4`` (H.264, yuv420p).

    - ``max_frames``: only the first N frames (the seed's ``frame_count``); None for all.
    - Colour: RGB(A) 8/16-bit (also gray/palette) -> 8-bit RGB -> yuv420p; alpha is dropped.
    - Depth: renderer Z-depth (near = small), 8 or 16-bit gray (or the first channel of RGB) ->
      inverse depth normalised once over the clip to 8-bit gray, near = bright (``depth_lut``).
      0 and the format's maximum (65535 / 255) are treated as background with no depth and shown
      as far (black); they are also left out of the clip's min/max so a sky does not crush the scene.
    - Segmentation: flat RGB label colours kept as they are. yuv420p stores colour at half
      resolution and CRF 18 is lossy, so label edges smear by a pixel or so and flat colours can
      drift by a few levels; consumers should match labels to the nearest palette colour.
    - Odd width/height: yuv420p needs even sizes, so the last column/row is replicated (padding,
      not scaling: pixels stay aligned across modalities); ``EncodedVideo.padded`` says so.

    The three modalities are encoded concurrently (threads; PyAV releases the GIL), PNGs are decoded
    in a shared thread pool, libx264 uses frame threads. Each file is written under a temp name in
    ``out_dir``; only when all three are complete are they ``os.replace``d into place (if one fails,
    the earlier set stays as it was).
    ``progress(modality, frames_done, total)`` is called from worker threads after every frame.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = seq.frame_count if max_frames is None else min(max_frames, seq.frame_count)
    padded = bool(seq.width % 2 or seq.height % 2)
    size = (seq.width + seq.width % 2, seq.height + seq.height % 2)
    workers = max(2, os.cpu_count() or 2)
    with (
        ThreadPoolExecutor(workers, thread_name_prefix="png-decode") as decode_pool,
        ThreadPoolExecutor(len(MODALITIES), thread_name_prefix="encode") as encode_pool,
    ):
        streams = {
            "color": _rgb_frames(seq.frames["color"][:total], decode_pool, padded),
            "depth": _depth_frames(seq.frames["depth"][:total], decode_pool),
            "segmentation": _rgb_frames(seq.frames["segmentation"][:total], decode_pool, padded),
        }
        writers = {
            m: _Writer(out_dir / f"{m}.mp4", size[0], size[1], fps, crf, control_tags(seq, m, total, crf))
            for m in MODALITIES
        }
        try:
            futures = {
                m: encode_pool.submit(_encode_stream, m, frames, total, writers[m], progress)
                for m, frames in streams.items()
            }
            counts = {m: f.result() for m, f in futures.items()}
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
    # Only once all three are complete do they replace the earlier set: never a mix of old and new passes.
    for writer in writers.values():
        writer.publish()
    return {
        m: EncodedVideo(
            modality=m,
            path=out_dir / f"{m}.mp4",
            frames=counts[m],
            width=size[0],
            height=size[1],
            fps=fps,
            bytes=(out_dir / f"{m}.mp4").stat().st_size,
            padded=padded,
        )
        for m in MODALITIES
    }
