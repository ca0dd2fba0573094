"""media.py: render scan/validation, control-video encode, probe and thumbnails, on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosmos_assets.media import (
    MODALITIES,
    RenderValidationError,
    VideoReadError,
    contact_sheet,
    decode_png,
    encode_control_videos,
    probe_video,
    read_frames,
    scan_render_folder,
    write_png,
)

W, H = 64, 48


def write_shot(folder: Path, frames=range(1001, 1005), width=W, height=H, depth16=True) -> None:
    """A tiny render: colour gradient, depth = 1000 + 100*row (16-bit), two-label segmentation."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in frames:
        colour = np.zeros((height, width, 3), np.uint8)
        colour[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        colour[..., 1] = (n * 7) % 256
        depth = (1000 + 100 * np.arange(height, dtype=np.uint16))[:, None].repeat(width, axis=1)
        seg = np.zeros((height, width, 3), np.uint8)
        seg[:, : width // 2] = (220, 20, 60)
        seg[:, width // 2 :] = (0, 0, 142)
        write_png(folder / f"color.{n:04d}.png", colour)
        write_png(folder / f"depth.{n:04d}.png", depth if depth16 else (depth // 20).astype(np.uint8))
        write_png(folder / f"segmentation.{n:04d}.png", seg)


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(RenderValidationError) as info:
        scan_render_folder(folder)
    assert str(folder) in str(info.value)
    return info.value.problems


def test_scan_valid_folder_starting_at_1001(tmp_path):
    write_shot(tmp_path)
    seq = scan_render_folder(tmp_path)
    assert (seq.first_frame, seq.last_frame, seq.frame_count) == (1001, 1004, 4)
    assert (seq.width, seq.height) == (W, H)
    assert seq.bit_depth == {"color": 8, "depth": 16, "segmentation": 8}
    assert [p.name for p in seq.frames["depth"]] == [f"depth.{n}.png" for n in range(1001, 1005)]


def test_png_writer_round_trips_through_ffmpeg_decoder(tmp_path):
    depth = (np.arange(W * H, dtype=np.uint16) * 13).reshape(H, W)
    write_png(tmp_path / "d.png", depth)
    decoded = decode_png(tmp_path / "d.png").to_ndarray()
    assert decoded.astype(np.uint16).tolist() == depth.tolist()


def test_gap_in_all_passes_names_the_files_and_frame(tmp_path):
    write_shot(tmp_path, frames=[1001, 1002, 1004])
    problems = problems_of(tmp_path)
    assert any("frame 1003" in p and "depth.1003.png" in p and "--frames" in p for p in problems), problems


def test_one_missing_depth_frame_names_file_and_existing_range(tmp_path):
    write_shot(tmp_path)
    (tmp_path / "depth.1003.png").unlink()
    problems = problems_of(tmp_path)
    assert len(problems) == 1
    assert "depth.1003.png is missing" in problems[0]
    assert "1001-1004 exist for color" in problems[0]
    assert "re-render depth frame 1003" in problems[0]


def test_missing_modality(tmp_path):
    write_shot(tmp_path)
    for p in tmp_path.glob("segmentation.*.png"):
        p.unlink()
    problems = problems_of(tmp_path)
    assert any(p.startswith("no segmentation.####.png files") for p in problems), problems


def test_frame_of_another_size_names_the_file(tmp_path):
    write_shot(tmp_path)
    write_png(tmp_path / "depth.1002.png", np.zeros((H // 2, W // 2), np.uint16))
    problems = problems_of(tmp_path)
    assert any("depth.1002.png" in p and f"{W // 2}x{H // 2}" in p and f"{W}x{H}" in p for p in problems), problems


def test_unreadable_and_truncated_pngs_are_all_reported(tmp_path):
    write_shot(tmp_path)
    (tmp_path / "color.1002.png").write_bytes(b"not a png at all, sorry" * 3)
    data = (tmp_path / "segmentation.1004.png").read_bytes()
    (tmp_path / "segmentation.1004.png").write_bytes(data[: len(data) // 2])
    problems = problems_of(tmp_path)
    assert any("color.1002.png" in p and "not a readable PNG" in p for p in problems), problems
    assert any("segmentation.1004.png" in p and "truncated" in p for p in problems), problems


def test_fingerprint_changes_when_a_frame_is_rewritten(tmp_path):
    write_shot(tmp_path)
    seq = scan_render_folder(tmp_path)
    before = seq.fingerprint()
    assert seq.fingerprint() == before
    write_png(tmp_path / "color.1002.png", np.zeros((H, W, 3), np.uint8))
    assert seq.fingerprint() != before


def test_encode_writes_three_decodable_videos(tmp_path):
    write_shot(tmp_path / "shot", frames=range(1, 7))
    seen: list[tuple[str, int, int]] = []
    videos = encode_control_videos(
        scan_render_folder(tmp_path / "shot"), tmp_path / "out", progress=lambda m, d, t: seen.append((m, d, t))
    )
    assert set(videos) == set(MODALITIES)
    for m in MODALITIES:
        info = probe_video(tmp_path / "out" / f"{m}.mp4")
        assert (info.frames, info.width, info.height, info.codec, info.pix_fmt) == (6, W, H, "h264", "yuv420p")
        assert info.fps == pytest.approx(24.0)
        assert videos[m].bytes == (tmp_path / "out" / f"{m}.mp4").stat().st_size
        assert not videos[m].padded
        assert (m, 6, 6) in seen
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["color.mp4", "depth.mp4", "segmentation.mp4"]
    seg = read_frames(tmp_path / "out" / "segmentation.mp4", [2])[0]
    # Lossy 4:2:0 at CRF 18 moves a saturated label colour by a few levels; the nearest palette
    # colour must still be the right label on both sides of the boundary.
    palette = np.array([(220, 20, 60), (0, 0, 142)])
    for x, label in ((4, 0), (W - 5, 1)):
        assert np.abs(palette - seg[H // 2, x].astype(int)).sum(axis=1).argmin() == label
        assert np.abs(seg[H // 2, x].astype(int) - palette[label]).max() < 30


def test_max_frames_keeps_the_first_n_and_overwrites(tmp_path):
    write_shot(tmp_path / "shot", frames=range(1001, 1007))
    seq = scan_render_folder(tmp_path / "shot")
    encode_control_videos(seq, tmp_path / "out")
    videos = encode_control_videos(seq, tmp_path / "out", max_frames=3, fps=12)
    assert videos["color"].frames == 3
    info = probe_video(tmp_path / "out" / "color.mp4")
    assert info.frames == 3 and info.fps == pytest.approx(12.0)
    first = read_frames(tmp_path / "out" / "color.mp4", [0])[0]
    assert abs(int(first[H // 2, W // 2, 1]) - (1001 * 7) % 256) < 8  # frame 1001 is the first


def test_depth_is_inverted_and_normalised_over_the_clip(tmp_path):
    """Near (small Z) is bright; one Z value keeps its gray in frames with different ranges."""
    folder = tmp_path / "shot"
    write_shot(folder, frames=[1, 2])
    a = np.full((H, W), 3000, np.uint16)
    a[:, : W // 2] = 1000  # near on the left
    b = np.full((H, W), 3000, np.uint16)
    b[:, : W // 2] = 9000  # frame 2 reaches much further
    b[:4] = 0  # background rows: no depth
    write_png(folder / "depth.0001.png", a)
    write_png(folder / "depth.0002.png", b)
    encode_control_videos(scan_render_folder(folder), tmp_path / "out")
    f1, f2 = read_frames(tmp_path / "out" / "depth.mp4", [0, 1])
    near, mid1, mid2, far = (
        int(f1[H // 2, 8, 0]),
        int(f1[H // 2, W - 8, 0]),
        int(f2[H // 2, W - 8, 0]),
        int(f2[H // 2, 8, 0]),
    )
    assert near > 240 and far < 15  # clip min -> white, clip max -> black
    assert near > mid1 > far
    assert abs(mid1 - mid2) <= 2  # Z=3000 is one gray level in both frames: no per-frame normalisation
    assert int(f2[1, W - 8, 0]) < 15  # background shown as far


def test_odd_size_and_8bit_depth_are_padded_by_replication(tmp_path):
    folder = tmp_path / "shot"
    write_shot(folder, frames=[1, 2, 3], width=33, height=25, depth16=False)
    videos = encode_control_videos(scan_render_folder(folder), tmp_path / "out")
    assert all(v.padded and (v.width, v.height) == (34, 26) for v in videos.values())
    info = probe_video(tmp_path / "out" / "color.mp4")
    assert (info.width, info.height, info.frames) == (34, 26, 3)
    frame = read_frames(tmp_path / "out" / "color.mp4", [1])[0]
    assert abs(int(frame[10, 33, 0]) - int(frame[10, 32, 0])) < 10  # replicated edge column, not black
    assert int(frame[10, 33, 0]) > 200


def test_probe_names_the_undecodable_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        probe_video(bad)
    with pytest.raises(VideoReadError, match="missing.mp4"):
        probe_video(tmp_path / "missing.mp4")


def test_read_frames_out_of_range_and_contact_sheet(tmp_path):
    write_shot(tmp_path / "shot", frames=[1, 2, 3])
    encode_control_videos(scan_render_folder(tmp_path / "shot"), tmp_path / "out")
    with pytest.raises(VideoReadError, match="color.mp4"):
        read_frames(tmp_path / "out" / "color.mp4", [5])
    frames = read_frames(tmp_path / "out" / "color.mp4", [2, 0])
    sheet = contact_sheet(frames + [frames[0][..., 0]], columns=2, thumb_width=32, gap=4)
    assert sheet.shape == (4 + 2 * (24 + 4), 4 + 2 * (32 + 4), 3)
    write_png(tmp_path / "sheet.png", sheet)
    assert decode_png(tmp_path / "sheet.png").to_ndarray().shape == sheet.shape


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_colour_encode_keeps_quality_and_uses_inter_frames(tmp_path):
    """Limited-range output that decodes back close to the PNGs, and not every frame a keyframe."""
    import av

    from cosmos_assets.media.sample_render import make_sample_render

    seq = make_sample_render(tmp_path / "render", frames=12, width=160, height=96)
    videos = encode_control_videos(seq, tmp_path / "out")
    decoded = read_frames(videos["color"].path, list(range(12)))
    for index, path in enumerate(seq.frames["color"]):
        source = av.open(str(path)).decode(video=0).__next__().to_ndarray(format="rgb24")
        assert _psnr(decoded[index], source) >= 34.0, f"frame {index} decodes far from {path.name}"
    with av.open(str(videos["color"].path)) as container:
        keyframes = [packet.is_keyframe for packet in container.demux(video=0) if packet.size]
    assert keyframes[0] and not all(keyframes), "every frame was encoded as a keyframe"


def test_a_failed_encode_leaves_the_earlier_set_untouched(tmp_path):
    """One modality failing after another has finished must not leave new colour beside old passes."""
    import threading

    from cosmos_assets.media.sample_render import make_sample_render

    seq = make_sample_render(tmp_path / "render", frames=6, width=64, height=48)
    out = tmp_path / "out"
    before = {m: v.path.read_bytes() for m, v in encode_control_videos(seq, out).items()}
    write_png(seq.frames["color"][0], np.zeros((48, 64, 3), np.uint8))  # the new colour differs from the old
    colour_done = threading.Event()

    def fail_segmentation_after_colour(modality: str, done: int, total: int) -> None:
        if modality == "color" and done == total:
            colour_done.set()
        if modality == "segmentation" and done == total - 1:
            colour_done.wait(30)
            raise RuntimeError("segmentation encoder failed")

    with pytest.raises(RuntimeError, match="segmentation encoder failed"):
        encode_control_videos(seq, out, progress=fail_segmentation_after_colour)
    assert colour_done.is_set()
    assert {m: (out / f"{m}.mp4").read_bytes() for m in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["color.mp4", "depth.mp4", "segmentation.mp4"]
