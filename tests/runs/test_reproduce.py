"""cosmos-assets reproduce: a recorded run run again from its record or its clip, exactly, into a new folder; refused
naming what differs, or run anyway with the difference on record (issue 20)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cosmos_assets.cli import main
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.docker_engine import DockerWentAwayError
from cosmos_assets.machines.job import HostLinkLostError
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.media.recipe import read_recipe
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_generation
from cosmos_assets.runs.skip import last_success
from cosmos_assets.runs.stage import RunTerminated
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
    done = run_generation(
        layout, LocalMachine(host_dir, label="preview@local"), PREVIEW, "tiny_prompt", log=lambda _: None
    )
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
    assert out == (
        f"reproduced run {done.record.run_id} as run {again[0].run_id} into {folder}: the video stream is "
        "bit-identical to the original's (8 frames)"
    )
    assert (folder / "output.mp4").is_file()
    assert (folder / "output.mp4").read_bytes() != before["output.mp4"]  # the stamped recipe differs by design
    assert read_recipe(folder / "output.mp4")["cosmos_run_id"] == again[0].run_id
    assert {
        p.name: p.read_bytes() for p in done.output_dir.iterdir() if p.is_file()
    } == before  # the original: untouched
    assert last_success(RunStore(layout.runs_dir), "tiny_prompt", "generate").run_id == done.record.run_id


def test_a_changed_input_is_refused_naming_it_then_run_anyway_on_record(original, capsys) -> None:
    layout, done = original
    depth = layout.shot_videos_dir("tiny_shot") / "depth.mp4"
    color = layout.shot_videos_dir("tiny_shot") / "color.mp4"
    shutil.copyfile(color, depth)  # the depth pass re-encoded from something else
    assert main(["reproduce", done.record.run_id]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: run {done.record.run_id} cannot be run again exactly: input ")
    assert "inputs/videos/tiny_shot/depth.mp4 changed (sha256 " in err[0] and err[0].endswith(
        "--anyway runs it and records the difference"
    )
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


@pytest.mark.parametrize(
    "field, value",
    [
        ("cosmos_prompt_name", "../../../../victim/x"),
        ("cosmos_prompt_name", "{tmp_path}/victim/x"),  # absolute: pathlib drops what comes before it
        ("cosmos_inputs", json.dumps([["../../../victim/keep.txt", 4, "0" * 64]])),
        ("cosmos_prompt_spec", "spec-escaping"),
    ],
)
def test_a_hostile_stamp_writes_and_deletes_nothing_outside_the_project(
    original, tmp_path: Path, capsys, field: str, value: str
) -> None:
    """A clip's stamped recipe is text from anywhere: each field that becomes a path stays inside the project."""
    from cosmos_assets.media.recipe import stamp

    layout, done = original
    victim = tmp_path / "victim"  # outputs/.staging/<id>.prompt/../../../../victim: beside the project
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    clip = tmp_path / "hostile.mp4"
    shutil.copyfile(done.output_dir / "output.mp4", clip)
    if value == "spec-escaping":
        spec = json.loads(read_recipe(clip)["cosmos_prompt_spec"])
        spec["input_video_path"] = "../victim/keep.txt"
        value = json.dumps(spec)
    value = value.replace("{tmp_path}", str(tmp_path))
    stamp(clip, {"cosmos_run_id": "20260101_000000_0000abcd", field: value})  # a run this project never recorded
    assert main(["reproduce", str(clip)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    if field != "cosmos_prompt_spec":
        assert str(clip) in err[0] and field.removeprefix("cosmos_") in err[0], err[0]
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"] and (victim / "keep.txt").read_text() == "keep"
    assert reproduced(layout, done.record.run_id) == [] and not (layout.outputs_dir / "_reproduced").exists()
    staging = layout.staging_dir
    assert not staging.exists() or list(staging.iterdir()) == [], list(staging.iterdir())


def test_checkpoints_the_original_did_not_record_are_a_difference_not_the_same(original) -> None:
    """A model that resolves its checkpoint on the host (Cosmos 3: revision files) and an original that recorded no
    revision: "same checkpoints" would be a guess, so it is a difference (refused unless --anyway)."""
    from cosmos_assets.runs.reproduce import differences, from_record

    layout, done = original
    was = from_record(layout, done.record)
    assert was.checkpoint_revisions == {} and differences(was, done.record, {}, "ssh@gpu") == []
    nano = "nvidia/Cosmos3-Nano"
    found = differences(was, done.record, {nano: "a" * 40}, "ssh@gpu", revision_repos=[nano])
    assert found == [
        (
            f"{nano}: checkpoint revision not recorded by the run (it resolves to {'a' * 40} on ssh@gpu "
            "now), so the same checkpoint cannot be checked"
        )
    ]
    was.checkpoint_revisions = {nano: "a" * 40}
    assert differences(was, done.record, {nano: "a" * 40}, "ssh@gpu", revision_repos=[nano]) == []


@pytest.mark.parametrize(
    "error",
    [
        HostLinkLostError(
            "uploading: the SSH link to ssh@gpu1 stayed down after 6 reconnects over 63s (EOF). Check the "
            "network to the host and that it is up (`cosmos-assets ssh`), then run again"
        ),
        DockerWentAwayError("docker on ssh@gpu1 went away while container c1 ran; a later attempt runs it again"),
        RunTerminated("generate for tiny_prompt on preview@local: the run was terminated; its job was stopped"),
    ],
)
def test_a_host_lost_mid_reproduction_is_one_line(
    original, monkeypatch: pytest.MonkeyPatch, capsys, error: BaseException
) -> None:
    layout, done = original

    def lost(self, job, log):
        raise error

    monkeypatch.setattr(LocalMachine, "run", lost)
    assert main(["reproduce", done.record.run_id]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {error}"]


def test_a_comparison_that_fails_after_the_run_still_says_where_the_new_video_is(original, monkeypatch, capsys) -> None:
    from cosmos_assets.media.video import VideoReadError
    from cosmos_assets.runs import reproduce as reproduce_module

    layout, done = original

    def unreadable(first: Path, second: Path):
        raise VideoReadError(f"{first} or {second} cannot be decoded: Invalid data found when processing input")

    monkeypatch.setattr(reproduce_module, "compare_videos", unreadable)
    assert main(["reproduce", done.record.run_id]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    (again,) = reproduced(layout, done.record.run_id)
    folder = layout.outputs_dir / "_reproduced" / "tiny_prompt" / again.run_id
    assert again.state == "succeeded" and (folder / "output.mp4").is_file()
    assert out.startswith(
        f"reproduced run {done.record.run_id} as run {again.run_id} into {folder}: comparison failed: "
    )
    assert out.endswith("cannot be decoded: Invalid data found when processing input")
