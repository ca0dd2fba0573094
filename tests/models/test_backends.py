"""The model backends: what each asks a machine to run, Dagster-free."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmos_assets.models.preview import PROGRAM_LOCAL, PROGRAM_REMOTE
from cosmos_assets.models.registry import backend_named, backends
from cosmos_assets.models.transfer1 import ALWAYS_NEEDED, CONTROL_CHECKPOINTS, DERIVED_CONTROL_MODELS, GUARDRAIL_MARKER
from cosmos_assets.models.transfer1_cli import ENTRY_POINT
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.prompts.spec import ControlSpec, TransferSpec


def test_backends_by_name_and_a_clear_error_for_an_unknown_one() -> None:
    assert set(backends()) == {"preview", "cosmos-transfer1", "cosmos-transfer2.5", "cosmos3"}
    assert backend_named(" Cosmos-Transfer1 ").name == "cosmos-transfer1"
    assert (
        backend_named("transfer1").name == "cosmos-transfer1"
        and backend_named("transfer2.5").name == "cosmos-transfer2.5"
    )
    with pytest.raises(
        ValueError,
        match=r"'transfer9' is not a backend here: use one of preview, cosmos-transfer1, "
        r"cosmos-transfer2.5, cosmos3",
    ):
        backend_named("transfer9")


def test_the_preview_says_everywhere_that_it_is_not_the_model() -> None:
    preview, model = backend_named("preview"), backend_named("cosmos-transfer1")
    assert preview.is_preview and "not the model" in preview.label
    assert not model.is_preview and model.label == "cosmos-transfer1"


def test_transfer1_generation_runs_transfer_py_with_the_checkpoints_its_controls_need() -> None:
    spec = new_prompt_spec("shot_a", "a street")  # vis, edge (derived from color), depth and seg (given videos)
    request = backend_named("cosmos-transfer1").generation("p1", spec, "20260101_000000_abcd1234", num_gpus=1)
    inv = request.invocation
    assert request.spec_remote == "inputs/prompts/p1.json" and request.spec == spec.to_json_dict()
    assert inv.argv[:2] == ("python3", ENTRY_POINT) and inv.entry_point == ENTRY_POINT
    assert inv.output_folder == "outputs/p1/20260101_000000_abcd1234"
    assert inv.needs_gpu and inv.guardrail_marker == GUARDRAIL_MARKER and request.program_files == []
    for needed in (*ALWAYS_NEEDED, *CONTROL_CHECKPOINTS["edge"], *CONTROL_CHECKPOINTS["seg"]):
        assert needed in inv.checkpoints
    # depth and seg read the rendered passes, so Cosmos derives neither: no depth/segmentation models needed
    assert not set(DERIVED_CONTROL_MODELS["depth"] + DERIVED_CONTROL_MODELS["seg"]) & set(inv.checkpoints)
    assert "hdmap" not in " ".join(inv.checkpoints)


def test_transfer1_several_gpus_launch_torchrun() -> None:
    spec = new_prompt_spec("shot_a", "a street")
    inv = backend_named("cosmos-transfer1").generation("p1", spec, "r1", num_gpus=4).invocation
    assert inv.argv[0] == "torchrun" and "--nproc_per_node=4" in inv.argv and inv.num_gpus == 4


def test_upscale_is_transfer1s_4k_upscaler_with_ten_steps() -> None:
    request = backend_named("cosmos-transfer1").upscale("p1", "outputs/p1/r0/output.mp4", "r1", 1, 0.7)
    assert request.spec == {"input_video_path": "outputs/p1/r0/output.mp4", "upscale": {"control_weight": 0.7}}
    argv = list(request.invocation.argv)
    assert argv[argv.index("--num_steps") + 1] == "10"
    assert request.invocation.output_folder == "outputs/p1_upscaled/r1"
    assert any(c.endswith("4kupscaler_control.pt") for c in request.invocation.checkpoints)


def test_the_preview_runs_its_own_staged_program_with_transfer1s_flags_and_no_gpu() -> None:
    spec = new_prompt_spec("shot_a", "a street")
    model = backend_named("cosmos-transfer1").generation("p1", spec, "r1", num_gpus=2)
    preview = backend_named("preview").generation("p1", spec, "r1", num_gpus=2)
    inv = preview.invocation
    assert inv.argv[:2] == ("python3", PROGRAM_REMOTE) and inv.entry_point == PROGRAM_REMOTE
    flags = list(model.invocation.argv)
    assert list(inv.argv[2:]) == flags[flags.index(ENTRY_POINT) + 1 :]  # the same command line as transfer.py
    assert not inv.needs_gpu and inv.checkpoints == ()
    assert inv.env == {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}  # the one process stands in for rank 0
    assert [(f.local, f.remote) for f in preview.program_files] == [(PROGRAM_LOCAL, PROGRAM_REMOTE)]
    assert PROGRAM_LOCAL.is_file()


def test_prompt_checks_name_the_file_and_field(tmp_path: Path) -> None:
    from cosmos_assets.prompts.spec import SpecError

    spec = TransferSpec(prompt="x", input_video_path="inputs/videos/s/color.mp4", edge=ControlSpec(control_weight=0.5))
    with pytest.raises(SpecError, match=r"p\.json.*input_video_path.*file not found"):
        backend_named("cosmos-transfer1").check_prompt(spec, tmp_path / "p.json", tmp_path)
