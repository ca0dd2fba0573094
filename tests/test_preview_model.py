"""models/preview_model.py: the transfer.py stand-in's CLI contract, spec handling and output layout."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cosmos_assets
from cosmos_assets.media import encode_control_videos, probe_video, read_frames, scan_render_folder, write_png
from cosmos_assets.models import preview_model

CONTRACT = json.loads((Path(cosmos_assets.__file__).parent / "contract" / "transfer_cli.json").read_text())


def make_video(folder: Path, width: int, height: int, frames: int) -> dict[str, str]:
    """Control videos of a tiny shot (real encodes) -> {modality: path}."""
    shot = folder / "shot"
    shot.mkdir(parents=True)
    for n in range(1, frames + 1):
        colour = np.full((height, width, 3), (40 + 10 * n, 120, 200), np.uint8)
        depth = np.tile(np.linspace(500, 4000, height, dtype=np.uint16)[:, None], (1, width))
        seg = np.zeros((height, width, 3), np.uint8)
        seg[:, width // 2 :] = (220, 20, 60)
        write_png(shot / f"color.{n:04d}.png", colour)
        write_png(shot / f"depth.{n:04d}.png", depth)
        write_png(shot / f"segmentation.{n:04d}.png", seg)
    videos = encode_control_videos(scan_render_folder(shot), folder / "inputs" / "videos" / "shot")
    return {m: str(v.path.relative_to(folder)) for m, v in videos.items()}


def run_preview(cwd: Path, spec: dict, *extra: str, monkeypatch, capsys) -> tuple[int, str]:
    (cwd / "spec.json").write_text(json.dumps(spec))
    monkeypatch.chdir(cwd)
    code = preview_model.main(
        ["--controlnet_specs", "spec.json", "--video_save_folder", "outputs/run", "--num_steps", "2", *extra]
    )
    return code, capsys.readouterr().out


@pytest.fixture
def shot(tmp_path):
    return make_video(tmp_path, 64, 36, 5)


def test_embedded_flag_table_equals_the_contract():
    assert preview_model.ARGUMENTS == CONTRACT["arguments"]
    assert list(preview_model.CONTROL_KEYS) == CONTRACT["spec_json"]["control_keys"]
    assert list(preview_model.PER_CONTROL_KEYS) == CONTRACT["spec_json"]["per_control_keys"]


def test_parser_matches_every_flag():
    parser = preview_model.build_parser()
    actions = {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.dest != "help"}
    assert set(actions) == set(CONTRACT["arguments"])
    for flag, spec in CONTRACT["arguments"].items():
        action = actions[flag]
        if spec["type"] == "flag":
            assert action.nargs == 0 and action.default is False, flag
        else:
            assert action.type.__name__ == spec["type"], flag
            assert action.required == bool(spec.get("required")), flag
            if not spec.get("required"):
                assert action.default == spec["default"], flag
            assert list(action.choices or []) == spec.get("choices", []), flag
    assert preview_model.main(["--num_steps", "3"]) == 2  # --controlnet_specs is required


def test_generate_writes_video_and_prompt_in_the_bucket(tmp_path, shot, monkeypatch, capsys):
    spec = {
        "prompt": "a foggy harbour",
        "input_video_path": shot["color"],
        "depth": {"input_control": shot["depth"], "control_weight": 0.7},
        "seg": {"input_control": shot["segmentation"], "control_weight": "0.4"},
    }
    code, out = run_preview(tmp_path, spec, "--video_save_name", "gen", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "outputs" / "run").iterdir()) == ["gen.mp4", "gen.txt"]
    assert (tmp_path / "outputs" / "run" / "gen.txt").read_text() == "a foggy harbour"
    info = probe_video(tmp_path / "outputs" / "run" / "gen.mp4")
    assert (info.width, info.height, info.frames) == (1280, 704, 5)  # 16:9 bucket
    assert all(line.startswith("[preview]") for line in out.splitlines())
    assert "preview backend (not the model): generate chunk 1/1 step 2/2" in out


@pytest.mark.parametrize(
    "size,bucket",
    [
        ((64, 36), (1280, 704)),
        ((64, 48), (960, 704)),
        ((50, 50), (960, 960)),
        ((48, 64), (704, 960)),
        ((36, 64), (704, 1280)),
    ],
)
def test_nearest_bucket(size, bucket):
    assert preview_model.nearest_bucket(*size) == bucket


def test_controls_trimmed_to_shortest(tmp_path, monkeypatch, capsys):
    long = make_video(tmp_path / "long", 48, 48, 6)
    short = make_video(tmp_path / "short", 48, 48, 3)
    spec = {
        "prompt": "p",
        "input_video_path": str(tmp_path / "long" / long["color"]),
        "depth": {"input_control": str(tmp_path / "short" / short["depth"])},
    }
    code, out = run_preview(tmp_path, spec, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, out
    info = probe_video(tmp_path / "outputs" / "run" / "output.mp4")
    assert (info.frames, info.width, info.height) == (3, 960, 960)


def test_spec_overrides_key_equals_value_but_not_key_space_value(tmp_path, shot, monkeypatch, capsys):
    spec = {"prompt": "from the spec", "input_video_path": shot["color"], "edge": {"control_weight": 1}}
    code, _ = run_preview(tmp_path, spec, "--prompt=from argv", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    assert (tmp_path / "outputs" / "run" / "output.txt").read_text() == "from the spec"
    code, _ = run_preview(tmp_path, spec, "--prompt", "from argv", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    assert (tmp_path / "outputs" / "run" / "output.txt").read_text() == "from argv"


def test_upscale_is_three_times_the_input(tmp_path, shot, monkeypatch, capsys):
    spec = {"input_video_path": shot["color"], "upscale": {"control_weight": 0.5}}
    code, out = run_preview(tmp_path, spec, "--video_save_name", "up", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, out
    info = probe_video(tmp_path / "outputs" / "run" / "up.mp4")
    assert (info.width, info.height, info.frames) == (64 * 3, 36 * 3, 5)
    assert info.fps == pytest.approx(24.0)
    big = read_frames(tmp_path / "outputs" / "run" / "up.mp4", [4])[0]
    small = read_frames(tmp_path / shot["color"], [4])[0]
    assert np.abs(big[::3, ::3].astype(int).mean(axis=(0, 1)) - small.astype(int).mean(axis=(0, 1))).max() < 8


def test_guardrail_marker_blocks_without_a_video(tmp_path, shot, monkeypatch, capsys):
    spec = {"prompt": "x GUARDRAIL_TEST_BLOCK y", "input_video_path": shot["color"], "vis": {}}
    code, out = run_preview(tmp_path, spec, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1
    assert "GUARDRAIL BLOCKED" in out
    assert not (tmp_path / "outputs" / "run" / "output.mp4").exists()


@pytest.mark.parametrize(
    "spec,needle",
    [
        ({"prompt": "p", "input_video_path": "x.mp4", "depht": {"control_weight": 0.5}}, "invalid control key 'depht'"),
        ({"prompt": "p", "input_video_path": "x.mp4", "depth": {"control_weight": -1}}, "non-negative"),
        ({"prompt": "p", "depth": {"control_weight": 0.5}}, "every control needs input_control"),
    ],
)
def test_bad_specs_exit_2_naming_the_problem(tmp_path, spec, needle, monkeypatch, capsys):
    (tmp_path / "x.mp4").write_bytes(b"")
    code, out = run_preview(tmp_path, spec, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert needle in out


def test_only_rank_zero_writes(tmp_path, shot, monkeypatch, capsys):
    spec = {"prompt": "p", "input_video_path": shot["color"], "vis": {}}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, out = run_preview(tmp_path, spec, "--num_gpus", "2", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, out
    assert not (tmp_path / "outputs" / "run").exists()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    code, out = run_preview(tmp_path, spec, "--num_gpus", "2", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "torchrun" in out


def test_runs_as_a_plain_script_without_the_package(tmp_path, shot):
    """Copied alone (as into the Docker image), it must still run: no cosmos_assets imports."""
    script = tmp_path / "transfer.py"
    script.write_text(Path(preview_model.__file__).read_text())
    (tmp_path / "spec.json").write_text(json.dumps({"prompt": "p", "input_video_path": shot["color"], "vis": {}}))
    result = subprocess.run(
        [sys.executable, "-I", str(script), "--controlnet_specs", "spec.json", "--num_steps", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "outputs" / "output.mp4").is_file()


def test_imports_only_stdlib_numpy_and_av():
    tree = ast.parse(Path(preview_model.__file__).read_text())
    roots = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert roots - set(sys.stdlib_module_names) == {"numpy", "av"}


def test_generated_frames_and_file_say_preview(tmp_path, monkeypatch, capsys):
    """The output itself is labelled: a PREVIEW watermark in the frames and a container comment."""
    import av

    videos = make_video(tmp_path, 256, 144, 3)
    spec = {"prompt": "x", "input_video_path": videos["color"], "depth": {"input_control": videos["depth"]}}
    code, _ = run_preview(tmp_path, spec, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    video = tmp_path / "outputs" / "run" / "output.mp4"
    with av.open(str(video)) as container:
        assert "not Cosmos-Transfer1" in container.metadata.get("comment", "")
    frame = read_frames(video, [0])[0].astype(int)
    mask = preview_model.watermark_mask(preview_model.WATERMARK, max(1, frame.shape[0] // 120))
    h, w = mask.shape
    pad = max(2, h // 4)
    region = frame[pad : pad + h, pad : pad + w].mean(axis=2)
    assert region[mask].mean() > region[~mask].mean() + 80, "watermark text not visible"


def test_a_batch_of_upscales_runs_every_line_after_one_load_as_upstream_does(tmp_path, shot, monkeypatch, capsys):
    """docs/upstream/transfer1-batch-upscale.md: the spec's upscale control and its top-level input video, one JSONL
    line per video, batch size forced to 1, each item's video 3x into video_<i>/ with its prompt.txt; one load."""
    other = make_video(tmp_path / "second", 32, 18, 4)
    second = str((tmp_path / "second" / other["color"]).relative_to(tmp_path))
    lines = [{"prompt": "a street", "visual_input": shot["color"]}, {"prompt": "a harbour", "visual_input": second}]
    (tmp_path / "batch.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    counter = tmp_path / "loads.txt"
    monkeypatch.setenv("COSMOS_PREVIEW_LOAD_COUNT", str(counter))
    spec = {"input_video_path": shot["color"], "upscale": {"control_weight": 0.5}}
    code, out = run_preview(
        tmp_path, spec, "--batch_input_path", "batch.jsonl", "--batch_size", "4", monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0, out
    assert "Setting batch_size=1 as upscale does not support batch generation" in out
    assert len(counter.read_text().splitlines()) == 1
    for index, (width, height, frames, text) in enumerate([(64, 36, 5, "a street"), (32, 18, 4, "a harbour")]):
        folder = tmp_path / "outputs" / "run" / f"video_{index}"
        info = probe_video(folder / "output.mp4")
        assert (info.width, info.height, info.frames) == (width * 3, height * 3, frames)
        assert (folder / "prompt.txt").read_text() == text


def test_an_upscale_batch_needs_the_top_level_input_video_and_an_item_cannot_add_upscale(
    tmp_path, shot, monkeypatch, capsys
):
    (tmp_path / "batch.jsonl").write_text(json.dumps({"prompt": "a street", "visual_input": shot["color"]}) + "\n")
    code, out = run_preview(
        tmp_path,
        {"upscale": {"control_weight": 0.5}},
        "--batch_input_path",
        "batch.jsonl",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 2 and "input_video_path" in out  # utils.py:1236-1242: no input video, no input_control
    line = {
        "prompt": "a street",
        "visual_input": shot["color"],
        "control_overrides": {"upscale": {"control_weight": 0.5}},
    }
    (tmp_path / "batch.jsonl").write_text(json.dumps(line) + "\n")
    code, out = run_preview(
        tmp_path,
        {"input_video_path": shot["color"], "edge": {"input_control": shot["color"]}},
        "--batch_input_path",
        "batch.jsonl",
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0 and "ignoring unknown control key in override: upscale" in out  # transfer.py:314-320
    info = probe_video(tmp_path / "outputs" / "run" / "video_0" / "output.mp4")
    assert (info.width, info.height) != (64 * 3, 36 * 3)  # generated, not upscaled
