"""Asset-check rules on real video files: each fails on a bad output and passes on a good one."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
import dagster as dg
import numpy as np
import pytest

from cosmos_assets.defs.assets import ALL_ASSETS, control_videos
from cosmos_assets.defs.checks import ALL_CHECKS
from cosmos_assets.defs.resources import LocalPreviewHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.media import VideoInfo, encode_control_videos, scan_render_folder
from cosmos_assets.media.sample_render import make_sample_render
from cosmos_assets.models import preview_model
from cosmos_assets.runs.output_rules import (
    BUCKETS,
    CHUNK_FRAMES,
    MAX_FRAMES,
    check_controls_match_render,
    check_decodable,
    check_generated,
    check_generated_run,
    check_ownership,
    check_upscale,
    chunk_count,
    expected_generation,
    nearest_bucket,
    recorded_remote_user,
)
from cosmos_assets.runs.spec_used import SpecUsed
from tests.project_factory import make_project


def write_video(path: Path, frames: int, width: int, height: int) -> Path:
    """A small H.264 mp4 of moving gradients."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 0] = (np.arange(width) * 255 // max(1, width - 1)).astype(np.uint8)[None, :]
            image[..., 1] = (i * 10) % 256
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 24)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def controls(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], int, tuple[int, int]]:
    """Control videos of an odd-sized render (padded to even), with the render's frames and size."""
    root = tmp_path_factory.mktemp("controls")
    sequence = make_sample_render(root / "render", frames=6, width=97, height=65)
    videos = encode_control_videos(scan_render_folder(root / "render"), root / "videos")
    return {m: v.path for m, v in videos.items()}, sequence.frame_count, (sequence.width, sequence.height)


def test_decodable_passes_on_a_good_mp4_and_fails_on_truncated_or_non_video(tmp_path: Path) -> None:
    good = write_video(tmp_path / "good.mp4", 12, 64, 48)
    assert check_decodable(good).passed
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    report = check_decodable(truncated)
    assert not report.passed and "truncated.mp4" in report.problems[0]
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    assert not check_decodable(text).passed
    assert not check_decodable(tmp_path / "missing.mp4").passed


def test_controls_match_the_render_padded_to_even(controls) -> None:
    videos, frames, size = controls
    report = check_controls_match_render(videos, frames, size)
    assert report.passed, report.problems
    assert report.facts["expected_resolution"] == "98x66"


def test_controls_fail_on_wrong_frame_count_size_or_a_missing_pass(controls, tmp_path: Path) -> None:
    videos, frames, size = controls
    assert "frames" in check_controls_match_render(videos, frames + 1, size).problems[0]
    wrong_size = check_controls_match_render(videos, frames, (128, 64))
    assert len(wrong_size.problems) == 3 and "expected 128x64" in wrong_size.problems[0]
    broken = {**videos, "depth": tmp_path / "nope.mp4"}
    assert any(p.startswith("depth:") for p in check_controls_match_render(broken, frames, size).problems)


def test_controls_expect_max_frames_when_the_materialization_asked_for_fewer(controls) -> None:
    videos, frames, size = controls
    assert not check_controls_match_render(videos, frames + 10, size, max_frames=frames + 5).passed
    assert check_controls_match_render(videos, frames + 10, size, max_frames=frames).passed


def test_generated_expects_the_resolution_bucket_and_the_shortest_input(tmp_path: Path) -> None:
    inputs = [write_video(tmp_path / "a.mp4", 10, 320, 180), write_video(tmp_path / "b.mp4", 8, 320, 180)]
    good = write_video(tmp_path / "good.mp4", 8, 1280, 704)
    report = check_generated(good, inputs)
    assert report.passed, report.problems
    assert report.facts["expected_resolution"] == "1280x704" and report.facts["chunks_of_121"] == 1
    assert "bucket 1280x704" in check_generated(write_video(tmp_path / "small.mp4", 8, 320, 180), inputs).problems[0]
    assert "expected 8" in check_generated(write_video(tmp_path / "long.mp4", 10, 1280, 704), inputs).problems[0]
    assert not check_generated(good, [tmp_path / "missing.mp4"]).passed


def test_expected_generation_caps_at_5000_frames_and_counts_121_frame_chunks() -> None:
    def info(frames: int, w: int, h: int) -> VideoInfo:
        return VideoInfo(
            path=Path("x.mp4"), frames=frames, width=w, height=h, fps=24, codec="h264", pix_fmt="yuv420p", duration=1
        )

    assert expected_generation([info(6000, 640, 480), info(7000, 640, 480)]) == (5000, (960, 704))
    assert expected_generation([info(121, 1080, 1920)]) == (121, (704, 1280))
    assert [chunk_count(n) for n in (1, 121, 122, 241, 242)] == [1, 1, 2, 2, 3]


def test_model_facts_agree_with_the_preview_backend() -> None:
    """The checks encode docs/upstream/transfer1.md#resolution-buckets; the preview backend implements the same rules."""
    assert BUCKETS == preview_model.BUCKETS
    assert (MAX_FRAMES, CHUNK_FRAMES) == (preview_model.MAX_FRAMES, preview_model.CHUNK_FRAMES)
    for size in ((1920, 1080), (1024, 768), (512, 512), (768, 1024), (1080, 1920), (2000, 500)):
        assert nearest_bucket(*size) == preview_model.nearest_bucket(*size)


def test_upscale_must_be_exactly_3x_with_the_same_frames(tmp_path: Path) -> None:
    generated = write_video(tmp_path / "gen.mp4", 6, 64, 48)
    assert check_upscale(write_video(tmp_path / "up.mp4", 6, 192, 144), generated).passed
    assert "expected 192x144" in check_upscale(write_video(tmp_path / "up2.mp4", 6, 128, 96), generated).problems[0]
    assert "6" in check_upscale(write_video(tmp_path / "up3.mp4", 5, 192, 144), generated).problems[0]


def test_ownership_by_uid_and_non_root_container_on_remote_hosts(tmp_path: Path) -> None:
    files = [tmp_path / "a", tmp_path / "b"]
    for f in files:
        f.write_text("x")
    assert check_ownership(files).passed
    other = check_ownership(files, uid=os.getuid() + 1)
    assert len(other.problems) == 2 and "chown" in other.problems[0]
    assert not check_ownership(files, remote=True, remote_user=None).passed
    assert not check_ownership(files, remote=True, remote_user="0:0").passed
    assert check_ownership(files, remote=True, remote_user="1000:1000").passed


def _spec_used(backend: str, command: list[str], container: dict | None = None, spec: dict | None = None) -> SpecUsed:
    now = datetime.now(UTC)
    return SpecUsed(
        stage="generate",
        backend=backend,
        run_id="r",
        prompt="p",
        host="h",
        command=command,
        command_line=" ".join(command),
        container=container or {},
        spec=spec or {},
        spec_remote_path="s",
        video_save_folder="v",
        started_at=now,
        finished_at=now,
        exit_code=0,
    )


def test_remote_user_is_read_from_the_recorded_docker_command_or_container() -> None:
    assert recorded_remote_user(_spec_used("preview", ["python"])) == (False, None)
    assert recorded_remote_user(_spec_used("cosmos-transfer1", ["docker", "run", "-u", "1000:1000", "img"])) == (
        True,
        "1000:1000",
    )
    assert recorded_remote_user(_spec_used("cosmos-transfer1", ["docker", "run", "img"])) == (True, None)
    assert recorded_remote_user(_spec_used("cosmos-transfer1", [], {"user": "1001:1001"})) == (True, "1001:1001")


def test_partitioned_checks_run_with_the_asset_for_its_partition(tmp_path: Path) -> None:
    make_project(tmp_path, shot="tiny_shot")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shots", ["tiny_shot"])
    resources = {
        "project": ProjectResource(root=str(tmp_path)),
        "gpu_host": LocalPreviewHost(remote_dir=str(tmp_path / "host")),  # required by the other assets' defs
    }
    result = dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        selection=[control_videos],
        partition_key="tiny_shot",
        instance=instance,
        resources=resources,
    )
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {
        "controls_match_render",
        "controls_decodable",
        "controls_owned_by_user",
    }
    assert all(e.passed and e.partition == "tiny_shot" for e in evaluations)

    assert all(e.metadata["problems"].value == [] for e in evaluations)


def _shot(root: Path, frames: int = 8, size: tuple[int, int] = (96, 64), control_frames: int | None = None) -> None:
    shot = root / "inputs" / "videos" / "s"
    shot.mkdir(parents=True)
    write_video(shot / "color.mp4", frames, *size)
    write_video(shot / "depth.mp4", control_frames or frames, *size)


def test_transfer2_5_output_is_checked_with_its_own_spec_keeping_the_input_size(tmp_path: Path) -> None:
    """spec_used.json of a Transfer2.5 run holds control_path (not a Transfer1 key): read with Transfer2.5's spec."""
    _shot(tmp_path, frames=8, size=(96, 64))
    spec = {
        "name": "p",
        "prompt": "a street",
        "video_path": "/workspace/inputs/videos/s/color.mp4",
        "depth": {"control_path": "/workspace/inputs/videos/s/depth.mp4", "control_weight": 0.5},
    }
    used = _spec_used("cosmos-transfer2.5", ["docker", "run"], spec=spec)
    report = check_generated_run(write_video(tmp_path / "good.mp4", 8, 96, 64), used, tmp_path)
    assert report.passed, report.problems
    assert report.facts["expected_resolution"] == "96x64" and report.facts["model"] == "cosmos-transfer2.5"
    bucket = check_generated_run(write_video(tmp_path / "bucket.mp4", 8, 960, 704), used, tmp_path)
    assert bucket.problems == [
        "bucket.mp4: 960x704, expected video_path's size rounded down to even (keep_input_resolution) 96x64"
    ]
    capped = _spec_used("cosmos-transfer2.5", [], spec={**spec, "max_frames": 5})
    assert "expected 5" in check_generated_run(tmp_path / "good.mp4", capped, tmp_path).problems[0]
    bucketed = _spec_used("cosmos-transfer2.5", [], spec={**spec, "keep_input_resolution": False})
    assert check_generated_run(tmp_path / "bucket.mp4", bucketed, tmp_path).passed


def test_transfer2_5_480_tier_has_portrait_buckets(tmp_path: Path) -> None:
    """Upstream's 480 tier holds 3:4 (480x640) and 9:16 (432x768) too (docs/upstream/transfer2.5.md#resolution-buckets):
    a portrait input at 480 with keep_input_resolution false comes out portrait, never square."""
    _shot(tmp_path, frames=8, size=(64, 96))
    spec = {
        "name": "p",
        "prompt": "a street",
        "video_path": "/workspace/inputs/videos/s/color.mp4",
        "depth": {"control_path": "/workspace/inputs/videos/s/depth.mp4"},
        "resolution": "480",
        "keep_input_resolution": False,
    }
    used = _spec_used("cosmos-transfer2.5", [], spec=spec)
    assert check_generated_run(write_video(tmp_path / "portrait.mp4", 8, 480, 640), used, tmp_path).passed
    square = check_generated_run(write_video(tmp_path / "square.mp4", 8, 480, 480), used, tmp_path)
    assert square.problems == ["square.mp4: 480x480, expected the 480 bucket (keep_input_resolution false) 480x640"]


def test_cosmos3_output_is_the_tier_bucket_of_its_aspect_and_the_first_hints_length(tmp_path: Path) -> None:
    _shot(tmp_path, frames=10, size=(96, 64), control_frames=8)
    depth = {"control_path": "/workspace/inputs/videos/s/depth.mp4", "weight": 1.0}
    with_vision = {
        "name": "p",
        "model_mode": "video2video",
        "prompt": "a street",
        "resolution": "720",
        "vision_path": "/workspace/inputs/videos/s/color.mp4",
        "aspect_ratio": "4,3",
        "depth": depth,
    }
    used = _spec_used("cosmos3", [], spec=with_vision)
    assert check_generated_run(write_video(tmp_path / "c3.mp4", 8, 1104, 832), used, tmp_path).passed
    wrong = check_generated_run(write_video(tmp_path / "t1.mp4", 10, 960, 704), used, tmp_path)
    assert wrong.problems == [
        "t1.mp4: 10 frames, expected 8 (hint depth's frames, capped by max_frames)",
        "t1.mp4: 960x704, expected the 720 tier's 4,3 bucket 1104x832",
    ]
    # without vision_path the first hint's control sets the aspect (3:2 -> 4,3); the 480 tier's bucket
    no_vision = {k: v for k, v in with_vision.items() if k not in ("vision_path", "aspect_ratio")}
    used = _spec_used("cosmos3", [], spec={**no_vision, "resolution": "480", "fps": 24})
    assert check_generated_run(write_video(tmp_path / "c3_480.mp4", 8, 736, 544), used, tmp_path).passed
    # an edge hint without control_path is computed from vision_path: its length is vision's
    edge_first = {**with_vision, "edge": {"weight": 1.0}}
    assert (
        "expected 10"
        in check_generated_run(tmp_path / "c3.mp4", _spec_used("cosmos3", [], spec=edge_first), tmp_path).problems[0]
    )


def test_a_spec_its_models_parser_refuses_is_a_failed_check_naming_the_field_not_an_exception(tmp_path: Path) -> None:
    _shot(tmp_path)
    video = write_video(tmp_path / "out.mp4", 8, 960, 704)
    t25 = {"name": "p", "prompt": "x", "video_path": "/workspace/inputs/videos/s/color.mp4", "vis": {"bogus": 1}}
    report = check_generated_run(video, _spec_used("cosmos-transfer2.5", [], spec=t25), tmp_path)
    assert report.problems == [
        "spec_used.json: the cosmos-transfer2.5 spec cannot be read (vis.bogus: Extra inputs are not permitted)"
    ]
    outside = {**t25, "vis": {}, "video_path": "/workspace/../etc/passwd.mp4"}
    report = check_generated_run(video, _spec_used("cosmos-transfer2.5", [], spec=outside), tmp_path)
    assert not report.passed and "leaves the model's root folder" in report.problems[0]
    transfer1 = {
        "input_video_path": "inputs/videos/s/color.mp4",
        "depth": {"input_control": "inputs/videos/s/depth.mp4"},
    }
    assert check_generated_run(video, _spec_used("cosmos-transfer1", [], spec=transfer1), tmp_path).passed
    report = check_generated_run(
        video, _spec_used("cosmos-transfer1", [], spec={**transfer1, "edge": {"control_path": "x"}}), tmp_path
    )
    assert not report.passed and "edge" in report.problems[0]
