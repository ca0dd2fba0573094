"""Cosmos-Transfer1's command line: the flag contract (``contract/transfer_cli.json``) and transfer.py's argv.

The preview backend has the same command line (it stands in for transfer.py), so both backends build their
argv here. Everything returns argv lists; nothing is pasted into a shell string.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cosmos_assets.models.invocation_keys import GPU_FIX, PROJECT_SETS, InvocationKey, contract

ENTRY_POINT = "cosmos_transfer1/diffusion/inference/transfer.py"
CONTAINER_ROOT = "/workspace"
VALID_GPU_COUNTS = (1, 2, 4, 8, 16)
OFFLOAD_FLAGS = (
    "offload_diffusion_transformer", "offload_text_encoder_model", "offload_guardrail_models",
    "offload_prompt_upsampler",
)  # fmt: skip
# Always on the command line, so a spec's top-level key of the same name never overrides them.
ALWAYS_PASSED_FLAGS = frozenset(
    {"controlnet_specs", "video_save_folder", "video_save_name", "checkpoint_dir", "num_gpus"}
)
# Flags the invocation sets through its own fields; `extra` may not set them a second time.
RESERVED_FLAGS = ALWAYS_PASSED_FLAGS | {"num_steps", *OFFLOAD_FLAGS}

FlagValue = str | int | float | bool

# Which of transfer.py's flags a prompt file may carry. A top-level key of the spec becomes the flag (docs/upstream/transfer1.md#spec-keys-override-flags: spec
# values override the command line's defaults), so a flag that sets the invocation's mode, paths, checkpoints or GPU
# count would change how the project's invocation runs: those are refused (INVOCATION_FLAGS, what each sets and the
# fix); every other flag is a generation setting of the prompt (ITEM_FLAGS). Together they are every flag of
# transfer_cli.json (tests/models/test_invocation_keys.py).
_CHECKPOINT_FIX = "remove it; the project runs (and checks on the host) the 7B checkpoints the prompt's controls need"
_DIAGNOSTIC_FIX = "remove it; the project does not run upstream's diagnostics (their work is repeated or not collected)"
INVOCATION_FLAGS: dict[str, tuple[str, str]] = {
    "controlnet_specs": ("the spec file it reads", PROJECT_SETS),
    "checkpoint_dir": ("the checkpoint folder", PROJECT_SETS),
    "tokenizer_dir": ("the tokenizer's checkpoint folder", PROJECT_SETS),
    "video_save_folder": ("the output folder", PROJECT_SETS),
    "video_save_name": ("the output file name", PROJECT_SETS),
    "batch_input_path": ("batch mode (the prompts it reads)",
                         "remove it; the project batches prompts itself: run a partition range (docs/batching.md)"),
    "batch_size": ("batch mode", "remove it; set batch_size in generated_videos' run config (docs/batching.md)"),
    "num_gpus": ("the GPU count", GPU_FIX),
    "is_av_sample": ("which checkpoint loads (the AV model)", _CHECKPOINT_FIX),
    "use_distilled": ("which checkpoint loads (the distilled model)", _CHECKPOINT_FIX),
    "benchmark": ("a benchmark mode", _DIAGNOSTIC_FIX),
    "save_input_noise": ("a diagnostic dump of the input noise", _DIAGNOSTIC_FIX),
}  # fmt: skip
ITEM_FLAGS: tuple[str, ...] = (
    "prompt", "negative_prompt", "input_video_path", "num_input_frames", "sigma_max", "blur_strength",
    "canny_threshold", "num_steps", "guidance", "fps", "seed", "upsample_prompt", *OFFLOAD_FLAGS,
)  # fmt: skip


def invocation_keys(model: str = "cosmos-transfer1") -> dict[str, InvocationKey]:
    """transfer.py's invocation-level flags as prompt-file keys (the preview has the same command line)."""
    return {name: InvocationKey(model, what, fix) for name, (what, fix) in INVOCATION_FLAGS.items()}


# ---------------------------------------------------------------------------------------------------------
# The CLI contract (transfer_cli.json)


class CliFlag(BaseModel):
    """One argument of transfer.py as listed in transfer_cli.json."""

    model_config = ConfigDict(frozen=True)

    name: str  # without the leading "--"
    type: Literal["str", "int", "float", "flag"]
    default: Any = None
    choices: tuple[Any, ...] | None = None
    required: bool = False


def cli_contract() -> dict[str, Any]:
    """The parsed transfer_cli.json shipped in cosmos_assets/contract/."""
    return contract("transfer_cli.json")


@lru_cache(maxsize=1)
def cli_flags() -> dict[str, CliFlag]:
    """transfer.py's flags by name (no leading dashes)."""
    flags = {}
    for dashed, info in cli_contract()["arguments"].items():
        name = dashed.removeprefix("--")
        choices = info.get("choices")
        flags[name] = CliFlag(
            name=name,
            type=info["type"],
            default=info.get("default"),
            choices=tuple(choices) if choices is not None else None,
            required=bool(info.get("required", False)),
        )
    return flags


def flag_value_problem(name: str, value: Any) -> str | None:
    """Why `value` is not a valid value for transfer.py's `--name`, or None when it is.

    Values are checked as JSON/Python types, not strings: a spec's top-level scalars reach transfer.py's
    args through setattr, bypassing argparse's type conversion, so "7" for an int flag would stay a string.
    """
    flag = cli_flags().get(name)
    if flag is None:
        return f"--{name} is not a flag of {ENTRY_POINT}"
    if flag.type == "flag":
        ok = isinstance(value, bool)
        expected = "true or false (an on/off switch)"
    elif flag.type == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "a whole number"
    elif flag.type == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    else:
        ok = isinstance(value, str)
        expected = "text"
    if not ok:
        return f"--{name} takes {expected}, not {json.dumps(value)}"
    if flag.choices is not None and value not in flag.choices:
        listed = ", ".join(json.dumps(c) for c in flag.choices)
        return f"--{name} must be one of {listed}, not {json.dumps(value)}"
    return None


# ---------------------------------------------------------------------------------------------------------
# transfer.py invocation


def _container_relative(value: str, what: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{what} is empty")
    if value.startswith("/"):
        raise ValueError(
            f"{what} {value!r} is absolute; give it relative to the cosmos-transfer1 root ({CONTAINER_ROOT})"
        )
    normal = posixpath.normpath(value)
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"{what} {value!r} leaves the cosmos-transfer1 root ({CONTAINER_ROOT}) through '..'")
    if value.startswith("-"):
        raise ValueError(f"{what} {value!r} starts with '-', which argparse would read as a flag")
    return value


def _normalise_flag_name(name: str) -> str:
    return name.removeprefix("--")


class TransferInvocation(BaseModel):
    """One run of transfer.py, with paths relative to /workspace (the cosmos-transfer1 root)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec_path: str
    video_save_folder: str
    video_save_name: str = "output"
    checkpoint_dir: str = "./checkpoints"
    num_gpus: int = 1
    # The seed's defaults: text encoder and guardrail offloaded, the rest kept in GPU memory.
    offload_diffusion_transformer: bool = False
    offload_text_encoder_model: bool = True
    offload_guardrail_models: bool = True
    offload_prompt_upsampler: bool = False
    num_steps: int | None = None
    extra: dict[str, FlagValue] = Field(default_factory=dict)

    @field_validator("spec_path")
    @classmethod
    def _spec_path_relative(cls, v: str) -> str:
        return _container_relative(v, "spec_path")

    @field_validator("video_save_folder")
    @classmethod
    def _save_folder_relative(cls, v: str) -> str:
        return _container_relative(v, "video_save_folder")

    @field_validator("checkpoint_dir")
    @classmethod
    def _checkpoint_dir_relative(cls, v: str) -> str:
        return _container_relative(v, "checkpoint_dir")

    @field_validator("video_save_name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or "/" in v or v in (".", "..") or v.startswith("-"):
            raise ValueError(f"video_save_name {v!r} must be a plain file name without '/' (the .mp4 is added)")
        return v

    @field_validator("num_gpus")
    @classmethod
    def _gpus_divide_16(cls, v: int) -> int:
        if v not in VALID_GPU_COUNTS:
            raise ValueError(
                f"num_gpus = {v}: Cosmos-Transfer1 splits the latent time axis across GPUs (context "
                "parallelism), so the GPU count must divide 16; use 1, 2, 4, 8 or 16"
            )
        return v

    @field_validator("num_steps")
    @classmethod
    def _positive_steps(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"num_steps = {v}: use at least 1 (upstream default 35, the 4K upscaler uses 10)")
        return v

    @field_validator("extra", mode="before")
    @classmethod
    def _extra_flags(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v
        out: dict[str, Any] = {}
        for raw_name, value in v.items():
            name = _normalise_flag_name(str(raw_name))
            if name in RESERVED_FLAGS:
                raise ValueError(f"extra --{name}: set it through the TransferInvocation field {name!r} instead")
            problem = flag_value_problem(name, value)
            if problem:
                raise ValueError(f"extra: {problem}")
            if isinstance(value, str) and value.startswith("-"):
                # transfer.py must see "--key value" (docs/upstream/transfer1.md#spec-keys-override-flags), and argparse reads a value starting
                # with "-" as the next flag.
                raise ValueError(f"extra --{name} {value!r}: a value starting with '-' would be read as a flag")
            out[name] = value
        return out

    @property
    def uses_torchrun(self) -> bool:
        # --upsample_prompt reads RANK, which only torchrun sets: plain python3 fails with it.
        return self.num_gpus > 1 or self.extra.get("upsample_prompt") is True


def _format_value(value: FlagValue) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _flag_args(inv: TransferInvocation) -> list[str]:
    args = [
        "--checkpoint_dir",
        inv.checkpoint_dir,
        "--video_save_folder",
        inv.video_save_folder,
        "--video_save_name",
        inv.video_save_name,
        "--controlnet_specs",
        inv.spec_path,
    ]
    if inv.num_steps is not None:
        args += ["--num_steps", str(inv.num_steps)]
    args += [f"--{name}" for name in OFFLOAD_FLAGS if getattr(inv, name)]
    for name, value in inv.extra.items():
        if value is True:
            args.append(f"--{name}")
        elif value is not False:
            args += [f"--{name}", _format_value(value)]
    # Always explicit, even for 1 GPU: a spec's top-level "num_gpus" would otherwise override the default.
    args += ["--num_gpus", str(inv.num_gpus)]
    return args


def transfer_argv(inv: TransferInvocation) -> list[str]:
    """argv of transfer.py run from /workspace: python3 for one GPU, torchrun for several or --upsample_prompt."""
    if inv.uses_torchrun:
        launcher = ["torchrun", f"--nproc_per_node={inv.num_gpus}", "--nnodes=1", "--node_rank=0"]
    else:
        launcher = ["python3"]
    return [*launcher, ENTRY_POINT, *_flag_args(inv)]
