"""What a spec reads, and whether a run can use it: its files, its shot, the run-time rules.

Paths in a spec are relative to the model's root (``/workspace`` in the container); every one is checked to
stay there and to exist before any GPU time is spent. A prompt reads one shot's ``inputs/videos/<shot>/`` folder.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cosmos_assets.models.transfer1_cli import cli_flags
from cosmos_assets.prompts.spec import MIN_SIGMA_MAX_WITHOUT_VIDEO, SIGMA_FIX, SpecError, TransferSpec, parse_spec
from cosmos_assets.prompts.spec_errors import Problem
from cosmos_assets.prompts.spec_values import CONTROL_KEYS, WEIGHT_FIX

VIDEOS_PREFIX = "inputs/videos/"
_SHOT_PATH = re.compile(r"^inputs/videos/([^/]+)/.")


# ---------------------------------------------------------------------------------------------------------
# run-time checks


def spec_paths(spec: TransferSpec) -> Iterator[tuple[str, str]]:
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
    return [path for field, path in spec_paths(spec) if field == "input_video_path" or field.endswith(".input_control")]


def referenced_paths(spec: TransferSpec) -> list[str]:
    """Every file path the spec makes the model read, relative to the cosmos-transfer1 root, each once."""
    return list(dict.fromkeys(path for _, path in spec_paths(spec)))


def path_problem(path: str, repo_root: Path) -> str | None:
    """Why a spec's ``path`` (relative to the model's root) cannot be staged from ``repo_root``; None when it can."""
    if path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
        hint = path.removeprefix("/workspace/") if path.startswith("/workspace/") else "inputs/videos/<shot>/..."
        return f"is absolute; paths are relative to /workspace (the cosmos-transfer1 root): write {hint}"
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        return "leaves the cosmos-transfer1 root through '..'; keep files under it (inputs/videos/<shot>/...)"
    try:
        if not (repo_root / normal).is_file():
            return f"file not found under {repo_root}; create it or fix the path"
        real, root = (repo_root / normal).resolve(), Path(repo_root).resolve()
    except (OSError, RuntimeError) as error:  # a name too long for the file system, a symlink loop
        return f"cannot be read ({error.strerror if isinstance(error, OSError) else error}); fix the path"
    if not real.is_relative_to(root):
        return (
            f"is a symlink to {real}, outside {root}; copy the file into the project "
            "(files that leave the project are never read or uploaded)"
        )
    return None


def sigma_max_problem(spec: TransferSpec, cli_overrides: Mapping[str, Any] | None = None) -> str | None:
    """Why the run's effective sigma_max fails upstream's check, or None. The command line wins over the spec."""
    if spec.has_input_video():
        return None
    overrides = cli_overrides or {}
    effective = overrides.get("sigma_max", spec.sigma_max)
    if effective is None:
        effective = cli_flags()["sigma_max"].default
    return SIGMA_FIX if effective < MIN_SIGMA_MAX_WITHOUT_VIDEO else None


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
    for field, path in spec_paths(spec):
        message = path_problem(path, repo_root)
        if message:
            problems.append(Problem(field, message, path, True))
    for key, control in spec.controls():
        weight = control.weight_value()
        if weight is not None and weight > 1:
            problems.append(
                Problem(f"{key}.control_weight", f"out of range; {WEIGHT_FIX}", control.control_weight, True)
            )
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
    for field, path in spec_paths(spec):
        shot = _shot_in(path)
        if shot is None:
            continue
        if first is None:
            first = (field, shot)
        elif shot != first[1]:
            message = (
                f"uses shot {shot!r} but {first[0]} uses shot {first[1]!r}; a prompt reads one "
                "inputs/videos/<shot>/ folder (use with_videos_subdir to move it)"
            )
            raise SpecError(None, [Problem(field, message, path, True)])
    return first[1] if first else None


def check_shot_name(shot: str) -> str:
    if not shot or shot in (".", "..") or "/" in shot or "\\" in shot or not shot.isprintable():
        raise ValueError(f"shot {shot!r} must be a folder name under inputs/videos/ (no '/', not '.' or '..')")
    return shot


def with_videos_subdir(spec: TransferSpec, subdir: str) -> TransferSpec:
    """The spec reading inputs/videos/<subdir>/ instead of whichever shot folder its paths name."""
    target = f"{VIDEOS_PREFIX}{check_shot_name(subdir)}/"

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
