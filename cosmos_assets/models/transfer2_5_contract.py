"""Cosmos-Transfer2.5's contract as the prompt file needs it: its name, its controls, the launch settings its block
sets, and the keys a prompt file may not set (derived from ``contract/transfer2_5_cli.json`` and
``contract/transfer2_5_spec_schema.json``; docs/upstream/transfer2.5.md). Imports no backend and no prompt module, so
the prompt file checks these keys without loading a backend (:mod:`cosmos_assets.models.refused_keys`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool

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

NAME = "cosmos-transfer2.5"
CONTROL_KEYS = ("edge", "vis", "depth", "seg")


def cli_contract() -> dict[str, Any]:
    """examples/inference.py's flags (``contract/transfer2_5_cli.json``)."""
    return contract("transfer2_5_cli.json")


def spec_schema() -> dict[str, Any]:
    """A sample's fields (``contract/transfer2_5_spec_schema.json``)."""
    return contract("transfer2_5_spec_schema.json")


# Which keys belong to the invocation (classify_flags): the launch flags (setup/root groups of cli.json) but the two
# the model block sets, the per-sample flags that take a path, and these, by name. A sample's other fields
# (prompt, seed, guidance, steps, resolution, control weights and presets...) are the prompt's.
SAMPLE_GROUPS = ("overrides",)
SPECIAL_KEYS: dict[str, tuple[str, str]] = {
    "input_files": ("the sample files it reads", PROJECT_SETS),
    "output_dir": ("the output folder", PROJECT_SETS),
    "model": ("which checkpoint loads", "remove it; the checkpoint follows the prompt's controls (a prompt picks "
              "its model with cosmos_assets.model)"),
    "checkpoint_path": ("which checkpoint loads", "remove it; the checkpoint follows the prompt's controls"),
    "context_parallel_size": ("the GPU split", GPU_FIX),
    "keep_going": ("what a guardrail block does to a batch", "remove it; the project keeps upstream's default (a "
                   "blocked sample is skipped, the others go on)"),
    "name": ("the output file names", NAME_FIX),
}  # fmt: skip


@lru_cache(maxsize=1)
def invocation_keys() -> dict[str, InvocationKey]:
    """Every key a prompt file (top level or its ``cosmos-transfer2.5`` block) may not set, from the contract."""
    keys = classify_flags(NAME, cli_flags(cli_contract()), SAMPLE_GROUPS, LAUNCH_KEYS, SPECIAL_KEYS)
    keys["name"] = InvocationKey(NAME, *SPECIAL_KEYS["name"])
    for field in schema_path_fields(spec_schema(), CONTROL_KEYS):
        keys.setdefault(field, InvocationKey(NAME, f"an input path ({field})", INPUT_PATH_FIX))
    return keys


class Launch25(BaseModel):
    """Settings of the launch, from ``cosmos_assets.cosmos-transfer2.5`` in the prompt file."""

    model_config = ConfigDict(extra="forbid")

    disable_guardrails: StrictBool = False  # NVIDIA Open Model License: see docs/models.md before setting it
    offload_guardrail_models: StrictBool = False


LAUNCH_KEYS = tuple(Launch25.model_fields)
