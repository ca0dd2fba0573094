"""The comparison grid: the built-in font, labels, layout, and a grid video of clips of different lengths."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cosmos_assets.media import probe_video, read_frames
from cosmos_assets.media.grid import (
    BACKGROUND,
    FONT_H,
    GLYPHS,
    GridTile,
    draw_label,
    grid_layout,
    grid_still,
    text_mask,
    write_grid_video,
)
from cosmos_assets.media.recipe import read_recipe


def write_clip(path: Path, colours: list[tuple[int, int, int]], size: tuple[int, int] = (64, 48)) -> Path:
    """An H.264 clip with one flat colour per frame."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index, colour in enumerate(colours):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), colour, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame.reformat(format="yuv420p")))
        container.mux(stream.encode(None))
    return path


def test_every_glyph_is_distinct_and_unknown_characters_show_as_a_question_mark() -> None:
    patterns = {glyph.tobytes() for glyph in GLYPHS.values()}
    assert len(patterns) == len(GLYPHS) and set("ABCXYZ0123456789.=_-,:") <= set(GLYPHS)
    assert np.array_equal(text_mask("seed=1"), text_mask("SEED=1"))
    assert np.array_equal(text_mask("é"), text_mask("?"))
    mask = text_mask("AB", scale=2)
    assert mask.shape == (FONT_H * 2, (5 + 1 + 5) * 2) and not mask[:, 10:12].any()  # one blank column between


def test_a_label_is_white_text_on_a_darkened_band_at_the_bottom() -> None:
    tile = np.full((100, 200, 3), 200, np.uint8)
    draw_label(tile, ["seed=1", "edge.control_weight=0.5"], scale=1)
    assert (tile[:70] == 200).all()  # the top is left alone (models put their marks there)
    band = tile[-24:]
    assert (band == 255).any() and (band < 100).any()
    empty = np.full((100, 200, 3), 200, np.uint8)
    draw_label(empty, [], scale=1)
    assert (empty == 200).all()


@pytest.mark.parametrize(
    "count, columns, rows", [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 2, 2), (5, 3, 2), (6, 3, 2), (7, 3, 3), (36, 6, 6)]
)
def test_the_grid_is_near_square_even_and_at_most_1920_wide(count: int, columns: int, rows: int) -> None:
    layout = grid_layout(count, 1280, 704)
    assert (layout.columns, layout.rows) == (columns, rows)
    width, height = layout.size
    assert width <= 1920 and width % 2 == 0 and height % 2 == 0 and layout.tile_width <= 1280


def test_a_grid_video_tiles_every_clip_and_holds_a_short_clip_on_its_last_frame(tmp_path: Path) -> None:
    red = write_clip(tmp_path / "red.mp4", [(220, 30, 30)] * 6)
    short = write_clip(tmp_path / "short.mp4", [(30, 30, 220)] * 2 + [(30, 220, 30)])  # blue, blue, green
    tiles = [GridTile(red, ["seed=1"]), GridTile(short, ["seed=2"])]
    grid = write_grid_video(tiles, tmp_path / "out" / "grid.mp4", tags={"cosmos_wedge": "w"})

    info = probe_video(grid.path)
    assert (info.width, info.height) == grid.layout.size and info.frames == 6 and info.codec == "h264"
    assert info.pix_fmt == "yuv420p" and read_recipe(grid.path) == {"cosmos_wedge": "w"}
    assert not list((tmp_path / "out").glob(".*"))  # no temp file left
    first, last = read_frames(grid.path, [0, 5])

    def centre(frame: np.ndarray, index: int) -> np.ndarray:
        x, y = grid.layout.origin(index)
        return frame[y + 8, x + grid.layout.tile_width // 2].astype(int)

    assert np.abs(centre(first, 0) - (220, 30, 30)).max() < 25 and np.abs(centre(first, 1) - (30, 30, 220)).max() < 25
    assert np.abs(centre(last, 1) - (30, 220, 30)).max() < 25  # held on the short clip's last frame
    still, indices = grid_still(tiles)
    assert still.shape[:2] == (grid.layout.size[1], grid.layout.size[0]) and indices == [2, 1]


def test_clips_of_another_aspect_are_letterboxed_not_stretched(tmp_path: Path) -> None:
    wide = write_clip(tmp_path / "wide.mp4", [(200, 200, 200)], size=(128, 48))
    square = write_clip(tmp_path / "square.mp4", [(200, 200, 200)], size=(48, 48))
    still, _ = grid_still([GridTile(wide, []), GridTile(square, [])])
    layout = grid_layout(2, 128, 48)
    x, y = layout.origin(1)
    tile = still[y : y + layout.tile_height, x : x + layout.tile_width].astype(int)
    assert abs(tile[:, :4].mean() - BACKGROUND) < 3  # bars left and right of the square clip
    assert abs(tile[:, layout.tile_width // 2].mean() - 200) < 10
