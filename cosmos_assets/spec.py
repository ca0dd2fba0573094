"""The Cosmos-Transfer1 spec file (`--controlnet_specs`) as pydantic models.

Loading keeps the file's own values (no defaults are injected), so `to_json_dict()` gives back what was
read. Errors are `SpecError`s naming the file, the field and how to fix it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from cosmos_assets.files import atomic_write_bytes, json_bytes
from cosmos_assets.models.transfer1_cli import ALWAYS_PASSED_FLAGS, cli_flags, flag_value_problem

CONTROL_KEYS: tuple[str, ...] = ("vis", "seg", "edge", "depth", "keypoint", "upscale", "hdmap", "lidar")
CONTROL_FIELDS: tuple[str, ...] = (
    "input_control", "control_weight", "ckpt_path", "input_control_prompt", "control_weight_prompt",
)  # fmt: skip
REGIONAL_PROMPT_FIELDS: tuple[str, ...] = ("prompt", "region_definitions_path", "mask_prompt")
MIN_SIGMA_MAX_WITHOUT_VIDEO = 80
DEFAULT_SHOT_WEIGHT = 0.25
VIDEOS_PREFIX = "inputs/videos/"
_TIMESTAMP_SUFFIX = re.compile(r"_\d{8}_\d{6}(_\d+)?$")
_SHOT_PATH = re.compile(r"^inputs/videos/([^/]+)/.")
_WEIGHT_FIX = "use a number from 0 to 1 or a path to a .pt weight map"
_SIGMA_FIX = (f"without input_video_path sigma_max must be >= {MIN_SIGMA_MAX_WITHOUT_VIDEO} (the video is generated "
              f"from the controls alone): set \"sigma_max\": {MIN_SIGMA_MAX_WITHOUT_VIDEO} or give an input_video_path")


class SpecError(ValueError):
    """A spec that cannot be used. `problems` holds every (field, message); `field` is the first one's."""

    def __init__(self, file: str | None, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        self.field = problems[0].field if problems else None
        super().__init__("\n".join(p.render(file) for p in problems))


@dataclass(frozen=True)
class Problem:
    field: str | None  # dotted path: depth.control_weight, regional_prompts[0].prompt
    message: str
    value: Any = None
    has_value: bool = False

    def render(self, file: str | None) -> str:
        parts = [file] if file else []
        if self.field:
            parts.append(f"{self.field} = {_show(self.value)}" if self.has_value else self.field)
        parts.append(self.message)
        return ": ".join(parts)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------------------
# value validators (one error per field, with our own wording)


def _custom(kind: str, message: str) -> PydanticCustomError:
    # Without a context pydantic leaves the template as written, braces included.
    return PydanticCustomError(kind, message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_weight(value: Any) -> float | int | str:
    if isinstance(value, str):
        if value.endswith(".pt"):
            return value
        try:
            number = float(value)
        except ValueError:
            raise _custom("weight", f"not a number and not a .pt path; {_WEIGHT_FIX}") from None
    elif _is_number(value):
        number = float(value)
    else:
        raise _custom("weight", f"must be a number or a path to a .pt weight map; {_WEIGHT_FIX}")
    if not math.isfinite(number):
        raise _custom("weight", f"must be a finite number; {_WEIGHT_FIX}")
    if number < 0:
        raise _custom("weight", f"weights must be >= 0; {_WEIGHT_FIX}")
    return value


def _check_region(value: Any) -> list[float] | str:
    if isinstance(value, str):
        if not value:
            raise _custom("region", "is empty; give a mask video/.json path or a box [x1, y1, x2, y2] in 0..1")
        return value
    if not isinstance(value, list) or len(value) != 4 or not all(_is_number(v) for v in value):
        raise _custom("region", "must be a mask video/.json path or a box [x1, y1, x2, y2] of 4 numbers in 0..1")
    x1, y1, x2, y2 = value
    if not all(0 <= v <= 1 for v in value):
        raise _custom("region", "box coordinates are fractions of the frame: keep each in 0..1")
    if not (x1 < x2 and y1 < y2):
        raise _custom("region", "box must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2 (otherwise it is empty)")
    return value


def _check_extra(value: Any) -> str | int | float | bool:
    if isinstance(value, dict):
        raise _custom("unknown_control", f"is not a control; only {', '.join(CONTROL_KEYS)} take an object")
    if isinstance(value, list):
        raise _custom("extra_list", "only regional_prompts may be a list; other top-level keys must be scalars")
    if value is None:
        raise _custom("extra_null", "null is not a value transfer.py can use; remove the key or give a value")
    return value


def _check_text(value: Any) -> str:
    if not isinstance(value, str):
        raise _custom("text", "must be text (a JSON string in double quotes)")
    return value


def _check_path_text(value: Any) -> str:
    text = _check_text(value)
    if not text.strip():
        raise _custom("text", "is empty; give a path relative to the cosmos-transfer1 root, or remove the key")
    return text


def _check_number(value: Any) -> int | float:
    if not _is_number(value):
        hint = " (write it without quotes)" if isinstance(value, str) and _parses_as_number(value) else ""
        raise _custom("number", f"must be a number{hint}")
    return value


def _check_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        hint = " (write it without quotes)" if isinstance(value, str) and value.strip().isdigit() else ""
        raise _custom("int", f"must be a whole number{hint}")
    return value


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


Text = Annotated[str, PlainValidator(_check_text)]
PathText = Annotated[str, PlainValidator(_check_path_text)]
Number = Annotated[int | float, PlainValidator(_check_number)]
WholeNumber = Annotated[int, PlainValidator(_check_int)]
Weight = Annotated[float | int | str, PlainValidator(_check_weight)]
Region = Annotated[list[float] | str, PlainValidator(_check_region)]
ExtraScalar = Annotated[str | int | float | bool, PlainValidator(_check_extra)]


def _rules_error(problems: list[tuple[Any, ...]]) -> PydanticCustomError:
    """One pydantic error carrying several (field, message[, value]) problems, expanded by load_spec."""
    summary = "; ".join(f"{p[0]}: {p[1]}" for p in problems)
    return PydanticCustomError("spec_rules", "{summary}", {"summary": summary, "problems": problems})


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
            raise _rules_error([
                ("region_definitions_path", "missing; give a mask video path, a box [x1, y1, x2, y2] in 0..1, "
                 "or a mask_prompt naming what to segment"),
            ])  # fmt: skip
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

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TransferSpec:
        problems = list(self._rule_problems())
        if problems:
            raise _rules_error(problems)
        return self

    def _rule_problems(self) -> Iterator[tuple[Any, ...]]:
        controls = self.controls()
        if not controls:
            yield ("", f"no control; add at least one of {', '.join(CONTROL_KEYS)}, e.g. \"edge\": "
                   "{\"control_weight\": 0.5}")  # fmt: skip
        if not self.has_input_video():
            # An absent sigma_max may still come from the command line (upstream's regional prompt
            # examples rely on that), so only a present one is judged here; see sigma_max_problem.
            if self.sigma_max is not None and self.sigma_max < MIN_SIGMA_MAX_WITHOUT_VIDEO:
                yield ("sigma_max", _SIGMA_FIX, self.sigma_max)
            for key, control in controls:
                if control.input_control is None:
                    yield (f"{key}.input_control", "missing; without input_video_path Cosmos cannot derive the "
                           f"{key} control: give a control video or an input_video_path")  # fmt: skip
        for key, control in controls:
            if control.input_control_prompt is not None and key != "seg":
                yield (f"{key}.input_control_prompt", "only the seg control reads input_control_prompt (objects "
                       "for GroundingDINO+SAM2 to segment); remove it or move it under seg")  # fmt: skip
        for name, value in (self.__pydantic_extra__ or {}).items():
            if name in cli_flags():
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
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)

    def warnings(self) -> list[str]:
        """Things that load but probably do not do what the author meant."""
        found = []
        if not self.has_input_video() and self.sigma_max is None:
            found.append(f"sigma_max: absent and there is no input_video_path; the run needs --sigma_max "
                         f">= {MIN_SIGMA_MAX_WITHOUT_VIDEO} on the command line (upstream's default 70 fails)")
        for key, control in self.controls():
            if control.control_weight_prompt is not None and key != "seg":
                found.append(f"{key}.control_weight_prompt: honoured for seg only; upstream ignores it on {key}")
        for name in self.__pydantic_extra__ or {}:
            if name in ALWAYS_PASSED_FLAGS:
                found.append(f"{name}: ignored, the run command always passes --{name} (the command line wins)")
            elif name not in cli_flags():
                found.append(f"{name}: not a flag of transfer.py; it is passed through unchecked")
        return found


# ---------------------------------------------------------------------------------------------------------
# loading and error conversion


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _allowed_keys(loc: tuple[Any, ...]) -> tuple[str, ...]:
    if loc and loc[0] == "regional_prompts":
        return REGIONAL_PROMPT_FIELDS
    return CONTROL_FIELDS


def _closest(word: str, options: tuple[str, ...]) -> str:
    match = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _problems_from_error(error: dict[str, Any]) -> list[Problem]:
    loc = tuple(error["loc"])
    kind = error["type"]
    field = _field_path(loc)
    value = error.get("input")
    if kind == "spec_rules":
        return [
            Problem(_join(field, rule[0]) or None, rule[1], *((rule[2], True) if len(rule) > 2 else ()))
            for rule in error["ctx"]["problems"]
        ]
    if kind == "missing":
        return [Problem(field, "is required")]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        return [Problem(field, f"unknown key{_closest(str(loc[-1]), allowed)}; allowed here: {', '.join(allowed)}",
                        value, True)]  # fmt: skip
    if kind == "unknown_control":
        message = f"{error['msg']}{_closest(str(loc[-1]), CONTROL_KEYS)}"
        return [Problem(field, message, value, True)]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        example = '{"control_weight": 0.5}' if loc and loc[0] in CONTROL_KEYS else "an object {...}"
        return [Problem(field, f"must be an object, e.g. {example}", value, True)]
    if kind == "list_type":
        return [Problem(field, "must be a list [...]", value, True)]
    return [Problem(field, error["msg"], value, True)]


def _join(prefix: str, sub: str) -> str:
    return f"{prefix}.{sub}" if prefix and sub else prefix or sub


def problems_from_validation_error(exc: ValidationError) -> list[Problem]:
    """Every problem in a pydantic ValidationError raised by these models, in our wording."""
    return [p for error in exc.errors() for p in _problems_from_error(error)]


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


def parse_spec(data: Any, file: str | None = None) -> TransferSpec:
    """A TransferSpec from already-parsed JSON; SpecError (naming `file`) when it is not a valid spec."""
    if not isinstance(data, dict):
        raise SpecError(file, [Problem(None, "the spec must be a JSON object {...} at the top level")])
    try:
        return TransferSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(file, problems_from_validation_error(exc)) from None


def load_spec(path: Path) -> TransferSpec:
    """Read and validate a spec file; every problem is reported in one SpecError."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(file, [Problem(None, "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(file, [Problem(None, f"not UTF-8 text ({exc.reason}); save it as UTF-8")]) from None
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        message = (f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; check for a missing or "
                   "trailing comma, an unclosed quote or brace")  # fmt: skip
        raise SpecError(file, [Problem(None, message)]) from None
    except _DuplicateKey as exc:
        raise SpecError(file, [Problem(exc.key, "appears twice; keep one (only the last would be used)")]) from None
    return parse_spec(data, file)


# ---------------------------------------------------------------------------------------------------------
# run-time checks


def _spec_paths(spec: TransferSpec) -> Iterator[tuple[str, str]]:
    """(field, path) for every file a spec refers to, relative to the cosmos-transfer1 root."""
    if spec.input_video_path:
        yield "input_video_path", spec.input_video_path
    for key, control in spec.controls():
        if control.input_control is not None:
            yield f"{key}.input_control", control.input_control
        if isinstance(control.control_weight, str) and control.control_weight.endswith(".pt"):
            yield f"{key}.control_weight", control.control_weight
    for i, regional in enumerate(spec.regional_prompts or []):
        if isinstance(regional.region_definitions_path, str):
            yield f"regional_prompts[{i}].region_definitions_path", regional.region_definitions_path


def input_videos(spec: TransferSpec) -> list[str]:
    """The videos the model trims to one length: input_video_path first, then each control's input_control."""
    return [path for field, path in _spec_paths(spec) if field == "input_video_path" or field.endswith(".input_control")]


def referenced_paths(spec: TransferSpec) -> list[str]:
    """Every file path the spec makes the model read, relative to the cosmos-transfer1 root, each once."""
    return list(dict.fromkeys(path for _, path in _spec_paths(spec)))


def _path_problem(path: str, repo_root: Path) -> str | None:
    if path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
        hint = path.removeprefix("/workspace/") if path.startswith("/workspace/") else "inputs/videos/<shot>/..."
        return f"is absolute; paths are relative to /workspace (the cosmos-transfer1 root): write {hint}"
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        return "leaves the cosmos-transfer1 root through '..'; keep files under it (inputs/videos/<shot>/...)"
    if not (repo_root / normal).is_file():
        return f"file not found under {repo_root}; create it or fix the path"
    return None


def sigma_max_problem(spec: TransferSpec, cli_overrides: Mapping[str, Any] | None = None) -> str | None:
    """Why the run's effective sigma_max fails upstream's check, or None. The command line wins over the spec."""
    if spec.has_input_video():
        return None
    overrides = cli_overrides or {}
    effective = overrides.get("sigma_max", spec.sigma_max)
    if effective is None:
        effective = cli_flags()["sigma_max"].default
    return _SIGMA_FIX if effective < MIN_SIGMA_MAX_WITHOUT_VIDEO else None


def check_for_run(spec: TransferSpec, spec_path: Path, repo_root: Path) -> None:
    """Raise :class:`SpecError` listing every :func:`validate_for_run` problem (each names file and field)."""
    problems = validate_for_run(spec, spec_path, repo_root)
    if problems:
        raise SpecError(None, [Problem(None, problem) for problem in problems])


def validate_for_run(
    spec: TransferSpec, spec_path: Path, repo_root: Path, cli_overrides: Mapping[str, Any] | None = None
) -> list[str]:
    """Problems that would make a run fail or mislead: missing/absolute/escaping files, weights out of 0..1,
    mixed shots, sigma_max too low without an input video.

    `cli_overrides` are the extra transfer.py flags the run passes (e.g. {"sigma_max": 80}).
    """
    file = str(spec_path)
    problems = []
    sigma = sigma_max_problem(spec, cli_overrides)
    if sigma:
        problems.append(Problem("sigma_max", sigma, spec.sigma_max, spec.sigma_max is not None))
    for field, path in _spec_paths(spec):
        message = _path_problem(path, repo_root)
        if message:
            problems.append(Problem(field, message, path, True))
    for key, control in spec.controls():
        weight = control.weight_value()
        if weight is not None and weight > 1:
            problems.append(Problem(f"{key}.control_weight", f"out of range; {_WEIGHT_FIX}", control.control_weight,
                                    True))  # fmt: skip
    try:
        shot_of(spec)
    except SpecError as exc:
        problems.extend(exc.problems)
    return [p.render(file) for p in problems]


# ---------------------------------------------------------------------------------------------------------
# shots and the project's default specs


def _shot_in(path: str) -> str | None:
    match = _SHOT_PATH.match(posixpath.normpath(path))
    return match.group(1) if match else None


def shot_of(spec: TransferSpec) -> str | None:
    """The shot whose inputs/videos/<shot>/ folder the spec reads; SpecError if it mixes two shots."""
    first: tuple[str, str] | None = None
    for field, path in _spec_paths(spec):
        shot = _shot_in(path)
        if shot is None:
            continue
        if first is None:
            first = (field, shot)
        elif shot != first[1]:
            message = (f"uses shot {shot!r} but {first[0]} uses shot {first[1]!r}; a prompt reads one "
                       "inputs/videos/<shot>/ folder (use with_videos_subdir to move it)")  # fmt: skip
            raise SpecError(None, [Problem(field, message, path, True)])
    return first[1] if first else None


def _check_shot_name(shot: str) -> str:
    if not shot or shot in (".", "..") or "/" in shot or "\\" in shot or not shot.isprintable():
        raise ValueError(f"shot {shot!r} must be a folder name under inputs/videos/ (no '/', not '.' or '..')")
    return shot


def new_prompt_spec(shot: str, prompt_text: str, weights: dict[str, float | None] | None = None) -> TransferSpec:
    """The seed's multimodal spec for a shot: its color video plus vis, edge, depth and seg controls.

    `weights` overrides the 0.25 default per control; a None weight leaves that control out.
    """
    folder = f"{VIDEOS_PREFIX}{_check_shot_name(shot)}"
    chosen = {"vis": DEFAULT_SHOT_WEIGHT, "edge": DEFAULT_SHOT_WEIGHT, "depth": DEFAULT_SHOT_WEIGHT,
              "seg": DEFAULT_SHOT_WEIGHT}  # fmt: skip
    unknown = set(weights or {}) - set(chosen)
    if unknown:
        raise ValueError(f"weights for {sorted(unknown)}: a new prompt has only vis, edge, depth and seg")
    chosen.update(weights or {})
    # depth and seg read the rendered passes; vis and edge are derived from color.mp4 by Cosmos.
    control_videos = {"depth": f"{folder}/depth.mp4", "seg": f"{folder}/segmentation.mp4"}
    controls = {
        key: ControlSpec(control_weight=weight, **({"input_control": control_videos[key]} if key in control_videos
                                                   else {}))
        for key, weight in chosen.items()
        if weight is not None
    }  # fmt: skip
    return TransferSpec(prompt=prompt_text, input_video_path=f"{folder}/color.mp4", **controls)


def upscale_spec(input_video_path: str, control_weight: float = 0.5) -> TransferSpec:
    """The 4K upscaler's spec for a generated video."""
    return TransferSpec(input_video_path=input_video_path, upscale=ControlSpec(control_weight=control_weight))


def with_videos_subdir(spec: TransferSpec, subdir: str) -> TransferSpec:
    """The spec reading inputs/videos/<subdir>/ instead of whichever shot folder its paths name."""
    target = f"{VIDEOS_PREFIX}{_check_shot_name(subdir)}/"

    def rewrite(value: str) -> str:
        normal = posixpath.normpath(value)
        if _shot_in(normal) is None:
            return value
        return target + normal.split("/", 3)[3]

    data = spec.to_json_dict()
    _rewrite_paths(data, rewrite)
    return parse_spec(data)


def _rewrite_paths(data: dict[str, Any], rewrite: Callable[[str], str]) -> None:
    if isinstance(data.get("input_video_path"), str):
        data["input_video_path"] = rewrite(data["input_video_path"])
    for key in CONTROL_KEYS:
        control = data.get(key)
        if not isinstance(control, dict):
            continue
        for field in ("input_control", "control_weight"):
            if isinstance(control.get(field), str):
                control[field] = rewrite(control[field])
    for regional in data.get("regional_prompts") or []:
        if isinstance(regional.get("region_definitions_path"), str):
            regional["region_definitions_path"] = rewrite(regional["region_definitions_path"])


# ---------------------------------------------------------------------------------------------------------
# files


def _spec_bytes(spec: TransferSpec) -> bytes:
    return json_bytes(spec.to_json_dict())


def _temp_file_with(directory: Path, name: str, data: bytes) -> Path:
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(temp)
        raise
    return Path(temp)


def write_spec(spec: TransferSpec, path: Path) -> None:
    """Write the spec as pretty JSON atomically: readers see the old file or the new one, never half."""
    atomic_write_bytes(Path(path), _spec_bytes(spec))


def timestamped_name(base: str, now: datetime) -> str:
    """`<base>_YYYYmmdd_HHMMSS`, the seed's prompt naming."""
    return f"{base}_{now:%Y%m%d_%H%M%S}"


def base_name(stem: str) -> str:
    """A prompt stem without its timestamp (and collision) suffix."""
    return _TIMESTAMP_SUFFIX.sub("", stem)


def _claim_new_file(directory: Path, stem: str, data: bytes) -> Path:
    """Create directory/<stem>.json (or <stem>_2.json, ...) with `data`, never replacing an existing file."""
    directory.mkdir(parents=True, exist_ok=True)
    temp = _temp_file_with(directory, stem, data)
    try:
        for n in range(1, 1000):
            target = directory / (f"{stem}.json" if n == 1 else f"{stem}_{n}.json")
            try:
                # link() fails if the target exists, so two writers can never take the same name.
                os.link(temp, target)
                return target
            except FileExistsError:
                continue
        raise FileExistsError(f"no free name for {stem} in {directory}")
    finally:
        temp.unlink(missing_ok=True)


def write_spec_if_absent(spec: TransferSpec, path: Path) -> None:
    """Write the spec to ``path`` only when no file is there; FileExistsError otherwise (checked and created at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_file_with(path.parent, path.stem, _spec_bytes(spec))
    try:
        os.link(temp, path)  # fails if the target exists: no window between the check and the write
    finally:
        temp.unlink(missing_ok=True)


def write_new_prompt(spec: TransferSpec, prompts_dir: Path, base: str, now: datetime) -> Path:
    """Write a new prompt file `<base>_<timestamp>.json` in prompts_dir, never overwriting one."""
    return _claim_new_file(Path(prompts_dir), timestamped_name(base, now), _spec_bytes(spec))


def duplicate_prompt(path: Path, prompts_dir: Path, now: datetime) -> Path:
    """Copy a prompt file under a new timestamp (the seed's `new_prompt.sh --duplicate`), byte for byte."""
    path = Path(path)
    stem = timestamped_name(base_name(path.stem), now)
    return _claim_new_file(Path(prompts_dir), stem, path.read_bytes())


@dataclass(frozen=True)
class CheckedPrompt:
    """A prompt file that is ready to run: its spec, shot, the files it reads and its data version."""

    spec: TransferSpec
    shot: str | None
    inputs: list[Path]
    data_version: str


def prompt_data_version(spec_bytes: bytes, input_files: list[Path]) -> str:
    """Changes when the spec or any file it points at changes (size and mtime), so downstream shows stale."""
    digest = hashlib.sha256(spec_bytes)
    for path in input_files:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def check_prompt_file(path: Path, repo_root: Path) -> CheckedPrompt:
    """Load and check a prompt file for a run (raises :class:`SpecError` naming file, field and fix)."""
    spec = load_spec(path)
    shot = shot_of(spec)
    check_for_run(spec, path, repo_root)
    inputs = [repo_root / rel for rel in referenced_paths(spec)]
    return CheckedPrompt(spec=spec, shot=shot, inputs=inputs, data_version=prompt_data_version(path.read_bytes(), inputs))
