"""Cosmos-Transfer2.5 and Cosmos 3 backends: argv, the translation table, errors before GPU time, outputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cosmos_assets.machines.job import RunOutcome
from cosmos_assets.models.registry import backend_named
from cosmos_assets.models.translate import CACHE_DIRS, CACHE_ENV
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.prompts.spec import SpecError, TransferSpec, parse_spec

T25, C3 = "cosmos-transfer2.5", "cosmos3"


def seed_spec(**extra: object) -> TransferSpec:
    data = new_prompt_spec("shot_a", "a street").to_json_dict()
    data.update(extra)
    return parse_spec(data, "p1.json")


def outcome(code: int = 0) -> RunOutcome:
    now = datetime.now(UTC)
    return RunOutcome(exit_code=code, command=[], started_at=now, finished_at=now)


# --------------------------------------------------------------------------- Transfer2.5


def test_transfer2_5_writes_its_own_spec_from_the_prompt_file() -> None:
    request = backend_named("transfer2.5").generation("p1", seed_spec(guidance=5.0, sigma_max=80), "r1", 1)
    assert request.spec == {
        "name": "p1",
        "prompt": "a street",
        "video_path": "/workspace/inputs/videos/shot_a/color.mp4",
        "sigma_max": "80",
        "guidance": 5,
        "edge": {"control_weight": 0.25},
        "vis": {"control_weight": 0.25},
        "depth": {"control_path": "/workspace/inputs/videos/shot_a/depth.mp4", "control_weight": 0.25},
        "seg": {"control_path": "/workspace/inputs/videos/shot_a/segmentation.mp4", "control_weight": 0.25},
    }
    assert isinstance(request.spec["sigma_max"], str) and isinstance(request.spec["guidance"], int)


def test_transfer2_5_argv_caches_and_guardrail_switch() -> None:
    inv = backend_named(T25).generation("p1", seed_spec(), "r1", 1).invocation
    assert inv.argv == ("python", "examples/inference.py", "-i", "inputs/prompts/p1.json", "-o", "outputs/p1/r1")
    assert inv.entry_point == "examples/inference.py" and "--num_gpus" not in inv.argv
    assert inv.cache_dirs == CACHE_DIRS and inv.env["HF_HOME"] == CACHE_ENV["HF_HOME"] and "UV_CACHE_DIR" in inv.env
    assert not inv.env["HOME"].startswith("/root")
    off = seed_spec(cosmos_assets={T25: {"disable_guardrails": True}})
    four = backend_named(T25).generation("p1", off, "r1", 4).invocation.argv
    assert four[:3] == ("torchrun", "--nproc_per_node=4", "--master_port=12341") and four[-1] == "--disable-guardrails"
    with pytest.raises(ValueError, match="num_gpus = 3: .*use 1, 2, 4 or 8"):
        backend_named(T25).generation("p1", seed_spec(), "r1", 3)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"depth": {"control_weight": "maps/w.pt"}}, "depth.control_weight", ".pt weight map"),
        (
            {"depth": {"control_weight": 1.5, "input_control": "inputs/videos/shot_a/depth.mp4"}},
            "depth.control_weight",
            "0..1",
        ),
        ({"keypoint": {"control_weight": 0.3}}, "keypoint", "no keypoint control"),
        ({"guidance": 7.5}, "guidance", "whole number 0..7"),
        ({"input_video_path": None}, "input_video_path", "needs the RGB video"),
        ({"cosmos_assets": {T25: {"guidance": "3"}}}, "cosmos_assets.cosmos-transfer2.5.guidance", "integer"),
        ({"cosmos_assets": {T25: {"bogus": 1}}}, "cosmos_assets.cosmos-transfer2.5.bogus", "upstream rejects unknown"),
        ({"cosmos_assets": {T25: {"sigma_max": 80}}}, "cosmos_assets.cosmos-transfer2.5.sigma_max", "string"),
    ],
)
def test_transfer2_5_refuses_what_cannot_be_carried_over(changes: dict, field: str, words: str) -> None:
    data = new_prompt_spec("shot_a", "a street").to_json_dict()
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    if "input_video_path" not in data:
        data["sigma_max"] = 80
        for key in ("vis", "edge"):
            data.pop(key)
    with pytest.raises(SpecError) as error:
        backend_named(T25).generation("p1", parse_spec(data, "p1.json"), "r1", 1)
    assert any(p.field == field for p in error.value.problems), str(error.value)
    assert words in str(error.value) and "inputs/prompts/p1.json" in str(error.value)


def test_transfer2_5_output_is_flat_and_linked_to_output_mp4(tmp_path: Path) -> None:
    backend = backend_named(T25)
    (tmp_path / "p1.json").write_text(json.dumps({"name": "p1"}))  # upstream's resolved sample arguments
    assert backend.guardrail_blocked(outcome(0), tmp_path)  # exit 0, <name>.json, no <name>.mp4
    assert not backend.output_video(tmp_path).exists()
    (tmp_path / "p1.mp4").write_bytes(b"video")
    video = backend.output_video(tmp_path)
    assert video == tmp_path / "output.mp4" and video.read_bytes() == b"video" and (tmp_path / "p1.mp4").exists()
    assert not backend.guardrail_blocked(outcome(0), tmp_path)


def test_transfer2_5_drops_transfer1_only_settings_with_a_warning() -> None:
    warnings = backend_named(T25).prompt_warnings(seed_spec(offload_prompt_upsampler=True, num_video_frames=121))
    assert any(w.startswith("offload_prompt_upsampler: not carried over") for w in warnings)
    assert any(w.startswith("num_video_frames: not carried over") for w in warnings)


# --------------------------------------------------------------------------- Cosmos 3


def test_cosmos3_writes_a_video2video_spec_with_hints() -> None:
    request = backend_named(C3).generation("p1", seed_spec(guidance=3), "r1", 1)
    spec = request.spec
    assert spec["model_mode"] == "video2video" and spec["resolution"] == "720" and spec["name"] == "p1"
    assert spec["vision_path"] == "/workspace/inputs/videos/shot_a/color.mp4" and spec["guidance"] == 3
    assert spec["blur"] == {"weight": 0.25} and "vis" not in spec
    assert spec["depth"] == {"control_path": "/workspace/inputs/videos/shot_a/depth.mp4", "weight": 0.25}
    inv = request.invocation
    assert inv.argv == (
        "python",
        "-m",
        "cosmos_framework.scripts.inference",
        "--parallelism-preset=latency",
        "-i",
        "inputs/prompts/p1.json",
        "-o",
        "outputs/p1/r1",
        "--checkpoint-path",
        "Cosmos3-Nano",
        "--no-diffusion-cache",
    )
    assert inv.entry_point == "cosmos_framework/scripts/inference.py" and inv.guardrail_marker is None
    assert inv.cache_dirs == CACHE_DIRS and inv.cache_free_gb >= 100


def test_cosmos3_size_gpu_counts_and_unverified_warnings() -> None:
    spec = seed_spec(cosmos_assets={C3: {"size": "Super", "guardrails": False}})
    inv = backend_named(C3).generation("p1", spec, "r1", 4).invocation
    assert inv.argv[:2] == ("torchrun", "--nproc-per-node=4") and "Cosmos3-Super" in inv.argv
    assert "--no-guardrails" in inv.argv
    assert any("UNVERIFIED" in w for w in inv.settings["warnings"])
    edge = backend_named(C3).generation("p1", seed_spec(cosmos_assets={C3: {"size": "edge"}}), "r1", 1)
    assert edge.spec["resolution"] == "480" and "Cosmos3-Edge" in edge.invocation.argv
    with pytest.raises(ValueError, match="use 1 or an even count"):
        backend_named(C3).generation("p1", seed_spec(), "r1", 3)


def test_cosmos3_needs_precomputed_depth_and_refuses_unknown_keys() -> None:
    data = new_prompt_spec("shot_a", "a street").to_json_dict()
    data["depth"] = {"control_weight": 0.5}
    with pytest.raises(SpecError, match=r"depth.input_control: Cosmos 3 cannot compute a depth control"):
        backend_named(C3).generation("p1", parse_spec(data, "p1.json"), "r1", 1)
    bad = seed_spec(cosmos_assets={C3: {"blur": {"control_weight": 0.5}}})
    with pytest.raises(SpecError, match=r"cosmos_assets.cosmos3.blur.control_weight"):
        backend_named(C3).generation("p1", bad, "r1", 1)


def test_cosmos3_output_needs_success_status_and_is_never_a_guardrail_block(tmp_path: Path) -> None:
    backend = backend_named(C3)
    sample = tmp_path / "p1"
    sample.mkdir()
    (sample / "vision.mp4").write_bytes(b"video")
    assert not backend.output_video(tmp_path).exists()
    (sample / "sample_outputs.json").write_text(json.dumps({"status": "success"}))
    assert backend.output_video(tmp_path).read_bytes() == b"video" and (tmp_path / "output.mp4").exists()
    assert not backend.guardrail_blocked(outcome(0), tmp_path)


# --------------------------------------------------------------------------- the prompt file's model block


def test_the_model_block_is_validated_and_kept_out_of_transfer1s_spec() -> None:
    spec = seed_spec(cosmos_assets={"model": "transfer2.5", T25: {"guidance": 2}})
    assert spec.model_block().model == T25
    request = backend_named("cosmos-transfer1").generation("p1", spec, "r1", 1)
    assert "cosmos_assets" not in request.spec and "cosmos_assets" in spec.to_json_dict()
    assert backend_named(T25).generation("p1", spec, "r1", 1).spec["guidance"] == 2
    with pytest.raises(SpecError, match=r"cosmos_assets.model = \"t9\": model 't9' is not a backend"):
        seed_spec(cosmos_assets={"model": "t9"})
    with pytest.raises(SpecError, match=r"cosmos_assets.modle = .*did you mean 'model'"):
        seed_spec(cosmos_assets={"modle": "cosmos3"})
