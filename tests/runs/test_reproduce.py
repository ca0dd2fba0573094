"""cosmos-assets reproduce: a recorded run run again from its record or its clip, exactly, into a new folder; refused
naming what differs, or run anyway with the difference on record (issue 20)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cosmos_assets.cli import main
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.media.recipe import read_recipe
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_generation
from cosmos_assets.runs.skip import last_success
from tests.project_factory import make_project

PREVIEW = backend_named("preview")


@pytest.fixture
def original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A project whose tiny_prompt was generated once on the preview host the CLI uses."""
    layout = make_project(tmp_path / "project")
    host_dir = tmp_path / "host" / "cosmos-transfer1"
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(layout.root))
    monkeypatch.setenv("COSMOS_PREVIEW_DIR", str(host_dir))
    for name in ("COSMOS_HOST", "COSMOS_MODEL", "COSMOS_HOSTS_FILE"):
        monkeypatch.delenv(name, raising=False)
    done = run_generation(layout, LocalMachine(host_dir, label="preview@local"), PREVIEW, "tiny_prompt", log=lambda _: None)
    return layout, done


def reproduced(layout: ProjectLayout, original_id: str) -> list:
    return [r for r in RunStore(layout.runs_dir).all() if r.reproduces == original_id]


def test_reproduce_run_id_gives_a_bit_identical_stream_in_a_new_folder(original, capsys) -> None:
    layout, done = original
    before = {p.name: p.read_bytes() for p in done.output_dir.iterdir() if p.is_file()}
    assert done.record.program_sha256 and done.record.image_id is None  # no image here: the program identifies it
    assert main(["reproduce", done.record.run_id]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    again = reproduced(layout, done.record.run_id)
    assert len(again) == 1 and again[0].state == "succeeded" and again[0].reproduce_differences == []
    folder = layout.outputs_dir / "_reproduced" / "tiny_prompt" / again[0].run_id
    assert out == (f"reproduced run {done.record.run_id} as run {again[0].run_id} into {folder}: the video stream is "
                   "bit-identical to the original's (8 frames)")  # fmt: skip
    assert (folder / "output.mp4").is_file()
    assert (folder / "output.mp4").read_bytes() != before["output.mp4"]  # the stamped recipe differs by design
    assert read_recipe(folder / "output.mp4")["cosmos_run_id"] == again[0].run_id
    assert {p.name: p.read_bytes() for p in done.output_dir.iterdir() if p.is_file()} == before  # the original: untouched
    assert last_success(RunStore(layout.runs_dir), "tiny_prompt", "generate").run_id == done.record.run_id


def test_a_changed_input_is_refused_naming_it_then_run_anyway_on_record(original, capsys) -> None:
    layout, done = original
    depth = layout.shot_videos_dir("tiny_shot") / "depth.mp4"
    color = layout.shot_videos_dir("tiny_shot") / "color.mp4"
    shutil.copyfile(color, depth)  # the depth pass re-encoded from something else
    assert main(["reproduce", done.record.run_id]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: run {done.record.run_id} cannot be run again exactly: input ")
    assert "inputs/videos/tiny_shot/depth.mp4 changed (sha256 " in err[0] and err[0].endswith("--anyway runs it and "
                                                                                               "records the difference")
    assert reproduced(layout, done.record.run_id) == [] and not (layout.outputs_dir / "_reproduced").exists()

    assert main(["reproduce", done.record.run_id, "--anyway"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    (again,) = reproduced(layout, done.record.run_id)
    assert again.state == "succeeded" and len(again.reproduce_differences) == 1
    assert again.reproduce_differences[0].startswith("input inputs/videos/tiny_shot/depth.mp4 changed")
    assert "(run anyway: input inputs/videos/tiny_shot/depth.mp4 changed" in out
    assert "the video stream differs from the original's: PSNR worst" in out


def test_reproduce_a_clip_copied_elsewhere_from_its_stamp_alone(original, tmp_path: Path, capsys) -> None:
    layout, done = original
    drive = tmp_path / "shared_drive"
    drive.mkdir()
    clip = drive / "look_v3.mp4"
    shutil.copyfile(done.output_dir / "output.mp4", clip)
    tags = read_recipe(clip)
    assert json.loads(tags["cosmos_prompt_spec"]) == done.record.prompt_spec and tags["cosmos_recipe_version"] == "2"
    RunStore(layout.runs_dir).path(done.record.run_id).rename(tmp_path / "record_gone.json")  # only the clip is left
    assert main(["reproduce", str(clip)]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    (again,) = reproduced(layout, done.record.run_id)
    assert "bit-identical to the original's" in out and again.prompt == "tiny_prompt"


def test_a_clip_without_a_recipe_to_run_is_one_line(original, tmp_path: Path, capsys) -> None:
    layout, done = original
    from cosmos_assets.media.recipe import stamp

    clip = tmp_path / "old.mp4"
    shutil.copyfile(done.output_dir / "output.mp4", clip)
    tags = read_recipe(clip)
    old = {k: v for k, v in tags.items() if k in ("cosmos_run_id", "cosmos_stage", "cosmos_model")}
    bare = tmp_path / "bare.mp4"
    shutil.copyfile(layout.shot_videos_dir("tiny_shot") / "color.mp4", bare)
    stamp(bare, {**old, "cosmos_run_id": "20260101_000000_0000abcd"})  # an old clip: no recipe version 2 fields
    assert main(["reproduce", str(bare)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be run again: its stamp lacks prompt_spec, inputs, num_gpus" in err[0]
    assert main(["reproduce", "not-a-run"]) == 1
    assert "is not <YYYYmmdd_HHMMSS_8hex>" in capsys.readouterr().err
