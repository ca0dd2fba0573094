"""Picture functions: contact sheet of the control passes, first/middle/last frames, the inline thumbnail."""

from __future__ import annotations

import base64
from pathlib import Path

import av
import numpy as np
import pytest

from cosmos_assets.media import encode_control_videos, read_png_header, scan_render_folder
from cosmos_assets.media.previews import (
    THUMB_WIDTH,
    control_preview,
    encode_jpeg,
    preview_markdown,
    sample_indices,
    scale_to_width,
    video_preview,
)
from cosmos_assets.media.sample_render import make_sample_render
from cosmos_assets.progress import TransferProgress, format_bytes, format_transfer_progress


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("previews")
    make_sample_render(root / "render", frames=9, width=320, height=176)
    return {m: v.path for m, v in encode_control_videos(scan_render_folder(root / "render"), root / "videos").items()}


def decode_jpeg(data: bytes) -> av.VideoFrame:
    return av.CodecContext.create("mjpeg", "r").decode(av.Packet(data))[0]


def test_sample_indices_are_first_middle_last_without_repeats() -> None:
    assert sample_indices(9) == [0, 4, 8]
    assert sample_indices(2) == [0, 1]
    assert sample_indices(1) == [0]
    with pytest.raises(ValueError):
        sample_indices(0)


def test_control_preview_is_three_passes_by_three_frames(videos: dict[str, Path], tmp_path: Path) -> None:
    preview = control_preview(videos, tmp_path)
    header = read_png_header(preview.sheet_path)
    gap = 4  # media.contact_sheet's default
    assert (header.width, header.height) == preview.sheet_size == (3 * 320 + 4 * gap, 3 * 176 + 4 * gap)
    assert preview.frame_indices == (0, 4, 8)
    thumb = decode_jpeg(preview.thumbnail_jpeg)
    assert (thumb.width, thumb.height) == preview.thumbnail_size and thumb.width <= THUMB_WIDTH
    assert len(preview.thumbnail_jpeg) < 60_000


def test_control_preview_rows_are_the_passes(videos: dict[str, Path], tmp_path: Path) -> None:
    """The depth row is gray (no chroma), the colour row is not: rows follow the dict order."""
    preview = control_preview(videos, tmp_path)
    sheet = av.open(str(preview.sheet_path)).decode(video=0).__next__().to_ndarray(format="rgb24").astype(int)
    third = sheet.shape[0] // 3
    color_row, depth_row = sheet[:third], sheet[third : 2 * third]
    assert np.abs(depth_row[..., 0] - depth_row[..., 2]).mean() < 3
    assert np.abs(color_row[..., 0] - color_row[..., 2]).mean() > 3


def test_video_preview_is_one_row_and_never_upscales(videos: dict[str, Path], tmp_path: Path) -> None:
    preview = video_preview(videos["color"], tmp_path)
    assert preview.sheet_size == (3 * 320 + 16, 176 + 8)
    assert preview.sheet_path == tmp_path / "contact_sheet.png"


def test_markdown_embeds_the_jpeg_and_names_the_full_sheet(videos: dict[str, Path], tmp_path: Path) -> None:
    preview = video_preview(videos["color"], tmp_path)
    text = preview_markdown(preview, "generate: first, middle, last frame")
    prefix = "![generate: first, middle, last frame](data:image/jpeg;base64,"
    assert text.startswith(prefix)
    encoded = text[len(prefix) : text.index(")")]
    assert base64.b64decode(encoded) == preview.thumbnail_jpeg
    assert str(preview.sheet_path) in text and "frames 0, 4, 8" in text


def test_scale_and_jpeg_keep_even_sides_and_refuse_odd_ones() -> None:
    image = np.zeros((301, 999, 3), np.uint8)
    small = scale_to_width(image, 480)
    assert small.shape[1] == 480 and small.shape[0] % 2 == 0
    assert scale_to_width(np.zeros((10, 100, 3), np.uint8), 480).shape[1] == 100
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((3, 4, 3), np.uint8))


def test_transfer_progress_line_format() -> None:
    line = format_transfer_progress("upload", 12 * 2**20, 48 * 2**20, 1, 4, 2.0)
    assert line == "[transfer] upload 12.0 MiB / 48.0 MiB (25%), 1/4 files, 6.0 MiB/s"
    assert format_bytes(512) == "512 B" and format_bytes(1536) == "1.5 KiB"
    assert "100%" in format_transfer_progress("download", 0, 0, 0, 0, 0.0)


def test_transfer_progress_is_throttled_and_always_reports_the_end() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = TransferProgress("download", 10 * 2**20, 2, lines.append, every=2.0, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 0.5
        progress.add(2**20)
    progress.file_done()
    assert len(lines) == 2  # at t=2.0 and t=4.0, not per chunk
    assert lines[0].startswith("[transfer] download 4.0 MiB / 10.0 MiB (40%)")
    progress.finish()
    assert lines[-1] == "[transfer] download 10.0 MiB / 10.0 MiB (100%), 1/2 files, 2.0 MiB/s"


def test_local_host_reports_transfer_progress(tmp_path: Path) -> None:
    from cosmos_assets.machines.job import StagedFile
    from cosmos_assets.machines.local import LocalMachine

    source = tmp_path / "big.bin"
    source.write_bytes(b"\0" * (3 * 2**20 + 5))
    host = LocalMachine(tmp_path / "host")
    lines: list[str] = []
    stats = host.upload([StagedFile(local=source, remote="inputs/big.bin")], lines.append)
    assert stats.bytes_sent == source.stat().st_size
    assert any(line.startswith("[transfer] upload 3.0 MiB / 3.0 MiB (100%), 1/1 files") for line in lines), lines
    (tmp_path / "host" / "outputs" / "run").mkdir(parents=True)
    (tmp_path / "host" / "outputs" / "run" / "output.mp4").write_bytes(b"x" * 2048)
    lines.clear()
    host.download("outputs/run", tmp_path / "fetched", lines.append)
    assert any(line.startswith("[transfer] download 2.0 KiB / 2.0 KiB (100%), 1/1 files") for line in lines), lines
