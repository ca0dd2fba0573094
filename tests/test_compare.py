"""media/compare.py: the same video stream packet for packet whatever the container's tags; PSNR on known frames."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from cosmos_assets.media.compare import VideoComparison, compare_videos, psnr, stream_facts
from cosmos_assets.media.recipe import stamp


def write_video(path: Path, frames: list[np.ndarray], codec: str = "libx264rgb") -> Path:
    """Lossless (libx264rgb, qp 0) so decoded frames are exactly the arrays written."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "rgb24"
        stream.options = {"qp": "0", "preset": "ultrafast", "threads": "1"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def flat(value: int, n: int = 4, size: tuple[int, int] = (32, 48)) -> list[np.ndarray]:
    return [np.full((*size, 3), value, np.uint8) for _ in range(n)]


def test_psnr_of_known_frames() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    assert math.isinf(psnr(a, a))
    b = a.copy()
    b[...] = 1  # MSE 1 -> 10 log10(255^2) = 48.13 dB
    assert psnr(a, b) == pytest.approx(20 * math.log10(255), abs=1e-9)
    c = a.copy()
    c[0, 0, 0] = 255  # MSE = 255^2 / 48 -> 10 log10(48)
    assert psnr(a, c) == pytest.approx(10 * math.log10(48), abs=1e-9)
    with pytest.raises(ValueError, match="different shapes"):
        psnr(a, np.zeros((2, 2, 3), np.uint8))


def test_the_same_stream_is_bit_identical_whatever_the_tags(tmp_path: Path) -> None:
    original = write_video(tmp_path / "a.mp4", flat(100))
    copy = tmp_path / "b.mp4"
    copy.write_bytes(original.read_bytes())
    stamp(copy, {"cosmos_run_id": "somebody else's"})  # remuxed: the file differs, the stream does not
    assert copy.read_bytes() != original.read_bytes()
    result = compare_videos(original, copy)
    assert result.identical and result.frames == (4, 4)
    assert "bit-identical" in result.summary()


def test_a_different_stream_gets_psnr_per_frame_worst_and_mean(tmp_path: Path) -> None:
    frames = flat(100)
    changed = [f.copy() for f in frames]
    changed[2][...] = 101  # frame 2 off by one everywhere: 48.13 dB; frame 3 off by 255 in one value
    changed[3][0, 0, 0] = 255
    original = write_video(tmp_path / "a.mp4", frames)
    new = write_video(tmp_path / "b.mp4", changed)
    result = compare_videos(original, new)
    assert not result.identical and len(result.psnr) == 4
    assert math.isinf(result.psnr[0]) and math.isinf(result.psnr[1])
    assert result.psnr[2] == pytest.approx(20 * math.log10(255), abs=1e-6)
    expected_3 = 10 * math.log10(255**2 / ((255 - 100) ** 2 / (32 * 48 * 3)))
    assert result.psnr[3] == pytest.approx(expected_3, abs=1e-6)
    assert result.worst == (3, pytest.approx(expected_3, abs=1e-6))  # 40.96 dB: one value far off beats all off by one
    assert result.mean == pytest.approx((result.psnr[2] + result.psnr[3]) / 2)
    assert "PSNR worst 40.96 dB (frame 3), mean 44.55 dB" in result.summary() and "(2 equal)" in result.summary()


def test_other_sizes_and_lengths_are_said(tmp_path: Path) -> None:
    original = write_video(tmp_path / "a.mp4", flat(100))
    bigger = write_video(tmp_path / "b.mp4", flat(100, size=(64, 48)))
    assert "no PSNR" in compare_videos(original, bigger).summary()
    shorter = write_video(tmp_path / "c.mp4", flat(100, n=3))
    result = compare_videos(original, shorter)
    assert not result.identical and result.frames == (4, 3) and "3 frames, the original 4" in result.summary()
    assert stream_facts(original).codec == "h264"


def test_equal_pixels_in_a_different_encoding_are_not_called_identical() -> None:
    result = VideoComparison(False, (2, 2), [math.inf, math.inf])
    assert "decoded frames is equal, the encoded stream is not" in result.summary()
