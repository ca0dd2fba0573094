"""Media I/O: PNG render sequences in, H.264 control videos out, plus probing and thumbnails.

Plain Python (numpy + PyAV), no Dagster. Everything runs in-process: PNGs are decoded and videos
encoded through PyAV's bindings to FFmpeg, never by shelling out to the ffmpeg CLI.

Render folder convention (the seed's ``convert_png_sequences.sh``): ``color.####.png``,
``depth.####.png`` and ``segmentation.####.png`` side by side, frame numbers of any digit width,
starting anywhere (1, 1001, ...). Control videos are written as ``{color,depth,segmentation}.mp4``
with the seed's settings: H.264 (libx264), CRF 18, yuv420p, 24 fps, overwriting earlier files.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import uuid
import zlib
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import av
from av.video.frame import PictureType
from av.video.reformatter import ColorRange
import numpy as np
from pydantic import BaseModel, ConfigDict

from cosmos_assets.files import atomic_write_bytes

MODALITIES = ("color", "depth", "segmentation")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_FRAME_NAME = re.compile(r"^(?P<modality>color|depth|segmentation)\.(?P<frame>\d+)\.png$")
_COLOUR_TYPES = {0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}

ProgressCallback = Callable[[str, int, int], None]

# Decoded depth frames kept in memory between the min/max pass and the encode pass; above this the
# frames are decoded twice instead (long or huge clips).
DEPTH_CACHE_BYTES = 768 * 1024 * 1024
_DECODE_LOOKAHEAD = 6


class RenderValidationError(ValueError):
    """A render folder that cannot become control videos. ``problems`` lists every issue found."""

    def __init__(self, folder: Path, problems: list[str]):
        self.folder = Path(folder)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"render folder {self.folder} has {len(self.problems)} problem(s):\n{lines}")


class VideoReadError(ValueError):
    """A video file that cannot be probed or decoded; the message names the file."""


class RenderSequence(BaseModel):
    """A validated render folder: three modalities with identical, gap-free frame numbers and one size."""

    model_config = ConfigDict(frozen=True)

    folder: Path
    first_frame: int
    last_frame: int
    frame_count: int
    width: int
    height: int
    bit_depth: dict[str, int]
    colour_type: dict[str, str]
    frames: dict[str, list[Path]]

    def fingerprint(self) -> str:
        """sha256 over every frame file's name, size and mtime_ns (a stat per file, no reads).

        Sensors compare this between ticks to notice a re-render without hashing image data.
        """
        digest = hashlib.sha256()
        for modality in MODALITIES:
            for path in self.frames[modality]:
                st = path.stat()
                digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()


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


class PngHeader(BaseModel):
    width: int
    height: int
    bit_depth: int
    colour_type: int


# --------------------------------------------------------------------------------------------------
# Scanning and validation
# --------------------------------------------------------------------------------------------------


def read_png_header(path: Path) -> PngHeader:
    """Read size, bit depth and colour type from the IHDR chunk, and check the file ends with IEND.

    Reads 33 bytes from the start and 12 from the end: enough to catch non-PNGs and truncated
    writes (a render killed mid-frame) without decoding. Raises ValueError with the reason.
    """
    with open(path, "rb") as f:
        head = f.read(33)
        if len(head) < 33 or not head.startswith(PNG_SIGNATURE):
            raise ValueError("not a PNG file (bad signature or too short)")
        length, chunk = struct.unpack(">I4s", head[8:16])
        if chunk != b"IHDR" or length != 13:
            raise ValueError("PNG has no IHDR chunk first")
        width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
        f.seek(-12, os.SEEK_END)
        if f.read(12) != PNG_IEND:
            raise ValueError("PNG is truncated (no IEND chunk at the end; was the render interrupted?)")
    if width == 0 or height == 0 or colour_type not in _COLOUR_TYPES:
        raise ValueError(f"PNG header is invalid (size {width}x{height}, colour type {colour_type})")
    return PngHeader(width=width, height=height, bit_depth=bit_depth, colour_type=colour_type)


def _frame_ranges(frames: Iterable[int]) -> str:
    """1001,1002,1003,1007 -> '1001-1003, 1007'."""
    ordered = sorted(set(frames))
    parts: list[str] = []
    start = prev = None
    for n in ordered:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            parts.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = n
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ", ".join(parts)


def _list_frames(folder: Path, problems: list[str]) -> dict[str, dict[int, Path]]:
    found: dict[str, dict[int, Path]] = {m: {} for m in MODALITIES}
    for entry in sorted(folder.iterdir()):
        match = _FRAME_NAME.match(entry.name)
        if not match or not entry.is_file():
            continue
        modality, frame = match["modality"], int(match["frame"])
        other = found[modality].get(frame)
        if other is not None:
            problems.append(
                f"{other.name} and {entry.name} in {folder} are both frame {frame} of {modality}; "
                f"delete one of them (mixed frame-number padding)"
            )
            continue
        found[modality][frame] = entry
    return found


def _check_frame_sets(folder: Path, found: dict[str, dict[int, Path]], problems: list[str]) -> list[int]:
    present = [m for m in MODALITIES if found[m]]
    for modality in MODALITIES:
        if not found[modality]:
            others = ", ".join(f"{m}.####.png" for m in present) or "no other pass either"
            problems.append(
                f"no {modality}.####.png files in {folder} (found: {others}); render the {modality} pass "
                f"into this folder as {modality}.<frame>.png"
            )
    if not present:
        return []
    union = sorted(set().union(*(found[m].keys() for m in present)))
    first, last = union[0], union[-1]
    limit_hint = ""
    for frame in range(first, last + 1):
        if frame not in union:
            limit_hint = f" (--frames {frame - first} keeps frames {first}-{frame - 1})" if frame > first else ""
            break
    for frame in range(first, last + 1):
        if frame not in union:
            names = ", ".join(f"{m}.{frame:0{_digits(found[m])}d}.png" for m in present)
            problems.append(
                f"frame {frame} is missing for every pass ({names}) in {folder}: frames "
                f"{_frame_ranges(union)} exist; the sequence must have no gaps; re-render frame {frame} "
                f"or limit the shot with --frames{limit_hint}"
            )
    for modality in present:
        for frame in union:
            if frame in found[modality]:
                continue
            holders = [m for m in present if frame in found[m]]
            problems.append(
                f"{modality}.{frame:0{_digits(found[modality])}d}.png is missing in {folder}: frames "
                f"{_frame_ranges(found[holders[0]].keys())} exist for {holders[0]}; re-render {modality} frame "
                f"{frame} or limit the shot with --frames{limit_hint}"
            )
    return union


def _digits(frames: dict[int, Path]) -> int:
    """The zero-padding width used by existing files of a modality (for naming missing ones)."""
    for frame, path in frames.items():
        return len(_FRAME_NAME.match(path.name)["frame"])
    return 4


def _check_headers(
    folder: Path, found: dict[str, dict[int, Path]], problems: list[str]
) -> tuple[tuple[int, int] | None, dict[str, int], dict[str, str]]:
    headers: dict[Path, PngHeader] = {}
    for modality in MODALITIES:
        for frame, path in sorted(found[modality].items()):
            try:
                headers[path] = read_png_header(path)
            except (OSError, ValueError) as exc:
                problems.append(
                    f"{path.name} in {folder} is not a readable PNG ({exc}); re-render or re-export "
                    f"{modality} frame {frame}"
                )
    if not headers:
        return None, {}, {}
    sizes = Counter((h.width, h.height) for p, h in headers.items() if p.name.startswith("color."))
    if not sizes:
        sizes = Counter((h.width, h.height) for h in headers.values())
    size = sizes.most_common(1)[0][0]
    reference = next(p for p, h in headers.items() if (h.width, h.height) == size)
    bit_depth: dict[str, int] = {}
    colour_type: dict[str, str] = {}
    for modality in MODALITIES:
        first_of_kind: tuple[Path, PngHeader] | None = None
        for frame, path in sorted(found[modality].items()):
            header = headers.get(path)
            if header is None:
                continue
            if (header.width, header.height) != size:
                problems.append(
                    f"{path.name} in {folder} is {header.width}x{header.height} but {reference.name} is "
                    f"{size[0]}x{size[1]}; every pass and frame must share one resolution; re-render "
                    f"{modality} frame {frame} at {size[0]}x{size[1]}"
                )
            if first_of_kind is None:
                first_of_kind = (path, header)
                bit_depth[modality] = header.bit_depth
                colour_type[modality] = _COLOUR_TYPES[header.colour_type]
            elif (header.bit_depth, header.colour_type) != (first_of_kind[1].bit_depth, first_of_kind[1].colour_type):
                problems.append(
                    f"{path.name} in {folder} is {header.bit_depth}-bit {_COLOUR_TYPES[header.colour_type]} but "
                    f"{first_of_kind[0].name} is {first_of_kind[1].bit_depth}-bit "
                    f"{_COLOUR_TYPES[first_of_kind[1].colour_type]}; export every {modality} frame with the same "
                    f"format (frame {frame})"
                )
    return size, bit_depth, colour_type


def scan_render_folder(folder: Path) -> RenderSequence:
    """Find and validate a render folder's three PNG sequences.

    Checks, collecting every problem before raising ``RenderValidationError``: each modality is
    present; all share the same frame numbers with no gaps; every PNG has a valid header and end
    marker; all frames of all modalities have one resolution; each modality keeps one bit depth and
    colour type. Only the PNG headers are read (no pixel decode).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RenderValidationError(
            folder, [f"{folder} is not a folder; point at the render folder holding color/depth/segmentation PNGs"]
        )
    problems: list[str] = []
    found = _list_frames(folder, problems)
    union = _check_frame_sets(folder, found, problems)
    size, bit_depth, colour_type = _check_headers(folder, found, problems)
    if problems or size is None:
        raise RenderValidationError(folder, problems or [f"{folder} holds no render frames"])
    return RenderSequence(
        folder=folder,
        first_frame=union[0],
        last_frame=union[-1],
        frame_count=len(union),
        width=size[0],
        height=size[1],
        bit_depth=bit_depth,
        colour_type=colour_type,
        frames={m: [found[m][n] for n in union] for m in MODALITIES},
    )


# --------------------------------------------------------------------------------------------------
# PNG decode / encode
# --------------------------------------------------------------------------------------------------


def decode_png(path: Path) -> av.VideoFrame:
    """Decode one PNG with FFmpeg's PNG decoder (releases the GIL; returns the PNG's native format)."""
    data = Path(path).read_bytes()
    decoder = av.CodecContext.create("png", "r")
    try:
        frames = decoder.decode(av.Packet(data))
    except av.FFmpegError as exc:
        raise ValueError(f"{path} could not be decoded as PNG: {exc}") from exc
    if not frames:
        raise ValueError(f"{path} could not be decoded as PNG: decoder returned no image")
    return frames[0]


def write_png(path: Path, array: np.ndarray, level: int = 1) -> None:
    """Write a uint8/uint16 array (HxW gray, HxWx3 RGB, HxWx4 RGBA) as PNG, atomically.

    A tiny zlib writer (no Pillow): every row uses the PNG "Up" filter, vectorised in numpy, which
    compresses smooth renders well at the fast zlib ``level`` 1. uint16 gives a 16-bit PNG.
    """
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png needs uint8 or uint16 pixels, got {array.dtype} for {path}")
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}.get(channels)
    if array.ndim not in (2, 3) or colour_type is None:
        raise ValueError(f"write_png needs HxW, HxWx3 or HxWx4 pixels, got shape {array.shape} for {path}")
    height, width = array.shape[:2]
    bit_depth = 16 if array.dtype == np.uint16 else 8
    raw = np.ascontiguousarray(array.astype(">u2") if bit_depth == 16 else array).view(np.uint8)
    rows = raw.reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up filter
    filtered[0, 0] = 0  # first row: None (no row above)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), level))
    atomic_write_bytes(Path(path), body + _png_chunk(b"IEND", b""))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


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

    def __init__(self, path: Path, width: int, height: int, fps: int, crf: int):
        self.path = path
        self.tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial.mp4")
        self.container = av.open(str(self.tmp), "w", format="mp4")
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
    with ThreadPoolExecutor(workers, thread_name_prefix="png-decode") as decode_pool, ThreadPoolExecutor(
        len(MODALITIES), thread_name_prefix="encode"
    ) as encode_pool:
        streams = {
            "color": _rgb_frames(seq.frames["color"][:total], decode_pool, padded),
            "depth": _depth_frames(seq.frames["depth"][:total], decode_pool),
            "segmentation": _rgb_frames(seq.frames["segmentation"][:total], decode_pool, padded),
        }
        writers = {m: _Writer(out_dir / f"{m}.mp4", size[0], size[1], fps, crf) for m in MODALITIES}
        try:
            futures = {m: encode_pool.submit(_encode_stream, m, frames, total, writers[m], progress) for m, frames in streams.items()}
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
