"""``--vary PATH=V1,V2,...``: its values parsed (an escaped comma inside a value), and each variant checked as
``cosmos-assets validate`` and the model it names check it, before :mod:`cosmos_assets.prompts.wedges` writes anything."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.inputs import validate_for_run
from cosmos_assets.prompts.model_block import MODEL_BLOCK
from cosmos_assets.prompts.spec import SpecError, TransferSpec

ALIASES = {"model": f"{MODEL_BLOCK}.model"}
_PATH_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class WedgeError(ValueError):
    """A wedge that cannot be planned or compared; the message names the option, variant or file and the fix."""


class WedgeAxis(BaseModel):
    """One ``--vary PATH=V1,V2,...``: a dotted path into the prompt file and its values, in the order given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    values: list[Any] = Field(min_length=1)


def _parse_value(token: str) -> Any:
    """A JSON number, true/false, or else the text itself (a model name, a prompt word)."""
    try:
        value = json.loads(token)
    except ValueError:
        return token
    if isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity, 1e400: no field takes them
        return token
    return value if isinstance(value, (int, float, bool)) else token


def split_values(text: str) -> list[str]:
    """The values of ``V1,V2,...``: split at each comma but an escaped one (``\\,`` is a comma inside a value,
    ``\\\\`` a backslash; any other backslash is kept as it is), each stripped of surrounding blanks."""
    values, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in ",\\":
            current.append(text[i + 1])
            i += 2
            continue
        if c == ",":
            values.append("".join(current).strip())
            current = []
        else:
            current.append(c)
        i += 1
    values.append("".join(current).strip())
    return values


def parse_vary(option: str) -> WedgeAxis:
    """``PATH=V1,V2,...`` -> an axis; WedgeError naming the option and the fix. A comma inside a value is written
    ``\\,`` (``--vary 'prompt=a city\\, at dusk,a forest'``) and ``\\\\`` is one backslash."""
    path, sep, values_text = option.partition("=")
    path = path.strip()
    example = "e.g. --vary edge.control_weight=0.2,0.5,0.8 or --vary seed=1,2"
    if not sep or not path:
        raise WedgeError(f"--vary {option!r}: give PATH=V1,V2,... ({example})")
    path = ALIASES.get(path, path)
    if not all(_PATH_PART.match(part) for part in path.split(".")):
        raise WedgeError(f"--vary {option!r}: {path!r} is not a dotted field path ({example})")
    tokens = split_values(values_text)
    if not values_text.strip() or any(not t for t in tokens):
        raise WedgeError(
            f"--vary {option!r}: an empty value; list the values separated by commas, and write a "
            f"comma inside a value as \\, ({example})"
        )
    values = [_parse_value(t) for t in tokens]
    if len({json.dumps(v) for v in values}) != len(values):
        raise WedgeError(f"--vary {option!r}: a value is listed twice; list each value once")
    return WedgeAxis(path=path, values=values)


def first_problem(error: SpecError) -> SpecError:
    """``error`` with its first problem only (and how many more): one line naming the variant file and field."""
    if len(error.problems) <= 1:
        return error
    first = error.problems[0]
    more = f" (and {len(error.problems) - 1} more)"
    return SpecError(error.file, [replace(first, message=first.message + more)])


def _problems(spec: TransferSpec, file: Path, root: Path) -> list[str]:
    """What ``cosmos-assets validate`` says of ``spec`` as ``file``, and what the model it names refuses, each without
    the file's name in front (the models' checks already name it; validate's problems are rendered with it)."""

    problems = validate_for_run(spec, file, root)
    model = spec.model_block().model
    if model:
        try:
            backend_named(model).check_prompt(spec, file, root)
        except SpecError as error:
            problems += [problem.render(None) for problem in error.problems]
    return [_without_file(problem, file) for problem in problems]


def _without_file(problem: str, file: Path) -> str:
    prefix = f"{file}: "
    while problem.startswith(prefix):
        problem = problem[len(prefix) :]
    return problem


def base_problems(layout: ProjectLayout, base: TransferSpec, base_file: Path) -> set[str]:
    """What the base prompt itself lacks (control videos not encoded yet): computed once a wedge, not a variant."""
    return set(_problems(base, base_file, layout.root))


def refuse_new_problems(layout: ProjectLayout, known: set[str], variant: TransferSpec, file: Path) -> None:
    """A variant's value that validation refuses (a weight above 1, a field its model cannot take) is refused now,
    before anything is written; what the base prompt itself lacks (``known``, :func:`base_problems`) is not the
    wedge's to refuse, so only the problems the base does not have count."""
    new = [problem for problem in _problems(variant, file, layout.root) if problem not in known]
    if new:
        more = f" (and {len(new) - 1} more)" if len(new) > 1 else ""
        raise WedgeError(f"{file}: {new[0]}{more}; nothing was written: fix that --vary value")


ONE_PER_WEDGE = ("diffusion_cache", "checkpoint_revision")
"""Cosmos 3 settings that change every pixel: a wedge compares its variants under one value of each."""


def refuse_mixed_pixel_settings(specs: dict[str, TransferSpec]) -> None:
    """WedgeError when the variants would run Cosmos 3 with different diffusion cache or checkpoint settings."""
    for key in ONE_PER_WEDGE:
        values = {json.dumps(spec.model_block().settings_for("cosmos3").get(key)) for spec in specs.values()}
        if len(values) > 1:
            raise WedgeError(
                f"the variants would set {MODEL_BLOCK}.cosmos3.{key} to {' and '.join(sorted(values))}: a "
                "wedge compares its variants under one value (it changes every pixel); set it once in "
                "the base prompt file, or make one wedge per value"
            )
