"""The host command: transfer.py argv checked against transfer_cli.json, docker argv, quoting, secrets.

(transfer.py's side is :mod:`cosmos_assets.models.transfer1_cli`, docker's :mod:`cosmos_assets.machines.docker`,
secrets and quoting :mod:`cosmos_assets.redaction`.)"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from cosmos_assets.machines.docker import DockerRunSettings, container_name_for, docker_run_argv, secret_env
from cosmos_assets.models.transfer1_cli import ENTRY_POINT, OFFLOAD_FLAGS, TransferInvocation, cli_contract, transfer_argv
from cosmos_assets.redaction import is_secret_name, redacted, shell_join

CONTRACT_COPY = Path(__file__).parents[1] / "cosmos_assets" / "contract" / "transfer_cli.json"
SHARED_CONTRACT = Path(__file__).parents[2] / "shared" / "cosmos-transfer1" / "transfer_cli.json"
TYPES = {"str": str, "int": int, "float": float}


def contract_parser() -> argparse.ArgumentParser:
    """transfer.py's argparse, rebuilt from transfer_cli.json; errors raise instead of exiting."""
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)
    for flag, info in cli_contract()["arguments"].items():
        if info["type"] == "flag":
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=TYPES[info["type"]], choices=info.get("choices"),
                                required=info.get("required", False))  # fmt: skip
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))  # type: ignore[method-assign]
    return parser


def script_args(argv: list[str]) -> list[str]:
    return argv[argv.index(ENTRY_POINT) + 1 :]


def invocation(**overrides: object) -> TransferInvocation:
    fields: dict[str, object] = {"spec_path": "inputs/prompts/p.json", "video_save_folder": "outputs/p/run1"}
    fields.update(overrides)
    return TransferInvocation(**fields)


def settings(**overrides: object) -> DockerRunSettings:
    fields: dict[str, object] = {
        "image": "nvcr.io/me/cosmos-transfer1:latest",
        "container_name": "cosmos-generate-p-1",
        "remote_dir": "/home/ubuntu/NatsFS/cosmos-transfer1",
        "checkpoint_dir_host": "/home/ubuntu/NatsFS/checkpoints",
        "uid": 1000,
        "gid": 1001,
    }
    fields.update(overrides)
    return DockerRunSettings(**fields)


@pytest.mark.skipif(not SHARED_CONTRACT.is_file(), reason=f"shared contract not present at {SHARED_CONTRACT}")
def test_packaged_contract_equals_shared() -> None:
    assert json.loads(CONTRACT_COPY.read_text()) == json.loads(SHARED_CONTRACT.read_text())


# ---------------------------------------------------------------------------------------------------------
# transfer.py argv


def test_one_gpu_uses_python3_with_seed_flags() -> None:
    assert transfer_argv(invocation()) == [
        "python3", ENTRY_POINT,
        "--checkpoint_dir", "./checkpoints",
        "--video_save_folder", "outputs/p/run1",
        "--video_save_name", "output",
        "--controlnet_specs", "inputs/prompts/p.json",
        "--offload_text_encoder_model", "--offload_guardrail_models",
        "--num_gpus", "1",
    ]  # fmt: skip


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
        invocation(offload_diffusion_transformer=True, offload_text_encoder_model=False,
                   extra={"--prompt": "a cup; rm -rf /"}),
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


# ---------------------------------------------------------------------------------------------------------
# docker run


def test_docker_run_argv_shape() -> None:
    inner = transfer_argv(invocation())
    argv = docker_run_argv(settings(), inner)
    assert argv[: argv.index("nvcr.io/me/cosmos-transfer1:latest")] == [
        "docker", "run", "-d",
        "--name", "cosmos-generate-p-1",
        "--gpus", "all",
        "--ipc=host",
        "-u", "1000:1001",
        "-v", "/home/ubuntu/NatsFS/cosmos-transfer1:/workspace",
        "-v", "/home/ubuntu/NatsFS/checkpoints:/workspace/checkpoints",
        "-w", "/workspace",
        "-e", "PYTHONPATH=/workspace",
    ]  # fmt: skip
    assert argv[-len(inner) :] == inner


def test_docker_gpu_device_list_is_csv_quoted() -> None:
    argv = docker_run_argv(settings(gpus=[0, 2]), ["true"])
    assert argv[argv.index("--gpus") + 1] == '"device=0,2"'


def test_docker_host_paths_are_normalised() -> None:
    argv = docker_run_argv(settings(checkpoint_dir_host="/home/u/cosmos-transfer1/../checkpoints"), ["true"])
    assert "/home/u/checkpoints:/workspace/checkpoints" in argv


def test_docker_without_gpus_or_detach_or_user() -> None:
    argv = docker_run_argv(settings(gpus=None, detach=False, uid=None, gid=None, shm_size="16g"), ["true"])
    assert "--gpus" not in argv and "-d" not in argv and "-u" not in argv
    assert "--shm-size=16g" in argv


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"remote_dir": "relative/dir"}, "absolute"),
        ({"remote_dir": "/a:b"}, "separators"),
        ({"container_name": "-bad name"}, "container_name"),
        ({"image": "img --privileged"}, "image"),
        ({"env": {"PYTHONPATH": "/x"}}, "PYTHONPATH"),
        ({"env": {"BAD-NAME": "x"}}, "env name"),
        ({"uid": None, "gid": 5}, "gid without uid"),
    ],
)
def test_bad_docker_settings_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        settings(**overrides)


# ---------------------------------------------------------------------------------------------------------
# quoting and secrets


HOSTILE_PATH = "inputs/prompts/my shot's \"best\" $(touch pwned) `id`;.json"


def test_shell_join_round_trips_hostile_path() -> None:
    argv = transfer_argv(invocation(spec_path=HOSTILE_PATH))
    command = shell_join(argv)
    assert shlex.split(command) == argv


def test_shell_join_does_not_execute_substitutions(tmp_path: Path) -> None:
    argv = ["printf", "%s", HOSTILE_PATH]
    result = subprocess.run(["sh", "-c", shell_join(argv)], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout == HOSTILE_PATH
    assert not (tmp_path / "pwned").exists()


def test_secret_env_never_in_argv() -> None:
    env = {"HF_TOKEN": "hf_supersecret", "MY_API_KEY": "k-secret", "DB_PASSWORD": "pw-secret", "LOG_LEVEL": "info"}
    s = settings(env=env)
    argv = docker_run_argv(s, transfer_argv(invocation()))
    joined = shell_join(argv)
    for value in ("hf_supersecret", "k-secret", "pw-secret"):
        assert value not in joined
    assert argv[argv.index("HF_TOKEN") - 1] == "-e"
    assert "LOG_LEVEL=info" in argv
    assert secret_env(s) == {"HF_TOKEN": "hf_supersecret", "MY_API_KEY": "k-secret", "DB_PASSWORD": "pw-secret"}


@pytest.mark.parametrize(
    "name, secret",
    [
        ("HF_TOKEN", True),
        ("HUGGING_FACE_HUB_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("NGC_API_KEY", True),
        ("SSH_PASSPHRASE", True),
        ("db_password", True),
        ("SSH_KEY_PATH", False),
        ("KEY_FILE", False),
        ("PATH", False),
        ("PYTHONPATH", False),
        ("LOG_LEVEL", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_redacted_env_mapping() -> None:
    assert redacted({"HF_TOKEN": "x", "HOME": "/h"}) == {"HF_TOKEN": "***", "HOME": "/h"}


def test_redacted_argv_and_command_line() -> None:
    argv = ["docker", "run", "-e", "HF_TOKEN=hf_abc", "--env=DB_PASSWORD=pw", "-e", "MODE=fast", "img"]
    assert redacted(argv) == ["docker", "run", "-e", "HF_TOKEN=***", "--env=DB_PASSWORD=***", "-e", "MODE=fast", "img"]
    line = redacted("HF_TOKEN='hf abc' docker run -e MODE=fast img")
    assert shlex.split(line) == ["HF_TOKEN=***", "docker", "run", "-e", "MODE=fast", "img"]


# ---------------------------------------------------------------------------------------------------------
# container names

NAME_RULE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@pytest.mark.parametrize(
    "run_id, key, stage",
    [
        ("3f2a9c1e-7b7d-4c1e-9d2a-1b2c3d4e5f60", "building_v1_20250821_143000", "generate"),
        ("r", "../weird key/with spaces & $(x)", "upscale"),
        ("-", "---", "___"),
        ("0" * 100, "k" * 300, "s" * 50),
    ],
)
def test_container_name_is_valid_short_and_deterministic(run_id: str, key: str, stage: str) -> None:
    name = container_name_for(run_id, key, stage)
    assert NAME_RULE.match(name)
    assert len(name) <= 80
    assert name == container_name_for(run_id, key, stage)


def test_container_names_differ_across_run_key_and_stage() -> None:
    base = ("run-1", "prompt_a", "generate")
    names = {
        container_name_for(*base),
        container_name_for("run-2", "prompt_a", "generate"),
        container_name_for("run-1", "prompt_b", "generate"),
        container_name_for("run-1", "prompt_a", "upscale"),
        container_name_for("run-1", "prompt a", "generate"),  # slugs to "prompt-a"; the digest differs anyway
    }
    assert len(names) == 5
