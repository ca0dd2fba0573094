"""The Cosmos-Transfer1 spec file (`--controlnet_specs`) as pydantic models: the form of the artist's prompt files.

What a spec reads and whether a run can use it is :mod:`cosmos_assets.prompts.inputs`; making and naming prompt
files is :mod:`cosmos_assets.prompts.files`.

Loading keeps the file's own values (no defaults are injected), so `to_json_dict()` gives back what was
read. Errors are `SpecError`s naming the file, the field and how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from cosmos_assets.files import UnsafeReadError, read_bounded
from cosmos_assets.models.invocation_keys import invocation_problems
from cosmos_assets.models.refused_keys import prompt_file_invocation_keys
from cosmos_assets.models.transfer1_cli import cli_flags, flag_value_problem
from cosmos_assets.prompts.model_block import MODEL_BLOCK, ModelBlock, block_invocation_problems
from cosmos_assets.prompts.spec_errors import Problem, join_field, problems_from_validation_error, rules_error
from cosmos_assets.prompts.spec_values import (
    CONTROL_KEYS,
    ExtraScalar,
    Number,
    PathText,
    Region,
    Text,
    Weight,
    WholeNumber,
)

MIN_SIGMA_MAX_WITHOUT_VIDEO = 80
SIGMA_FIX = (
    f"without input_video_path sigma_max must be >= {MIN_SIGMA_MAX_WITHOUT_VIDEO} (the video is generated "
    f'from the controls alone): set "sigma_max": {MIN_SIGMA_MAX_WITHOUT_VIDEO} or give an input_video_path'
)


class SpecError(ValueError):
    """A spec that cannot be used. `problems` holds every (field, message); `field` is the first one's."""

    def __init__(self, file: str | None, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        self.field = problems[0].field if problems else None
        super().__init__("\n".join(p.render(file) for p in problems))


# ---------------------------------------------------------------------------------------------------------
# models


class ControlSpec(BaseModel):
    """One control (vis, seg, edge, ...). Absent control_weight means 0.5 at run time."""

    model_config = ConfigDict(extra="forbid")

    input_control: PathText | None = None
    control_weight: Weight | None = None
    ckpt_path: PathText | None = None
    input_control_prompt: Text | None = None
    control_weight_prompt: Text | None = None

    def weight_value(self) -> float | None:
        """The numeric weight (0.5 when absent), or None when the weight is a .pt weight map."""
        if self.control_weight is None:
            return 0.5
        if isinstance(self.control_weight, str) and self.control_weight.endswith(".pt"):
            return None
        return float(self.control_weight)


class RegionalPrompt(BaseModel):
    """A prompt for part of the frame: a mask video/.json, a normalised box, or a mask_prompt to segment."""

    model_config = ConfigDict(extra="forbid")

    prompt: Text
    region_definitions_path: Region | None = None
    mask_prompt: Text | None = None

    @model_validator(mode="after")
    def _has_region(self) -> RegionalPrompt:
        if self.region_definitions_path is None and self.mask_prompt is None:
            raise rules_error(
                [
                    (
                        "region_definitions_path",
                        "missing; give a mask video path, a box [x1, y1, x2, y2] in 0..1, "
                        "or a mask_prompt naming what to segment",
                    ),
                ]
            )
        return self


class TransferSpec(BaseModel):
    """A whole spec file. Unknown top-level scalars are kept: upstream turns them into CLI arguments."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, ExtraScalar]

    prompt: Text | None = None
    negative_prompt: Text | None = None
    input_video_path: Text | None = None
    sigma_max: Number | None = None
    seed: WholeNumber | None = None
    num_video_frames: WholeNumber | None = None
    vis: ControlSpec | None = None
    seg: ControlSpec | None = None
    edge: ControlSpec | None = None
    depth: ControlSpec | None = None
    keypoint: ControlSpec | None = None
    upscale: ControlSpec | None = None
    hdmap: ControlSpec | None = None
    lidar: ControlSpec | None = None
    regional_prompts: list[RegionalPrompt] | None = None
    cosmos_assets: ModelBlock | None = None  # not Transfer1's: see ModelBlock and model_spec_dict()

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TransferSpec:
        problems = list(self._rule_problems())
        if problems:
            raise rules_error(problems)
        return self

    def _rule_problems(self) -> Iterator[tuple[Any, ...]]:
        controls = self.controls()
        if not controls:
            yield (
                "",
                f'no control; add at least one of {", ".join(CONTROL_KEYS)}, e.g. "edge": {{"control_weight": 0.5}}',
            )
        if not self.has_input_video():
            # An absent sigma_max may still come from the command line (upstream's regional prompt
            # examples rely on that), so only a present one is judged here; see sigma_max_problem.
            if self.sigma_max is not None and self.sigma_max < MIN_SIGMA_MAX_WITHOUT_VIDEO:
                yield ("sigma_max", SIGMA_FIX, self.sigma_max)
            for key, control in controls:
                if control.input_control is None:
                    yield (
                        f"{key}.input_control",
                        "missing; without input_video_path Cosmos cannot derive the "
                        f"{key} control: give a control video or an input_video_path",
                    )
        for key, control in controls:
            if control.input_control_prompt is not None and key != "seg":
                yield (
                    f"{key}.input_control_prompt",
                    "only the seg control reads input_control_prompt (objects "
                    "for GroundingDINO+SAM2 to segment); remove it or move it under seg",
                )
        refused = prompt_file_invocation_keys()
        yield from invocation_problems(self.__pydantic_extra__ or {}, refused)
        for name, value in (self.__pydantic_extra__ or {}).items():
            if name in cli_flags() and name not in refused:
                problem = flag_value_problem(name, value)
                if problem:
                    yield (name, f"{problem} (top-level keys are set on transfer.py's arguments as-is)", value)

    def controls(self) -> list[tuple[str, ControlSpec]]:
        """(key, control) for the controls present, in upstream's key order."""
        return [(key, getattr(self, key)) for key in CONTROL_KEYS if getattr(self, key) is not None]

    def has_input_video(self) -> bool:
        return bool(self.input_video_path)

    def to_json_dict(self) -> dict[str, Any]:
        """The spec as the JSON object it came from: only keys that were given, no defaults."""
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True, by_alias=True)

    def model_spec_dict(self) -> dict[str, Any]:
        """The spec as a model reads it: :meth:`to_json_dict` without the ``cosmos_assets`` block."""
        data = self.to_json_dict()
        data.pop(MODEL_BLOCK, None)
        return data

    def model_block(self) -> ModelBlock:
        """The ``cosmos_assets`` block, empty when the prompt file has none."""
        return self.cosmos_assets or ModelBlock()

    def warnings(self) -> list[str]:
        """Things that load but probably do not do what the author meant."""
        found = []
        if not self.has_input_video() and self.sigma_max is None:
            found.append(
                f"sigma_max: absent and there is no input_video_path; the run needs --sigma_max "
                f">= {MIN_SIGMA_MAX_WITHOUT_VIDEO} on the command line (upstream's default 70 fails)"
            )
        for key, control in self.controls():
            if control.control_weight_prompt is not None and key != "seg":
                found.append(f"{key}.control_weight_prompt: honoured for seg only; upstream ignores it on {key}")
        for name in self.__pydantic_extra__ or {}:
            if name not in cli_flags():
                found.append(f"{name}: not a flag of transfer.py; it is passed through unchecked")
        return found


# ---------------------------------------------------------------------------------------------------------
# loading and error conversion


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            # Upstream's json.load silently keeps the last one, which hides edits made to the first.
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unencodable_field(data: Any) -> str | None:
    """The first field holding a lone surrogate (JSON's "\\ud800" escapes decode to one): no file can hold it."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        field, value = stack.pop()
        items: list[tuple[str, Any]] = []
        if isinstance(value, dict):
            items = [(join_field(field, str(k)), v) for k, v in value.items()]
            texts = [str(k) for k in value]
        elif isinstance(value, list):
            items = [(f"{field}[{i}]", v) for i, v in enumerate(value)]
            texts = []
        else:
            texts = [value] if isinstance(value, str) else []
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return field or "(top level)"
        stack.extend(reversed(items))
    return None


def parse_spec(data: Any, file: str | None = None) -> TransferSpec:
    """A TransferSpec from already-parsed JSON; SpecError (naming `file`) when it is not a valid spec."""
    if not isinstance(data, dict):
        raise SpecError(file, [Problem(None, "the spec must be a JSON object {...} at the top level")])
    bad = _unencodable_field(data)
    if bad is not None:
        raise SpecError(
            file, [Problem(bad, "holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text; remove it")]
        )
    try:
        return TransferSpec.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation_error(exc)
        named = {p.field for p in problems}  # the validators stop at the first failing part: name every such key
        raise SpecError(file, problems + [p for p in _invocation_key_problems(data) if p.field not in named]) from None


def _invocation_key_problems(data: dict[str, Any]) -> list[Problem]:
    """Every key of a prompt file (top level, and each model's block) that sets how a model is invoked."""
    top = {k: v for k, v in data.items() if k != MODEL_BLOCK and not isinstance(v, (dict, list))}
    found = [
        Problem(field, message, value, True)
        for field, message, value in invocation_problems(top, prompt_file_invocation_keys())
    ]
    block = data.get(MODEL_BLOCK)
    if isinstance(block, dict):
        found += [
            Problem(f"{MODEL_BLOCK}.{field}", message, value, True)
            for field, message, value in block_invocation_problems(block)
        ]
    return found


MAX_SPEC_BYTES = 1024 * 1024
"""A prompt file is a few kilobytes: a larger one, a FIFO or a device is refused before it is read."""


def load_spec(path: Path) -> TransferSpec:
    """Read and validate a spec file; every problem is reported in one SpecError."""

    file = str(path)
    try:
        text = read_bounded(Path(path), MAX_SPEC_BYTES, "the prompt file").decode("utf-8")
    except FileNotFoundError:
        raise SpecError(file, [Problem(None, "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(file, [Problem(None, f"not UTF-8 text ({exc.reason}); save it as UTF-8")]) from None
    except UnsafeReadError as exc:  # a FIFO, a device, a file far larger than a prompt
        raise SpecError(file, [Problem(None, exc.detail)]) from None
    except OSError as exc:  # a folder, no permission, a name too long
        raise SpecError(
            file, [Problem(None, f"cannot be read ({exc.strerror or exc}); check the path and its permissions")]
        ) from None
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except RecursionError:
        raise SpecError(file, [Problem(None, "JSON nested too deeply to be a spec; check the file")]) from None
    except json.JSONDecodeError as exc:
        message = (
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; check for a missing or "
            "trailing comma, an unclosed quote or brace"
        )
        raise SpecError(file, [Problem(None, message)]) from None
    except _DuplicateKey as exc:
        raise SpecError(file, [Problem(exc.key, "appears twice; keep one (only the last would be used)")]) from None
    return parse_spec(data, file)
