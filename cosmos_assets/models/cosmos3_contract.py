"""Cosmos 3's contract as the prompt file needs it: its name, its hints, the launch settings its block sets, and the
keys a prompt file may not set (derived from ``contract/cosmos3_cli.json`` and ``contract/cosmos3_spec_schema.json``;
docs/upstream/cosmos3.md). Imports no backend and no prompt module, so the prompt file checks these keys without
loading a backend (:mod:`cosmos_assets.models.refused_keys`)."""

from __future__ import annotations

from functools import lru_cache

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
    "diffusion_cache": ("its diffusion cache (a lossy speed-up: it changes the pixels)",
                        "move it into the prompt's block: cosmos_assets.cosmos3.diffusion_cache"),
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
