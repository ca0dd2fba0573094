"""Wedges: one prompt file per combination of varied values, and the manifest that names them.

``cosmos-assets wedge BASE.json --vary edge.control_weight=0.2,0.5,0.8 --vary seed=1,2`` writes six prompt files,
``inputs/prompts/<wedge>_<NN>_<values>.json`` (the wedge name first, then a zero-padded index in combination order,
so they sort and group together), and the wedge's manifest ``inputs/wedges/<wedge>.json`` naming the base, the axes
and every variant. Nothing is overwritten: the manifest claims the wedge name, each prompt file its own name.

A varied path is a dotted path into the prompt file (``edge.control_weight``, ``seed``, ``sigma_max``); ``model``
is short for ``cosmos_assets.model`` (:mod:`cosmos_assets.prompts.model_block`). Every variant is validated as a prompt file
before anything is written, so a bad value is reported naming the variant, the field and the fix.

Plain Python, no Dagster: the CLI and the wedge sensor share it; the comparison of a wedge's generated clips is
:mod:`cosmos_assets.runs.wedge_comparison`.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from cosmos_assets.files import create_new, json_bytes, read_bounded, sha256_file
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.prompts.files import base_name, write_spec_if_absent
from cosmos_assets.prompts.spec import SpecError, TransferSpec, load_spec, parse_spec
from cosmos_assets.prompts.wedge_vary import (
    ALIASES,
    WedgeAxis,
    WedgeError,
    base_problems,
    first_problem,
    refuse_mixed_pixel_settings,
    refuse_new_problems,
)

MAX_MANIFEST_BYTES = 1024 * 1024
"""A manifest of 36 variants is a few kilobytes: a larger one, a FIFO or a device is refused before it is read."""
MAX_VARIANTS = 36
"""More tiles than this make an unreadable grid (and a long GPU bill): split the wedge."""
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
SLUG_CHARS = 60
WEDGES_SUBDIR = "wedges"
COMPARISON_FOLDER = "_wedges"
"""``outputs/_wedges/<wedge>/``: a prompt name starts with a letter or digit, so no prompt's folder can be this."""


class WedgeVariant(BaseModel):
    """One combination: its prompt (file stem, partition key) and the value of every axis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    values: dict[str, Any]

    def label_lines(self) -> list[str]:
        """``path=value`` per axis, ``model`` shown by its short name; what a tile of the comparison is labelled."""
        return [f"{_short_path(path)}={_value_text(value)}" for path, value in self.values.items()]


class WedgeManifest(BaseModel):
    """``inputs/wedges/<wedge>.json``: what the wedge varied, from which base, and its variants in order."""

    model_config = ConfigDict(extra="forbid")

    name: str
    base_prompt: str
    base_file: str
    base_sha256: str
    axes: list[WedgeAxis]
    variants: list[WedgeVariant]
    created_at: datetime

    @classmethod
    def read(cls, path: Path) -> WedgeManifest:
        try:
            return cls.model_validate_json(read_bounded(Path(path), MAX_MANIFEST_BYTES, "the wedge manifest"))
        except FileNotFoundError:
            raise WedgeError(f"{path}: no such wedge; `cosmos-assets wedge BASE.json --vary ...` makes one") from None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise WedgeError(
                f"{path}: {where}: {first['msg']}; the manifest is written by `cosmos-assets wedge`, "
                "restore it or make the wedge again under a new name"
            ) from None


@dataclass(frozen=True)
class WedgePlan:
    """What ``write_wedge`` will write: the manifest and one spec per variant (already validated)."""

    manifest: WedgeManifest
    specs: dict[str, TransferSpec]


def wedges_dir(layout: ProjectLayout) -> Path:
    return layout.root / "inputs" / WEDGES_SUBDIR


def manifest_path(layout: ProjectLayout, wedge: str) -> Path:
    return wedges_dir(layout) / f"{check_wedge_name(wedge)}.json"


def comparison_dir(layout: ProjectLayout, wedge: str) -> Path:
    return layout.outputs_dir / COMPARISON_FOLDER / check_wedge_name(wedge)


def wedge_names(layout: ProjectLayout) -> list[str]:
    folder = wedges_dir(layout)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith(".") and _PLAIN_NAME.match(p.stem))


def check_wedge_name(name: str) -> str:
    if not _PLAIN_NAME.match(name or ""):
        raise WedgeError(
            f"wedge name {name!r} is not a plain name: use letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )
    return name


# ---------------------------------------------------------------------------------------------------------
# --vary (parsed and checked in prompts/wedge_vary.py)


def _short_path(path: str) -> str:
    return next((alias for alias, full in ALIASES.items() if full == path), path)


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path, making the objects on the way (a control the base lacks is added by its weight)."""
    node = data
    parts = path.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise WedgeError(
                f"--vary {path}: {'.'.join(parts[: i + 1])} is {json.dumps(child)} in the base prompt, "
                "not an object; vary a field that exists or its parent"
            )
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------------------
# planning and writing


def variant_name(wedge: str, index: int, count: int, values: dict[str, Any]) -> str:
    """``<wedge>_<NN>_<path>-<value>_...``: sorts in combination order and groups under the wedge name."""
    width = max(2, len(str(count)))
    slug = "_".join(_SLUG_UNSAFE.sub("-", f"{_short_path(p)}-{_value_text(v)}").strip("-") for p, v in values.items())
    slug = slug[:SLUG_CHARS].rstrip("-_.")
    return f"{wedge}_{index:0{width}d}" + (f"_{slug}" if slug else "")


def default_wedge_name(base_prompt: str, now: datetime) -> str:
    return f"{base_name(base_prompt)}_wedge_{now:%Y%m%d_%H%M%S}"


def plan_wedge(
    layout: ProjectLayout,
    base_path: Path,
    axes: list[WedgeAxis],
    *,
    name: str | None = None,
    now: datetime | None = None,
) -> WedgePlan:
    """Every combination of ``axes`` applied to the base prompt file, named, validated; nothing is written."""
    now = now or datetime.now()
    if not axes:
        raise WedgeError("a wedge needs at least one --vary PATH=V1,V2,...")
    paths = [axis.path for axis in axes]
    if len(set(paths)) != len(paths):
        raise WedgeError(
            f"--vary: {sorted({p for p in paths if paths.count(p) > 1})} given twice; list its values once"
        )
    count = 1
    for axis in axes:
        count *= len(axis.values)
    if count > MAX_VARIANTS:
        raise WedgeError(
            f"{count} combinations: at most {MAX_VARIANTS} fit a readable comparison; vary fewer values "
            "or split the wedge"
        )
    base_path = Path(base_path)
    base = load_spec(base_path)  # SpecError names the base file
    wedge = check_wedge_name(name or default_wedge_name(base_path.stem, now))
    base_data = base.to_json_dict()
    known = base_problems(layout, base, base_path)
    specs: dict[str, TransferSpec] = {}
    variants: list[WedgeVariant] = []
    for index, combo in enumerate(itertools.product(*(axis.values for axis in axes)), start=1):
        values = dict(zip(paths, combo))
        prompt = variant_name(wedge, index, count, values)
        data = json.loads(json.dumps(base_data))
        for path, value in values.items():
            _set_path(data, path, value)
        file = layout.prompt_file(prompt)
        try:
            specs[prompt] = parse_spec(data, str(file))
        except SpecError as error:  # one line: the variant file, its first bad field, the fix
            raise first_problem(error) from None
        refuse_new_problems(layout, known, specs[prompt], file)
        variants.append(WedgeVariant(prompt=prompt, values=values))
    if len(specs) != count:
        raise WedgeError(f"two combinations got the same prompt name in wedge {wedge}: shorten the values")
    refuse_mixed_pixel_settings(specs)
    try:
        base_file = str(base_path.resolve().relative_to(layout.root.resolve()))
    except ValueError:
        base_file = str(base_path.resolve())
    manifest = WedgeManifest(
        name=wedge,
        base_prompt=base_path.stem,
        base_file=base_file,
        base_sha256=sha256_file(base_path),
        axes=axes,
        variants=variants,
        created_at=now,
    )
    return WedgePlan(manifest=manifest, specs=specs)


def write_wedge(layout: ProjectLayout, plan: WedgePlan) -> list[Path]:
    """Write the manifest (claiming the wedge name), then every variant's prompt file; none is ever overwritten."""
    manifest = plan.manifest
    taken = [layout.prompt_file(p) for p in plan.specs if layout.prompt_file(p).exists()]
    if taken:
        raise WedgeError(f"{taken[0]} exists; prompt files are never overwritten: pick another wedge --name")
    try:
        create_new(manifest_path(layout, manifest.name), json_bytes(manifest.model_dump(mode="json")))
    except FileExistsError:
        raise WedgeError(
            f"wedge {manifest.name} exists ({manifest_path(layout, manifest.name)}); pick another --name"
        ) from None
    written = []
    for prompt, spec in plan.specs.items():
        path = layout.prompt_file(prompt)
        try:
            write_spec_if_absent(spec, path)
        except FileExistsError:
            raise WedgeError(f"{path} appeared while the wedge was written; it was left as it is") from None
        written.append(path)
    return written
