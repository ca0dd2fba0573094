"""transfer.py's command line (models/transfer1_cli.py), checked against transfer_cli.json: argv, GPUs, flags, paths.

The docker argv around it is tested in tests/machines/test_docker.py, quoting and secrets in tests/test_redaction.py."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from cosmos_assets.models.transfer1_cli import (
    ENTRY_POINT,
    OFFLOAD_FLAGS,
    TransferInvocation,
    cli_contract,
    transfer_argv,
)

CONTRACT_COPY = Path(__file__).parents[2] / "cosmos_assets" / "contract" / "transfer_cli.json"
SHARED_CONTRACT = Path(__file__).parents[3] / "shared" / "cosmos-transfer1" / "transfer_cli.json"
TYPES = {"str": str, "int": int, "float": float}


def contract_parser() -> argparse.ArgumentParser:
    """transfer.py's argparse, rebuilt from transfer_cli.json; errors raise instead of exiting."""
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)
    for flag, info in cli_contract()["arguments"].items():
        if info["type"] == "flag":
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(
                flag, type=TYPES[info["type"]], choices=info.get("choices"), required=info.get("required", False)
            )
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))  # type: ignore[method-assign]
    return parser


def script_args(argv: list[str]) -> list[str]:
    return argv[argv.index(ENTRY_POINT) + 1 :]


def invocation(**overrides: object) -> TransferInvocation:
    fields: dict[str, object] = {"spec_path": "inputs/prompts/p.json", "video_save_folder": "outputs/p/run1"}
    fields.update(overrides)
    return TransferInvocation(**fields)


@pytest.mark.skipif(not SHARED_CONTRACT.is_file(), reason=f"shared contract not present at {SHARED_CONTRACT}")
def test_packaged_contract_equals_shared() -> None:
    assert json.loads(CONTRACT_COPY.read_text()) == json.loads(SHARED_CONTRACT.read_text())


# ---------------------------------------------------------------------------------------------------------
# transfer.py argv


def test_one_gpu_uses_python3_with_seed_flags() -> None:
    assert transfer_argv(invocation()) == [
        "python3",
        ENTRY_POINT,
        "--checkpoint_dir",
        "./checkpoints",
        "--video_save_folder",
        "outputs/p/run1",
        "--video_save_name",
        "output",
        "--controlnet_specs",
        "inputs/prompts/p.json",
        "--offload_text_encoder_model",
        "--offload_guardrail_models",
        "--num_gpus",
        "1",
    ]


@pytest.mark.parametrize("gpus", [2, 4, 8, 16])
def test_several_gpus_use_torchrun(gpus: int) -> None:
    argv = transfer_argv(invocation(num_gpus=gpus))
    assert argv[:5] == ["torchrun", f"--nproc_per_node={gpus}", "--nnodes=1", "--node_rank=0", ENTRY_POINT]
    assert argv[-2:] == ["--num_gpus", str(gpus)]


def test_upsample_prompt_forces_torchrun_on_one_gpu() -> None:
    argv = transfer_argv(invocation(extra={"upsample_prompt": True}))
    assert argv[0] == "torchrun" and "--nproc_per_node=1" in argv
    assert "--upsample_prompt" in argv


def test_upsample_prompt_false_stays_python3() -> None:
    argv = transfer_argv(invocation(extra={"upsample_prompt": False}))
    assert argv[0] == "python3" and "--upsample_prompt" not in argv


@pytest.mark.parametrize("gpus", [0, 3, 5, 6, 12, 32])
def test_gpu_count_must_divide_16(gpus: int) -> None:
    with pytest.raises(ValidationError, match="must divide 16"):
        invocation(num_gpus=gpus)


def test_upscaler_invocation_uses_ten_steps() -> None:
    inv = invocation(num_steps=10, offload_guardrail_models=False, video_save_folder="outputs/p_upscaled/r")
    args = script_args(transfer_argv(inv))
    assert args[args.index("--num_steps") + 1] == "10"
    assert "--offload_guardrail_models" not in args


def test_flags_are_key_space_value_never_key_equals_value() -> None:
    inv = invocation(num_gpus=4, num_steps=10, extra={"guidance": 7.5, "fps": 24, "blur_strength": "low"})
    for arg in script_args(transfer_argv(inv)):
        assert not (arg.startswith("--") and "=" in arg), arg


@pytest.mark.parametrize(
    "inv",
    [
        invocation(),
        invocation(num_gpus=8, num_steps=10),
        invocation(offload_prompt_upsampler=True, extra={"upsample_prompt": True, "seed": 3}),
        invocation(extra={"guidance": 7, "sigma_max": 80.0, "canny_threshold": "very_high", "fps": 30}),
        invocation(
            offload_diffusion_transformer=True, offload_text_encoder_model=False, extra={"--prompt": "a cup; rm -rf /"}
        ),
    ],
    ids=["default", "8gpu", "upsample", "tuning", "dashed-names"],
)
def test_argv_parses_back_with_the_contract(inv: TransferInvocation) -> None:
    args = script_args(transfer_argv(inv))
    parsed = vars(contract_parser().parse_args(args))
    assert parsed["controlnet_specs"] == inv.spec_path
    assert parsed["video_save_folder"] == inv.video_save_folder
    assert parsed["checkpoint_dir"] == inv.checkpoint_dir
    assert parsed["num_gpus"] == inv.num_gpus
    if inv.num_steps is not None:
        assert parsed["num_steps"] == inv.num_steps
    for name in OFFLOAD_FLAGS:
        assert parsed[name] is getattr(inv, name)
    for name, value in inv.extra.items():
        assert parsed[name] == value


def test_every_emitted_flag_is_in_the_contract() -> None:
    known = set(cli_contract()["arguments"])
    inv = invocation(num_gpus=2, num_steps=10, extra={"seed": 5, "use_distilled": True})
    flags = {a for a in script_args(transfer_argv(inv)) if a.startswith("--")}
    assert flags <= known


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"no_such_flag": 1}, "not a flag"),
        ({"seed": "5"}, "takes a whole number"),
        ({"seed": True}, "takes a whole number"),
        ({"guidance": "high"}, "takes a number"),
        ({"blur_strength": "extreme"}, "must be one of"),
        ({"num_input_frames": 2}, "must be one of"),
        ({"upsample_prompt": "yes"}, "true or false"),
        ({"num_gpus": 2}, "field 'num_gpus'"),
        ({"controlnet_specs": "x.json"}, "field 'controlnet_specs'"),
        ({"offload_diffusion_transformer": True}, "field 'offload_diffusion_transformer'"),
        ({"prompt": "--oops"}, "starting with '-'"),
    ],
)
def test_bad_extra_flags_are_rejected(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        invocation(extra=extra)


def test_unknown_invocation_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="offload_everything"):
        invocation(offload_everything=True)


@pytest.mark.parametrize("path", ["/workspace/inputs/prompts/p.json", "../p.json", "a/../../p.json", ""])
def test_spec_path_must_stay_inside_workspace(path: str) -> None:
    with pytest.raises(ValidationError, match="spec_path"):
        invocation(spec_path=path)
