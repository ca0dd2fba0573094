"""The recipe travels with the clip: run id, prompt, model, seed and spec hash in the MP4's container metadata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cosmos_assets.files import sha256_file
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.media import read_frames
from cosmos_assets.media.recipe import ClipRecipe, RecipeError, read_recipe, read_tags, stamp, stamp_all
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.runner import run_generation, run_upscale
from tests.project_factory import make_project
from tests.test_grid import write_clip

RECIPE = ClipRecipe(run_id="20260101_000000_ab", stage="generate", prompt_name="p1", prompt="a street\nat dusk",
                    model="cosmos-transfer1", seed="7", spec_sha256="f" * 64)  # fmt: skip


def packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def test_stamping_adds_the_tags_and_copies_every_packet_unchanged(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", [(10 * i, 50, 90) for i in range(5)])
    before = packets(clip)
    stamp(clip, RECIPE.to_tags())
    assert packets(clip) == before  # remuxed, not re-encoded
    tags = read_recipe(clip)
    assert (
        tags["cosmos_run_id"] == RECIPE.run_id
        and tags["cosmos_seed"] == "7"
        and tags["cosmos_prompt"] == "a street at dusk"
    )
    assert ClipRecipe.from_tags(tags) == RECIPE.model_copy(update={"prompt": "a street at dusk"})
    stamp(clip, {"cosmos_seed": "8"})  # a second stamp keeps the other tags
    assert read_recipe(clip)["cosmos_seed"] == "8" and read_recipe(clip)["cosmos_run_id"] == RECIPE.run_id
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp file left


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (ffmpeg package) not installed")
def test_ffprobe_shows_the_recipe(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", [(0, 0, 0)] * 2)
    stamp(clip, RECIPE.to_tags())
    shown = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-of", "json", str(clip)], capture_output=True, text=True, check=True
    )
    tags = json.loads(shown.stdout)["format"]["tags"]
    assert {
        k: tags[k] for k in ("cosmos_run_id", "cosmos_prompt", "cosmos_model", "cosmos_seed", "cosmos_spec_sha256")
    } == {
        "cosmos_run_id": RECIPE.run_id,
        "cosmos_prompt": "a street at dusk",
        "cosmos_model": "cosmos-transfer1",
        "cosmos_seed": "7",
        "cosmos_spec_sha256": "f" * 64,
    }


def test_a_file_that_is_not_a_video_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(RecipeError, match="junk.mp4"):
        stamp(junk, RECIPE.to_tags())
    assert junk.read_bytes() == b"not a video" and [p.name for p in tmp_path.iterdir()] == ["junk.mp4"]


def test_hard_linked_names_stay_one_file(tmp_path: Path) -> None:
    model_file = write_clip(tmp_path / "sample.mp4", [(0, 0, 0)] * 2)
    os.link(model_file, tmp_path / "output.mp4")
    assert stamp_all([tmp_path / "output.mp4", model_file], RECIPE.to_tags()) == [tmp_path / "output.mp4"]
    assert (
        os.path.samefile(model_file, tmp_path / "output.mp4")
        and read_recipe(model_file)["cosmos_model"] == "cosmos-transfer1"
    )


def test_control_videos_carry_their_shot_pass_and_source_frames(tmp_path: Path) -> None:
    layout = make_project(tmp_path)
    tags = read_recipe(layout.shot_videos_dir("tiny_shot") / "depth.mp4")
    assert tags["cosmos_shot"] == "tiny_shot" and tags["cosmos_pass_name"] == "depth"
    assert tags["cosmos_source_frames"].endswith("(8 frames)") and len(tags["cosmos_source_digest"]) == 64
    assert "cosmos_run_id" not in tags


def test_a_run_stamps_its_clips_before_their_hashes_are_recorded(tmp_path: Path) -> None:
    layout = make_project(tmp_path / "project", text="a quiet street at dusk")
    host, preview = LocalMachine(tmp_path / "host", label="preview@local"), backend_named("preview")
    generated = run_generation(layout, host, preview, "tiny_prompt", dagster_run_id="abcdef0123", log=lambda line: None)
    tags = read_recipe(generated.video)
    record = generated.record
    assert tags["cosmos_run_id"] == record.run_id and tags["cosmos_dagster_run_id"] == "abcdef0123"
    assert tags["cosmos_prompt_name"] == "tiny_prompt" and tags["cosmos_prompt"] == "a quiet street at dusk"
    assert tags["cosmos_model"] == "preview" and tags["cosmos_spec_sha256"] == record.spec_sha256
    assert tags["cosmos_seed"] == "(model default)" and tags["cosmos_stage"] == "generate"
    recorded = {f.path: f.sha256 for f in record.output_files}
    assert recorded[str(generated.video.relative_to(layout.root))] == sha256_file(generated.video)
    assert read_frames(generated.video, [0])[0].shape[2] == 3

    upscaled = run_upscale(layout, host, preview, "tiny_prompt", log=lambda line: None)
    up_tags = read_recipe(upscaled.video)
    assert up_tags["cosmos_stage"] == "upscale" and up_tags["cosmos_source_run_id"] == record.run_id
    assert up_tags["cosmos_prompt"] == "a quiet street at dusk" and "encoder" in read_tags(upscaled.video)
