"""Render frames: the PNG sequences of a shot, scanned and validated, plus the small PNG reader/writer.

Render folder convention (the seed's ``convert_png_sequences.sh``): ``color.####.png``,
``depth.####.png`` and ``segmentation.####.png`` side by side, frame numbers of any digit width,
starting anywhere (1, 1001, ...). :data:`FRAME_NAME` is the one pattern for those names.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np
from pydantic import BaseModel, ConfigDict

from cosmos_assets.files import atomic_write_bytes

MODALITIES = ("color", "depth", "segmentation")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
FRAME_NAME = re.compile(r"^(?P<modality>color|depth|segmentation)\.(?P<frame>[0-9]+)\.png\Z")
"""A render frame's file name: ``<modality>.<frame number>.png``."""
_COLOUR_TYPES = {0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}


class RenderValidationError(ValueError):
    """A render folder that cannot become control videos. ``problems`` lists every issue found."""

    def __init__(self, folder: Path, problems: list[str]):
        self.folder = Path(folder)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"render folder {self.folder} has {len(self.problems)} problem(s):\n{lines}")


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
        match = FRAME_NAME.match(entry.name)
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


_LISTED_GAP_FRAMES = 20
"""Missing frames named one by one; the rest of a gap is counted in one line."""


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
    first = union[0]
    # Gaps between the frames that exist, as ranges: a stray color.99999999.png must not make us count to it.
    gaps = [(a + 1, b - 1) for a, b in zip(union, union[1:]) if b > a + 1]
    limit_hint = f" (--frames {gaps[0][0] - first} keeps frames {first}-{gaps[0][0] - 1})" if gaps else ""
    existing = _frame_ranges(union)
    listed = 0
    for start, end in gaps:
        for frame in range(start, min(end, start + _LISTED_GAP_FRAMES - listed - 1) + 1):
            names = ", ".join(f"{m}.{frame:0{_digits(found[m])}d}.png" for m in present)
            problems.append(
                f"frame {frame} is missing for every pass ({names}) in {folder}: frames "
                f"{existing} exist; the sequence must have no gaps; re-render frame {frame} "
                f"or limit the shot with --frames{limit_hint}"
            )
            listed += 1
        if listed >= _LISTED_GAP_FRAMES:
            break
    unlisted = sum(end - start + 1 for start, end in gaps) - listed
    if unlisted > 0:
        problems.append(
            f"{unlisted} more frames are missing for every pass in {folder} (frames {existing} exist); "
            f"re-render them or limit the shot with --frames{limit_hint}"
        )
    ranges = {m: _frame_ranges(found[m].keys()) for m in present}
    for modality in present:
        for frame in union:
            if frame in found[modality]:
                continue
            holder = next(m for m in present if frame in found[m])
            problems.append(
                f"{modality}.{frame:0{_digits(found[modality])}d}.png is missing in {folder}: frames "
                f"{ranges[holder]} exist for {holder}; re-render {modality} frame "
                f"{frame} or limit the shot with --frames{limit_hint}"
            )
    return union


def _digits(frames: dict[int, Path]) -> int:
    """The zero-padding width used by existing files of a modality (for naming missing ones)."""
    for path in frames.values():
        return len(FRAME_NAME.match(path.name)["frame"])
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
