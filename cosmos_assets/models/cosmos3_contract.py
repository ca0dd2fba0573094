"""Cosmos 3's contract: its name, its hints, the launch settings its block sets, the keys a prompt file may not set,
and the spec it accepts (``Spec3``) (derived from ``contract/cosmos3_cli.json`` and ``contract/cosmos3_spec_schema.json``;
docs/upstream/cosmos3.md). Imports no backend and no prompt module, so the prompt file checks these keys without
loading a backend (:mod:`cosmos_assets.models.refused_keys`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from cosmos_assets.models.invocation_keys import (
    GPU_FIX,
    INPUT_PATH_FIX,
    NAME_FIX,
    PROJECT_SETS,
    InvocationKey,
    classify_flags,
    cli_flags,
    contract,
    schema_path_fields,
)

NAME = "cosmos3"
HINT_KEYS = ("edge", "blur", "depth", "seg")


# Which keys belong to the invocation (classify_flags): the launch flags (setup group and -i of cli.json) but those
# the model block sets (guardrails, use_torch_compile, diffusion_cache) and the offload the out-of-memory retry adds,
# the per-sample flags that take a path, and these, by name. A sample's other fields (prompt, seed, guidance,
# control_guidance, shift, steps, resolution, fps, frames, hint weights and presets...) are the prompt's.
LAUNCH_SETTINGS = ("guardrails", "use_torch_compile", "offload_guardrail_models", "diffusion_cache")
# Block settings a prompt file's top level may not carry: the top level is the Transfer1 spec, which Cosmos 3 does not
# read for these, and a setting that changes the pixels is never dropped in silence.
TOP_LEVEL_REFUSED: dict[str, tuple[str, str]] = {
    "diffusion_cache": (
        "its diffusion cache (a lossy speed-up: it changes the pixels)",
        "move it into the prompt's block: cosmos_assets.cosmos3.diffusion_cache",
    ),
}
_SIZE_FIX = "remove it; choose the model with cosmos_assets.cosmos3.size (nano, super or edge)"
SPECIAL_KEYS: dict[str, tuple[str, str]] = {
    "input_files": ("the sample files it reads", PROJECT_SETS),
    "output_dir": ("the output folder", PROJECT_SETS),
    "checkpoint_path": ("which checkpoint loads", _SIZE_FIX),
    "model": ("which model loads", _SIZE_FIX),
    "parallelism_preset": ("the parallelism (transfer needs latency)", PROJECT_SETS),
    **{k: ("the GPU split", GPU_FIX) for k in ("dp_shard_size", "dp_replicate_size", "cp_size", "cfgp_size")},
    "max_num_seqs": ("how many samples run at once (transfer needs 1)", PROJECT_SETS),
    "model_mode": ("the mode (the project runs video2video transfer)", PROJECT_SETS),
    "num_outputs": ("how many outputs a sample writes (its folder holds one)", PROJECT_SETS),
    **{k: (f"an input path ({k})", INPUT_PATH_FIX) for k in ("negative_prompt_file", "action_path", "sound_path")},
    "name": ("the output folder names", NAME_FIX),
}  # fmt: skip


@lru_cache(maxsize=1)
def invocation_keys() -> dict[str, InvocationKey]:
    """Every key a prompt file (top level or its ``cosmos3`` block) may not set, from the contract."""
    cli = contract("cosmos3_cli.json")
    sample_groups = tuple(key for key in cli["arguments"] if not key.startswith("--"))
    keys = classify_flags(NAME, cli_flags(cli), sample_groups, LAUNCH_SETTINGS, SPECIAL_KEYS)
    keys.update({k: InvocationKey(NAME, *SPECIAL_KEYS[k]) for k in ("name", "output_dir")})  # spec-only too
    for field in schema_path_fields(contract("cosmos3_spec_schema.json"), (*HINT_KEYS, "wsm")):
        keys.setdefault(field, InvocationKey(NAME, f"an input path ({field})", INPUT_PATH_FIX))
    return keys


# The transfer part of upstream's sample overrides, as its spec schema has it (contract/cosmos3_spec_schema.json).
Preset = Literal["very_low", "low", "medium", "high", "very_high"]


class Hint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    control_path: StrictStr | None = None
    weight: float = Field(default=1.0, ge=0.0)


class EdgeHint(Hint):
    preset_edge_threshold: Preset | None = None


class BlurHint(Hint):
    preset_blur_strength: Literal["none", "very_low", "low", "medium", "high", "very_high"] | None = None


class Spec3(BaseModel):
    """The transfer part of upstream's sample overrides (extra='forbid' everywhere, as upstream)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    model_mode: Literal["video2video"] = "video2video"
    prompt: StrictStr
    negative_prompt: StrictStr | None = None
    vision_path: StrictStr | None = Field(default=None, pattern=r"\.mp4$")
    resolution: Literal["256", "480", "720"]
    aspect_ratio: Literal["1,1", "4,3", "3,4", "16,9", "9,16"] | None = None
    fps: StrictInt | None = Field(default=None, ge=1)
    num_frames: StrictInt | None = Field(default=None, gt=0)
    max_frames: StrictInt | None = Field(default=None, gt=0)
    num_video_frames_per_chunk: StrictInt | None = Field(default=None, gt=0)
    num_conditional_frames: StrictInt | None = Field(default=None, ge=0)
    num_first_chunk_conditional_frames: StrictInt | None = Field(default=None, ge=0)
    emphasize_control_in_prompt: StrictBool | None = None
    show_control_condition: StrictBool | None = None
    show_input: StrictBool | None = None
    guidance: float | None = Field(default=None, ge=0, le=7)
    control_guidance: float | None = Field(default=None, ge=0, le=10)
    shift: float | None = None
    num_steps: StrictInt | None = Field(default=None, gt=0)
    seed: StrictInt | None = None
    video_save_quality: StrictInt | None = Field(default=None, ge=0, le=10)
    edge: EdgeHint | None = None
    blur: BlurHint | None = None
    depth: Hint | None = None
    seg: Hint | None = None
