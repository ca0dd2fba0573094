"""Keys a prompt file may not carry: they set how a model is invoked (mode, paths, checkpoints, GPUs), not what one
prompt generates.

Each backend classifies its own upstream flags (its ``cli.json``) and spec fields in its contract
(:meth:`cosmos_assets.models.base.ModelBackend.invocation_keys`); this module holds what they share: the record of
one such key, the packaged contracts (:func:`contract`), the flag names of a ``cli.json`` as a prompt file would
spell them, and the check of a mapping.
No imports from the package: :mod:`cosmos_assets.prompts.spec` and :mod:`cosmos_assets.prompts.model_block` use it while loading.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

PROJECT_SETS = "remove it; the project sets it"
INPUT_PATH_FIX = (
    "remove it; the project stages and sets the inputs from the prompt file's own input_video_path "
    "and <control>.input_control"
)
NAME_FIX = "remove it; the project names each sample after its prompt (its file name)"
GPU_FIX = "remove it; the GPU count is the project's: NUM_GPU, or num_gpus in the run config"
LAUNCH_FIX = "remove it; the project sets the launch (docs/models.md lists what the cosmos_assets block may set)"


@cache
def contract(name: str) -> dict[str, Any]:
    """A contract shipped in ``cosmos_assets/contract/`` (upstream's flags or spec schema), parsed once a process.
    Shared: read it, never change it."""
    return json.loads(resources.files("cosmos_assets").joinpath(f"contract/{name}").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class InvocationKey:
    """One key that belongs to the invocation: which model's, what it sets, and the fix."""

    model: str
    what: str
    fix: str = PROJECT_SETS

    def message(self) -> str:
        return f"sets {self.what} of the {self.model} invocation, which is the project's; {self.fix}"


def json_key(flag: str) -> str:
    """A long flag as a JSON key: ``--context-parallel-size`` -> ``context_parallel_size``."""
    return flag.strip().split()[0].removeprefix("--").replace("-", "_")


def cli_flags(cli: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every long flag of a ``cli.json`` (``arguments``, nested tables such as Cosmos 3's sample overrides, comma
    lists, lists of flag names) by its JSON key, with its info (``group`` inherited from a nested table's name)."""
    found: dict[str, dict[str, Any]] = {}

    def add(spelled: str, info: dict[str, Any]) -> None:
        for part in spelled.split(","):
            if part.strip().startswith("--"):
                found.setdefault(json_key(part), info)

    for flag, info in cli["arguments"].items():
        if flag.startswith("--"):
            add(flag, info)
        elif isinstance(info, dict):
            for sub, sub_info in info.items():
                if isinstance(sub_info, list):
                    for spelled in sub_info:
                        add(spelled, {"group": flag, "type": "", "listed_under": sub})
                else:
                    add(sub, {"group": flag, **sub_info})
    return found


def invocation_problems(
    data: Mapping[str, Any], keys: Mapping[str, InvocationKey], prefix: str = ""
) -> Iterator[tuple[str, str, Any]]:
    """(field, message, value) for every key of ``data`` (and ``<block>.<key>`` one level down) in ``keys``."""
    for key, value in data.items():
        found = keys.get(key)
        if found is not None:
            yield f"{prefix}{key}", found.message(), value
        elif isinstance(value, Mapping):
            for sub, sub_value in value.items():
                found = keys.get(f"{key}.{sub}")
                if found is not None:
                    yield f"{prefix}{key}.{sub}", found.message(), sub_value


def schema_path_fields(schema: Mapping[str, Any], blocks: tuple[str, ...]) -> list[str]:
    """The path fields of a ``spec_schema.json`` (``x-path``): top-level ones, and ``<block>.<field>`` for a path
    field of any ``$defs`` entry (the control blocks)."""
    top = [name for name, info in schema.get("properties", {}).items() if "x-path" in info]
    nested = sorted(
        {
            name
            for entry in schema.get("$defs", {}).values()
            for name, info in entry.get("properties", {}).items()
            if "x-path" in info
        }
    )
    return top + [f"{block}.{name}" for block in blocks for name in nested]


def classify_flags(
    model: str,
    flags: Mapping[str, Mapping[str, Any]],
    sample_groups: tuple[str, ...],
    launch_settings: tuple[str, ...],
    special: Mapping[str, tuple[str, str]],
) -> dict[str, InvocationKey]:
    """A model's invocation-level flags, derived from its ``cli.json``: every flag outside the per-sample groups
    (setup, root: the launch) except the ``launch_settings`` the project passes from the prompt's model block, and
    every per-sample flag that takes a path; ``special`` names the rest (what it sets, the fix) and overrides the
    wording of any."""
    keys: dict[str, InvocationKey] = {}
    for name, info in flags.items():
        per_sample = info.get("group") in sample_groups
        if name in special:
            keys[name] = InvocationKey(model, *special[name])
        elif not per_sample and name not in launch_settings:
            keys[name] = InvocationKey(model, f"its launch (--{name.replace('_', '-')})", LAUNCH_FIX)
        elif per_sample and str(info.get("type", "")).startswith("path"):
            keys[name] = InvocationKey(model, f"an input path ({name})", INPUT_PATH_FIX)
    return keys
