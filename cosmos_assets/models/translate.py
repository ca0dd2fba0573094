"""What the newer models' backends share: from the artist's prompt file (a Transfer1 spec) to their own spec.

Every problem is collected as a :class:`~cosmos_assets.prompts.spec.Problem` (field, message, value) and raised once as a
:class:`~cosmos_assets.prompts.spec.SpecError` naming the prompt file, before any GPU time; a field that is dropped on
purpose becomes a warning naming it. Paths in the prompt file are relative to the model root (``/workspace`` in
the container); the newer models resolve relative paths against the spec file's folder, so the translated specs
carry absolute container paths.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cosmos_assets.machines.job import relative_inside
from cosmos_assets.prompts.inputs import path_problem, shot_of, spec_paths
from cosmos_assets.prompts.model_block import MODEL_BLOCK
from cosmos_assets.prompts.spec import SpecError, TransferSpec
from cosmos_assets.prompts.spec_errors import Problem

CONTAINER_ROOT = "/workspace"

# The uv-based images download checkpoints into the Hugging Face cache at first use, and run `uv` (uvx hf, uv sync)
# with its own cache. The container runs as a non-root uid, so every HOME-based cache must be a mounted, writable
# folder (not /root/.cache): host folders under the checkpoint folder, shared by Transfer2.5 and Cosmos 3.
CACHE_DIRS: dict[str, str] = {
    "cache/huggingface": "/cache/huggingface",
    "cache/uv": "/cache/uv",
    "cache/home": "/cache/home",
}
CACHE_ENV: dict[str, str] = {
    "HF_HOME": "/cache/huggingface",
    "UV_CACHE_DIR": "/cache/uv",
    "HOME": "/cache/home",
    "XDG_CACHE_HOME": "/cache/home/.cache",
}


@dataclass
class Translation:
    """A model's spec built from a prompt file: the spec, what was dropped (warnings), what cannot be carried over."""

    spec: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, field_name: str | None, message: str, value: Any = None, has_value: bool = False) -> None:
        self.problems.append(Problem(field_name, message, value, has_value))

    def dropped(self, field_name: str, why: str) -> None:
        self.warnings.append(f"{field_name}: not carried over ({why})")

    def raise_if_problems(self, file: str | None) -> None:
        if self.problems:
            raise SpecError(file, self.problems)


def in_container(relative: str) -> str:
    """A prompt-file path (relative to the model root) as the absolute container path the model reads.

    ValueError for a path that is absolute or leaves the model root (check_prompt reports those first, by field).
    """
    return posixpath.join(CONTAINER_ROOT, posixpath.normpath(relative_inside(relative, "spec path")))


def raise_file_problems(spec: TransferSpec, project_root: Path, prompt_path: Path) -> None:
    """SpecError naming the file and field of every input path that is missing or leaves the project."""
    problems = file_problems(spec, project_root)
    if problems:
        raise SpecError(str(prompt_path), problems)


def file_problems(spec: TransferSpec, project_root: Path) -> list[Problem]:
    """Every file the prompt reads exists under the project and stays inside the model root; one shot only."""
    problems = []
    for name, path in spec_paths(spec):
        message = path_problem(path, project_root)
        if message:
            problems.append(Problem(name, message, path, True))
    try:
        shot_of(spec)
    except SpecError as error:
        problems.extend(error.problems)
    return problems


def split_block(spec: TransferSpec, model: str, launch_keys: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The prompt's ``cosmos_assets.<model>`` settings split into launch settings and spec overrides."""
    settings = spec.model_block().settings_for(model)
    keys = set(launch_keys)
    launch = {k: v for k, v in settings.items() if k in keys}
    overrides = {k: v for k, v in settings.items() if k not in keys}
    return launch, overrides


def block_field(model: str, name: str) -> str:
    return f"{MODEL_BLOCK}.{model}.{name}"


def merge_overrides(base: dict[str, Any], overrides: Mapping[str, Any], control_keys: Iterable[str]) -> dict[str, Any]:
    """``base`` with the block's keys on top; a control block given in both is merged key by key."""
    merged = dict(base)
    controls = set(control_keys)
    for key, value in overrides.items():
        if key in controls and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def validate_into(
    model_cls: type[BaseModel],
    data: dict[str, Any],
    result: Translation,
    model: str,
    overrides: Mapping[str, Any],
    field_names: Mapping[str, str],
) -> BaseModel | None:
    """``data`` validated by the model's spec class; each error named by the prompt-file field it came from."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            loc = [str(part) for part in item["loc"]]
            dotted = ".".join(loc)
            if loc and loc[0] in overrides:
                name = block_field(model, dotted)
            else:
                name = field_names.get(dotted, field_names.get(loc[0], dotted) if loc else dotted)
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = f"not a field of {model}'s spec (upstream rejects unknown keys); remove it"
            value = item.get("input")
            result.problem(name or None, f"{message} ({model})", value, not isinstance(value, dict))
        return None


def number_text(value: float | int) -> str:
    """A number as the plain decimal text Transfer2.5's string fields take (80 -> "80", 0.5 -> "0.5")."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)
