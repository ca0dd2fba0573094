"""The spec model: upstream examples load and round-trip; bad specs give file+field+fix messages."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from cosmos_assets.models.transfer1 import upscale_spec
from cosmos_assets.prompts.files import (
    duplicate_prompt,
    new_prompt_spec,
    timestamped_name,
    write_new_prompt,
    write_spec,
)
from cosmos_assets.prompts.inputs import shot_of, validate_for_run, with_videos_subdir
from cosmos_assets.prompts.spec import ControlSpec, SpecError, TransferSpec, load_spec, parse_spec

DATA_EXAMPLES = Path(__file__).parent / "data" / "spec-examples"
SHARED_EXAMPLES = Path(__file__).parents[2] / "shared" / "cosmos-transfer1" / "spec-examples"
EXAMPLE_FILES = sorted(DATA_EXAMPLES.glob("*.json"))
NOW = datetime(2025, 8, 21, 14, 30, 0)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(write_json(tmp_path / "x.json", data))
    return info.value


# ---------------------------------------------------------------------------------------------------------
# upstream examples


def test_all_twenty_examples_are_copied() -> None:
    assert len(EXAMPLE_FILES) == 20


@pytest.mark.skipif(not SHARED_EXAMPLES.is_dir(), reason=f"shared upstream examples not present at {SHARED_EXAMPLES}")
def test_copies_equal_the_shared_originals() -> None:
    shared = {p.name: p.read_bytes() for p in SHARED_EXAMPLES.glob("*.json")}
    copies = {p.name: p.read_bytes() for p in EXAMPLE_FILES}
    assert copies == shared


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_loads_and_round_trips(path: Path) -> None:
    spec = load_spec(path)
    assert spec.to_json_dict() == json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.skipif(not SHARED_EXAMPLES.is_dir(), reason=f"shared upstream examples not present at {SHARED_EXAMPLES}")
@pytest.mark.parametrize("name", [p.name for p in EXAMPLE_FILES])
def test_shared_example_loads_and_round_trips(name: str) -> None:
    path = SHARED_EXAMPLES / name
    assert load_spec(path).to_json_dict() == json.loads(path.read_text(encoding="utf-8"))


def test_round_trip_keeps_numeric_string_and_int_types(tmp_path: Path) -> None:
    data = {"input_video_path": "a.mp4", "seed": 7, "sigma_max": 90, "edge": {"control_weight": "0.5"}}
    dumped = load_spec(write_json(tmp_path / "s.json", data)).to_json_dict()
    assert dumped == data
    assert isinstance(dumped["edge"]["control_weight"], str)
    assert isinstance(dumped["sigma_max"], int)


def test_control_weight_prompt_on_vis_loads_with_a_warning() -> None:
    spec = load_spec(DATA_EXAMPLES / "inference_cosmos_transfer1_spatiotemporal_weights_auto.json")
    warnings = spec.warnings()
    assert any(w.startswith("vis.control_weight_prompt") for w in warnings)
    assert not any(w.startswith("seg.") for w in warnings)


def test_missing_sigma_max_without_video_is_a_warning_not_an_error() -> None:
    spec = load_spec(DATA_EXAMPLES / "inference_cosmos_transfer1_single_control_regional_prompt.json")
    assert any(w.startswith("sigma_max") for w in spec.warnings())


def test_top_level_key_the_command_line_always_sets_is_refused_naming_the_projects_setting(tmp_path: Path) -> None:
    # it used to be a warning ("ignored, the command line wins"); it sets the invocation, so it is refused (issue 17)
    error = load_error(tmp_path, {"input_video_path": "a.mp4", "edge": {}, "num_gpus": 4})
    assert str(error) == (
        f"{tmp_path / 'x.json'}: num_gpus = 4: sets the GPU count of the cosmos-transfer1 invocation, "
        "which is the project's; remove it; the GPU count is the project's: NUM_GPU, or num_gpus in "
        "the run config"
    )


def test_controls_are_key_control_pairs_in_upstream_order() -> None:
    spec = new_prompt_spec("s", "p")
    assert [key for key, _ in spec.controls()] == ["vis", "seg", "edge", "depth"]


def test_unknown_scalar_key_is_kept_and_passed_through(tmp_path: Path) -> None:
    data = {"input_video_path": "a.mp4", "edge": {}, "guidance": 7, "my_note": "x"}
    spec = load_spec(write_json(tmp_path / "s.json", data))
    assert spec.to_json_dict()["guidance"] == 7
    assert any(w.startswith("my_note") for w in spec.warnings())


# ---------------------------------------------------------------------------------------------------------
# invalid specs


def test_negative_weight_message_names_file_field_and_fix(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"input_video_path": "a.mp4", "depth": {"control_weight": -0.2}})
    assert err.field == "depth.control_weight"
    assert err.file == str(tmp_path / "x.json")
    assert str(err) == (
        f"{tmp_path / 'x.json'}: depth.control_weight = -0.2: weights must be >= 0; "
        "use a number from 0 to 1 or a path to a .pt weight map"
    )


def test_negative_numeric_string_weight_is_rejected(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"input_video_path": "a.mp4", "vis": {"control_weight": "-1"}})
    assert err.field == "vis.control_weight"
    assert "must be >= 0" in str(err)


def test_non_numeric_weight_string_is_rejected(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"input_video_path": "a.mp4", "vis": {"control_weight": "strong"}})
    assert "not a number and not a .pt path" in str(err)


def test_unknown_object_key_names_key_and_lists_controls(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"input_video_path": "a.mp4", "edge": {}, "dpeth": {"control_weight": 0.5}})
    assert err.field == "dpeth"
    message = str(err)
    assert "dpeth" in message
    assert "vis, seg, edge, depth, keypoint, upscale, hdmap, lidar" in message
    assert "did you mean 'depth'" in message


def test_unknown_control_field_is_rejected(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"input_video_path": "a.mp4", "depth": {"input_contrl": "d.mp4"}})
    assert err.field == "depth.input_contrl"
    assert "did you mean 'input_control'" in str(err)


def test_missing_input_control_without_input_video(tmp_path: Path) -> None:
    data = {"input_video_path": "", "sigma_max": 80, "depth": {"control_weight": 0.5}}
    err = load_error(tmp_path, data)
    assert err.field == "depth.input_control"
    assert "without input_video_path" in str(err)


def test_missing_input_control_when_input_video_key_absent(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"sigma_max": 90, "seg": {}, "vis": {"input_control": "v.mp4"}})
    assert [p.field for p in err.problems] == ["seg.input_control"]


def test_low_sigma_max_without_input_video(tmp_path: Path) -> None:
    data = {"sigma_max": 70, "depth": {"input_control": "d.mp4"}}
    err = load_error(tmp_path, data)
    assert err.field == "sigma_max"
    assert "sigma_max = 70" in str(err)
    assert ">= 80" in str(err)


def test_low_sigma_max_is_fine_with_input_video(tmp_path: Path) -> None:
    spec = load_spec(write_json(tmp_path / "s.json", {"input_video_path": "a.mp4", "sigma_max": 10, "edge": {}}))
    assert spec.sigma_max == 10


def test_at_least_one_control(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"prompt": "p", "input_video_path": "a.mp4"})
    assert "add at least one of vis" in str(err)


def test_bad_json_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "prompt": "x",\n  "edge": {}\n  "vis": {}\n}\n', encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "line 4, column 3" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_type_is_reported_with_fix(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"prompt": 5, "input_video_path": "a.mp4", "edge": {}, "seed": "3"})
    fields = [p.field for p in err.problems]
    assert fields == ["prompt", "seed"]  # all problems, not just the first
    assert "prompt = 5: must be text" in str(err)
    assert 'seed = "3": must be a whole number (write it without quotes)' in str(err)


def test_control_that_is_not_an_object(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"input_video_path": "a.mp4", "depth": 0.5})
    assert err.field == "depth"
    assert "must be an object" in str(err)


def test_input_control_prompt_outside_seg_is_an_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"input_video_path": "a.mp4", "edge": {"input_control_prompt": "cup"}})
    assert err.field == "edge.input_control_prompt"
    assert "move it under seg" in str(err)


def test_known_flag_with_wrong_type_at_top_level(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"input_video_path": "a.mp4", "edge": {}, "guidance": "7"})
    assert err.field == "guidance"
    assert "--guidance takes a number" in str(err)


def test_regional_box_out_of_range(tmp_path: Path) -> None:
    data = {
        "input_video_path": "a.mp4",
        "edge": {},
        "regional_prompts": [{"prompt": "x", "region_definitions_path": [0, 0, 2, 1]}],
    }
    err = load_error(tmp_path, data)
    assert err.field == "regional_prompts[0].region_definitions_path"


def test_regional_prompt_needs_a_region(tmp_path: Path) -> None:
    err = load_error(tmp_path, {"input_video_path": "a.mp4", "edge": {}, "regional_prompts": [{"prompt": "x"}]})
    assert err.field == "regional_prompts[0].region_definitions_path"


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"input_video_path": "a.mp4", "edge": {}, "edge": {"control_weight": 1}}', encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field == "edge"


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    err = load_error(tmp_path, [1, 2])
    assert "JSON object" in str(err)


def test_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_spec({"prompt": "no controls", "input_video_path": "a.mp4"})


# ---------------------------------------------------------------------------------------------------------
# validate_for_run


def make_shot(root: Path, shot: str) -> None:
    folder = root / "inputs" / "videos" / shot
    folder.mkdir(parents=True)
    for name in ("color.mp4", "depth.mp4", "segmentation.mp4"):
        (folder / name).write_bytes(b"\0")


def test_validate_for_run_accepts_a_complete_shot(tmp_path: Path) -> None:
    make_shot(tmp_path, "shot1")
    assert validate_for_run(new_prompt_spec("shot1", "p"), Path("inputs/prompts/p.json"), tmp_path) == []


def test_validate_for_run_reports_missing_files(tmp_path: Path) -> None:
    make_shot(tmp_path, "shot1")
    (tmp_path / "inputs/videos/shot1/depth.mp4").unlink()
    problems = validate_for_run(new_prompt_spec("shot1", "p"), Path("inputs/prompts/p.json"), tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith('inputs/prompts/p.json: depth.input_control = "inputs/videos/shot1/depth.mp4"')
    assert "file not found" in problems[0]


def test_validate_for_run_rejects_absolute_and_escaping_paths(tmp_path: Path) -> None:
    (tmp_path / "outside.mp4").write_bytes(b"\0")
    repo = tmp_path / "repo"
    repo.mkdir()
    spec = parse_spec(
        {
            "input_video_path": "/workspace/inputs/videos/s/color.mp4",
            "depth": {"input_control": "../outside.mp4"},
        }
    )
    problems = validate_for_run(spec, Path("p.json"), repo)
    assert len(problems) == 2
    assert "input_video_path" in problems[0] and "absolute" in problems[0]
    assert "write inputs/videos/s/color.mp4" in problems[0]
    assert "depth.input_control" in problems[1] and "'..'" in problems[1]


def test_validate_for_run_rejects_weights_above_one(tmp_path: Path) -> None:
    make_shot(tmp_path, "s")
    spec = new_prompt_spec("s", "p", weights={"edge": 1.5})
    problems = validate_for_run(spec, Path("p.json"), tmp_path)
    assert len(problems) == 1 and "edge.control_weight = 1.5: out of range" in problems[0]


def test_validate_for_run_checks_weight_map_files(tmp_path: Path) -> None:
    make_shot(tmp_path, "s")
    spec = parse_spec({"input_video_path": "inputs/videos/s/color.mp4", "vis": {"control_weight": "w/vis.pt"}})
    problems = validate_for_run(spec, Path("p.json"), tmp_path)
    assert len(problems) == 1 and "vis.control_weight" in problems[0]


def test_validate_for_run_sigma_max_from_command_line(tmp_path: Path) -> None:
    make_shot(tmp_path, "s")
    spec = parse_spec({"input_video_path": "", "depth": {"input_control": "inputs/videos/s/depth.mp4"}})
    assert any("sigma_max" in p for p in validate_for_run(spec, Path("p.json"), tmp_path))
    assert validate_for_run(spec, Path("p.json"), tmp_path, cli_overrides={"sigma_max": 80}) == []


# ---------------------------------------------------------------------------------------------------------
# shots and built specs


def test_shot_of_reads_the_videos_folder() -> None:
    assert shot_of(new_prompt_spec("building_v1", "p")) == "building_v1"
    assert shot_of(upscale_spec("outputs/x/output.mp4")) is None


def test_shot_of_rejects_two_shots() -> None:
    spec = parse_spec(
        {"input_video_path": "inputs/videos/a/color.mp4", "depth": {"input_control": "./inputs/videos/b/depth.mp4"}}
    )
    with pytest.raises(SpecError) as info:
        shot_of(spec)
    assert info.value.field == "depth.input_control"
    assert "'b'" in str(info.value) and "'a'" in str(info.value)


def test_new_prompt_spec_is_the_seed_default_with_seg_fixed() -> None:
    assert new_prompt_spec("shot1", "Cinematic night").to_json_dict() == {
        "prompt": "Cinematic night",
        "input_video_path": "inputs/videos/shot1/color.mp4",
        "vis": {"control_weight": 0.25},
        "edge": {"control_weight": 0.25},
        "depth": {"input_control": "inputs/videos/shot1/depth.mp4", "control_weight": 0.25},
        "seg": {"input_control": "inputs/videos/shot1/segmentation.mp4", "control_weight": 0.25},
    }


def test_new_prompt_spec_weights_override_and_drop() -> None:
    spec = new_prompt_spec("s", "p", weights={"vis": 0.5, "seg": None})
    assert spec.vis == ControlSpec(control_weight=0.5)
    assert spec.seg is None
    with pytest.raises(ValueError):
        new_prompt_spec("s", "p", weights={"lidar": 0.5})
    with pytest.raises(ValueError):
        new_prompt_spec("../etc", "p")


def test_upscale_spec_matches_upstream_example() -> None:
    example = json.loads((DATA_EXAMPLES / "inference_upscaler.json").read_text(encoding="utf-8"))
    built = upscale_spec("assets/inference_upscaler_input_video.mp4")
    assert built.to_json_dict() == example


def test_with_videos_subdir_rewrites_every_shot_path() -> None:
    spec = with_videos_subdir(new_prompt_spec("shot1", "p"), "shot1_v2")
    data = spec.to_json_dict()
    assert data["input_video_path"] == "inputs/videos/shot1_v2/color.mp4"
    assert data["depth"]["input_control"] == "inputs/videos/shot1_v2/depth.mp4"
    assert data["seg"]["input_control"] == "inputs/videos/shot1_v2/segmentation.mp4"
    assert shot_of(spec) == "shot1_v2"


def test_with_videos_subdir_leaves_other_paths() -> None:
    spec = with_videos_subdir(upscale_spec("outputs/p/output.mp4"), "other")
    assert spec.input_video_path == "outputs/p/output.mp4"


# ---------------------------------------------------------------------------------------------------------
# files


def test_write_spec_is_pretty_and_loads_back(tmp_path: Path) -> None:
    spec = new_prompt_spec("s", "p")
    path = tmp_path / "prompts" / "p.json"
    write_spec(spec, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "prompt"')
    assert load_spec(path) == spec
    assert [p.name for p in path.parent.iterdir()] == ["p.json"]  # no temp file left


def test_write_spec_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("old", encoding="utf-8")
    write_spec(upscale_spec("a.mp4"), path)
    assert json.loads(path.read_text(encoding="utf-8"))["upscale"] == {"control_weight": 0.5}


def test_timestamped_name() -> None:
    assert timestamped_name("building_v1", NOW) == "building_v1_20250821_143000"


def test_duplicate_prompt_gets_new_timestamp_and_same_content(tmp_path: Path) -> None:
    source = tmp_path / "building_v1_20250101_000000.json"
    source.write_text('{"edge": {}, "input_video_path": "a.mp4"}', encoding="utf-8")
    copy = duplicate_prompt(source, tmp_path, NOW)
    assert copy.name == "building_v1_20250821_143000.json"
    assert copy.read_bytes() == source.read_bytes()


def test_duplicate_prompt_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "shot_20250101_000000.json"
    source.write_text("{}", encoding="utf-8")
    taken = tmp_path / "shot_20250821_143000.json"
    taken.write_text("keep me", encoding="utf-8")
    first = duplicate_prompt(source, tmp_path, NOW)
    second = duplicate_prompt(first, tmp_path, NOW)
    assert first.name == "shot_20250821_143000_2.json"
    assert second.name == "shot_20250821_143000_3.json"
    assert taken.read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_write_new_prompt_never_overwrites(tmp_path: Path) -> None:
    first = write_new_prompt(new_prompt_spec("s", "a"), tmp_path, "s", NOW)
    second = write_new_prompt(new_prompt_spec("s", "b"), tmp_path, "s", NOW)
    assert (first.name, second.name) == ("s_20250821_143000.json", "s_20250821_143000_2.json")
    assert load_spec(first).prompt == "a"


def test_models_build_in_code_without_defaults() -> None:
    spec = TransferSpec(input_video_path="a.mp4", edge=ControlSpec())
    assert spec.to_json_dict() == {"input_video_path": "a.mp4", "edge": {}}
    assert spec.edge is not None and spec.edge.weight_value() == 0.5


# ---------------------------------------------------------------------------------------------------------
# a prompt file cannot change how the model is invoked, through the real entry points (issue 17)

BATCH_LINE = (
    'batch_input_path = "inputs/batches/other.jsonl": sets batch mode (the prompts it reads) of the '
    "cosmos-transfer1 invocation, which is the project's; remove it; the project batches prompts itself: "
    "run a partition range (docs/batching.md)"
)


def _hostile_project(root: Path) -> Path:
    from tests.project_factory import make_project

    layout = make_project(root)
    data = json.loads(layout.prompt_file("tiny_prompt").read_text()) | {
        "batch_input_path": "inputs/batches/other.jsonl"
    }
    path = layout.prompt_file("hostile")
    path.write_text(json.dumps(data))
    return path


def _entry_env(root: Path) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "COSMOS_PROJECT_ROOT": str(root),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "COSMOS_HOST": "preview",
    }


def test_validate_refuses_batch_input_path_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _hostile_project(tmp_path)
    script = Path(sys.executable).with_name("cosmos-assets")
    done = subprocess.run(
        [str(script), "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_entry_env(tmp_path),
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {path}: {BATCH_LINE}"]


def test_dagster_materialize_of_prompt_specs_refuses_batch_input_path_before_any_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _hostile_project(tmp_path)
    (tmp_path / "dagster_home").mkdir()
    env = _entry_env(tmp_path)
    bin_dir = Path(sys.executable).parent
    registered = subprocess.run(
        [str(bin_dir / "cosmos-assets"), "register"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert registered.returncode == 0, registered.stderr
    done = subprocess.run(
        [
            str(bin_dir / "dagster"),
            "asset",
            "materialize",
            "-m",
            "cosmos_assets.definitions",
            "--select",
            "prompt_specs",
            "--partition",
            "hostile",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert done.returncode != 0
    assert f"{path}: {BATCH_LINE}" in done.stderr
    assert not (tmp_path / "outputs" / "hostile").exists()
