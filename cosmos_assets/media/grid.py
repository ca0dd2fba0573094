"""A wedge's comparison: every variant's clip tiled into one grid video, each tile labelled, and a still of it.

Plain Python (PyAV + numpy), in-process. The grid video is H.264 yuv420p in MP4 with its index up front, which any
player plays; tiles keep their clip's aspect (letterboxed into the tile), a shorter clip holds its last frame.
Labels are drawn with the small built-in 5x7 bitmap font below (upper case, digits and common punctuation), so no
font file or extra package is needed on a render node.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange

from cosmos_assets.files import new_temp_path
from cosmos_assets.media.recipe import MUXER_OPTIONS
from cosmos_assets.media.video import VideoReadError, probe_video, read_frames

GRID_MAX_WIDTH = 1920
GAP = 4
BACKGROUND = 24
LABEL_BAND_ALPHA = 0.65
FONT_W, FONT_H = 5, 7
_GLYPH_DATA = (
    "A0e11111f111111B1e11111e11111eC0e11101010110eD1c12111111121cE1f10101e10101fF1f10101e101010G0e11101711110f"
    "H1111111f111111I0e04040404040eJ0702020202120cK11121418141211L1010101010101fM111b1515111111N11111915131111"
    "O0e11111111110eP1e11111e101010Q0e11111115120dR1e11111e141211S0f10100e01011eT1f040404040404U1111111111110e"
    "V11111111110a04W1111111515150aX11110a040a1111Y11110a04040404Z1f01020408101f00e11131519110e1040c040404040e"
    "20e11010204081f31f02040201110e402060a121f020251f101e0101110e60608101e11110e71f01020408080880e11110e11110e"
    "90e11110f01020c 00000000000000.00000000000c0c,000000000c0408-0000001f000000_0000000000001f=00001f001f0000"
    "+0004041f040400:000c0c000c0c00/00010204081000(02040808080402)08040202020408%18190204081303?0e110102040004"
    "#0a0a1f0a1f0a0a'04040800000000"
)
GLYPHS: dict[str, np.ndarray] = {
    _GLYPH_DATA[i]: np.array(
        [
            [(int(_GLYPH_DATA[i + 1 + 2 * r : i + 3 + 2 * r], 16) >> (FONT_W - 1 - c)) & 1 for c in range(FONT_W)]
            for r in range(FONT_H)
        ],
        dtype=bool,
    )
    for i in range(0, len(_GLYPH_DATA), 1 + 2 * FONT_H)
}
"""Each glyph: a character, then 7 rows of 5 bits as two hex digits each (top row first, high bit leftmost)."""


@dataclass(frozen=True)
class GridTile:
    """One variant: its clip and the lines of its label (its varied values)."""

    video: Path
    label: Sequence[str]


@dataclass(frozen=True)
class GridLayout:
    columns: int
    rows: int
    tile_width: int
    tile_height: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole grid; even, as yuv420p needs."""
        return (
            self.columns * self.tile_width + (self.columns + 1) * GAP,
            self.rows * self.tile_height + (self.rows + 1) * GAP,
        )

    def origin(self, index: int) -> tuple[int, int]:
        """(x, y) of tile index's top-left corner, row by row."""
        row, column = divmod(index, self.columns)
        return GAP + column * (self.tile_width + GAP), GAP + row * (self.tile_height + GAP)


@dataclass(frozen=True)
class GridVideo:
    path: Path
    layout: GridLayout
    tiles: int
    frames: int
    fps: float


def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """The text as a boolean mask (7*scale rows); lower case is drawn upper case, unknown characters as '?'."""
    if not text:
        return np.zeros((FONT_H * scale, 0), dtype=bool)
    glyphs = [GLYPHS.get(ch, GLYPHS["?"]) for ch in text.upper()]
    spaced = [np.pad(g, ((0, 0), (0, 1))) for g in glyphs]  # one blank column between characters
    mask = np.concatenate(spaced, axis=1)[:, :-1]
    return np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)


def label_scale(tile_width: int) -> int:
    """Glyph pixels per font pixel: text stays legible when the sheet is shrunk to a thumbnail."""
    return max(1, tile_width // 200)


def draw_label(tile: np.ndarray, lines: Sequence[str], scale: int) -> None:
    """Darken a band at the bottom of ``tile`` (HxWx3 uint8, in place) and write ``lines`` in white on it.

    The bottom, because models stamp their own marks at the top (the preview's watermark is top-left). Text wider
    than the tile is cut at its right edge; lines that do not fit the tile's height are left out.
    """
    height, width = tile.shape[:2]
    pad, line_height = 2 * scale, (FONT_H + 2) * scale
    shown = list(lines)[: max(0, (height - 2 * pad) // line_height)]
    if not shown:
        return
    top = max(0, height - (2 * pad + len(shown) * line_height))
    tile[top:] = (tile[top:].astype(np.float32) * (1.0 - LABEL_BAND_ALPHA)).astype(np.uint8)
    for i, line in enumerate(shown):
        mask = text_mask(line, scale)[:, : max(0, width - 2 * pad)]
        y, x = top + pad + i * line_height + scale, pad
        tile[y : y + mask.shape[0], x : x + mask.shape[1]][mask] = 255


def grid_layout(count: int, clip_width: int, clip_height: int, max_width: int = GRID_MAX_WIDTH) -> GridLayout:
    """Near-square grid (columns >= rows); tiles never larger than the clips, the whole at most max_width."""
    if count < 1:
        raise ValueError("a grid needs at least one tile")
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tile_width = min(clip_width, (max_width - (columns + 1) * GAP) // columns)
    tile_width = max(2, tile_width - tile_width % 2)
    tile_height = max(2, round(tile_width * clip_height / clip_width))
    return GridLayout(columns, rows, tile_width, tile_height + tile_height % 2)


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale an RGB image into width x height keeping its aspect, centred on the background (letterbox)."""
    src_h, src_w = image.shape[:2]
    factor = min(width / src_w, height / src_h)
    new_w, new_h = max(1, round(src_w * factor)), max(1, round(src_h * factor))
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., :3]), format="rgb24")
    scaled = frame.reformat(width=new_w, height=new_h, interpolation="AREA").to_ndarray()
    out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    y, x = (height - new_h) // 2, (width - new_w) // 2
    out[y : y + new_h, x : x + new_w] = scaled
    return out


def compose(images: Sequence[np.ndarray], labels: Sequence[Sequence[str]], layout: GridLayout) -> np.ndarray:
    """One grid picture: each image fitted into its tile and labelled."""
    width, height = layout.size
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    scale = label_scale(layout.tile_width)
    for index, (image, label) in enumerate(zip(images, labels)):
        tile = _fit(image, layout.tile_width, layout.tile_height)
        draw_label(tile, label, scale)
        x, y = layout.origin(index)
        canvas[y : y + layout.tile_height, x : x + layout.tile_width] = tile
    return canvas


def _frames(path: Path) -> Iterator[np.ndarray]:
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, OSError) as error:
        raise VideoReadError(f"{path} cannot be decoded: {error}") from error


def write_grid_video(
    tiles: Sequence[GridTile],
    out_path: Path,
    *,
    tags: Mapping[str, str] | None = None,
    max_width: int = GRID_MAX_WIDTH,
    crf: int = 20,
) -> GridVideo:
    """Tile every clip into one H.264 MP4 at out_path (written beside it, then renamed into place).

    Frame rate and tile aspect are the first clip's; the grid lasts as long as the longest clip.
    """
    if not tiles:
        raise ValueError("a grid video needs at least one clip")
    infos = [probe_video(tile.video) for tile in tiles]
    layout = grid_layout(len(tiles), infos[0].width, infos[0].height, max_width)
    frames = max(info.frames for info in infos)
    rate = Fraction(infos[0].fps).limit_denominator(1001) if infos[0].fps > 0 else Fraction(24)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temp = new_temp_path(out_path.parent, f".{out_path.stem}.", ".partial.mp4")
    try:
        with av.open(str(temp), "w", format="mp4", options=dict(MUXER_OPTIONS)) as container:
            container.metadata.update(dict(tags or {}))
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height = layout.size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.options = {"crf": str(crf)}
            sources = [_frames(tile.video) for tile in tiles]
            last: list[np.ndarray | None] = [None] * len(tiles)
            for index in range(frames):
                for i, source in enumerate(sources):
                    image = next(source, None)
                    if image is not None:
                        last[i] = image
                current = [image if image is not None else np.zeros((2, 2, 3), np.uint8) for image in last]
                picture = compose(current, [tile.label for tile in tiles], layout)
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(
                    format="yuv420p", dst_color_range=ColorRange.MPEG
                )
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, out_path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return GridVideo(path=out_path, layout=layout, tiles=len(tiles), frames=frames, fps=float(rate))


def grid_still(tiles: Sequence[GridTile], *, max_width: int = GRID_MAX_WIDTH) -> tuple[np.ndarray, list[int]]:
    """The contact sheet of a grid: each clip's middle frame in its labelled tile. Returns it and the frames used."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one clip")
    infos = [probe_video(tile.video) for tile in tiles]
    layout = grid_layout(len(tiles), infos[0].width, infos[0].height, max_width)
    indices = [(info.frames - 1) // 2 for info in infos]
    images = [read_frames(tile.video, [index])[0] for tile, index in zip(tiles, indices)]
    return compose(images, [tile.label for tile in tiles], layout), indices
