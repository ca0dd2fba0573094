"""The artist's prompt files (``inputs/prompts/<prompt>.json``): new, duplicated, named, written, checked.

Prompt files are Cosmos-Transfer1 specs (the seed's form); they are never overwritten: a new one claims its
name exclusively, a duplicate gets a new timestamp.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cosmos_assets.files import atomic_write_bytes, create_new, json_bytes, read_bounded, synced_temp_file
from cosmos_assets.prompts.inputs import VIDEOS_PREFIX, check_for_run, check_shot_name, referenced_paths, shot_of
from cosmos_assets.prompts.spec import MAX_SPEC_BYTES, ControlSpec, TransferSpec, load_spec

DEFAULT_SHOT_WEIGHT = 0.25
_TIMESTAMP_SUFFIX = re.compile(r"_\d{8}_\d{6}(_\d+)?$")


def new_prompt_spec(shot: str, prompt_text: str, weights: dict[str, float | None] | None = None) -> TransferSpec:
    """The seed's multimodal spec for a shot: its color video plus vis, edge, depth and seg controls.

    `weights` overrides the 0.25 default per control; a None weight leaves that control out.
    """
    folder = f"{VIDEOS_PREFIX}{check_shot_name(shot)}"
    chosen = {
        "vis": DEFAULT_SHOT_WEIGHT,
        "edge": DEFAULT_SHOT_WEIGHT,
        "depth": DEFAULT_SHOT_WEIGHT,
        "seg": DEFAULT_SHOT_WEIGHT,
    }
    unknown = set(weights or {}) - set(chosen)
    if unknown:
        raise ValueError(f"weights for {sorted(unknown)}: a new prompt has only vis, edge, depth and seg")
    chosen.update(weights or {})
    # depth and seg read the rendered passes; vis and edge are derived from color.mp4 by Cosmos.
    control_videos = {"depth": f"{folder}/depth.mp4", "seg": f"{folder}/segmentation.mp4"}
    controls = {
        key: ControlSpec(
            control_weight=weight, **({"input_control": control_videos[key]} if key in control_videos else {})
        )
        for key, weight in chosen.items()
        if weight is not None
    }
    return TransferSpec(prompt=prompt_text, input_video_path=f"{folder}/color.mp4", **controls)


# ---------------------------------------------------------------------------------------------------------
# files


def _spec_bytes(spec: TransferSpec) -> bytes:
    return json_bytes(spec.to_json_dict())


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
    temp = synced_temp_file(directory, stem, data)
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
    create_new(Path(path), _spec_bytes(spec))


def write_new_prompt(spec: TransferSpec, prompts_dir: Path, base: str, now: datetime) -> Path:
    """Write a new prompt file `<base>_<timestamp>.json` in prompts_dir, never overwriting one."""
    return _claim_new_file(Path(prompts_dir), timestamped_name(base, now), _spec_bytes(spec))


def duplicate_prompt(path: Path, prompts_dir: Path, now: datetime) -> Path:
    """Copy a prompt file under a new timestamp (the seed's `new_prompt.sh --duplicate`), byte for byte."""
    path = Path(path)
    stem = timestamped_name(base_name(path.stem), now)

    return _claim_new_file(Path(prompts_dir), stem, read_bounded(path, MAX_SPEC_BYTES, "the prompt file to duplicate"))


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
    return CheckedPrompt(
        spec=spec, shot=shot, inputs=inputs, data_version=prompt_data_version(path.read_bytes(), inputs)
    )
