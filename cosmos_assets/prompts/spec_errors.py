"""A prompt file's problems in our wording: each a :class:`Problem` (field, message, value), one line each, from
pydantic's errors (an unknown key names the closest allowed one; a control that is not an object shows one)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from cosmos_assets.prompts.model_block import MODEL_BLOCK, MODEL_BLOCK_FIELDS
from cosmos_assets.prompts.spec_values import CONTROL_FIELDS, CONTROL_KEYS, REGIONAL_PROMPT_FIELDS


@dataclass(frozen=True)
class Problem:
    field: str | None  # dotted path: depth.control_weight, regional_prompts[0].prompt
    message: str
    value: Any = None
    has_value: bool = False

    def render(self, file: str | None) -> str:
        # A file name with a line break (or bytes that are not UTF-8) is shown escaped: one problem, one line.
        parts = [file if file.isprintable() else repr(file)[1:-1]] if file else []
        if self.field:
            parts.append(f"{self.field} = {_show(self.value)}" if self.has_value else self.field)
        parts.append(self.message)
        return ": ".join(parts)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def rules_error(problems: list[tuple[Any, ...]]) -> PydanticCustomError:
    """One pydantic error carrying several (field, message[, value]) problems, expanded by load_spec."""
    summary = "; ".join(f"{p[0]}: {p[1]}" for p in problems)
    return PydanticCustomError("spec_rules", "{summary}", {"summary": summary, "problems": problems})


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _allowed_keys(loc: tuple[Any, ...]) -> tuple[str, ...]:
    if loc and loc[0] == MODEL_BLOCK:
        return MODEL_BLOCK_FIELDS
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
            Problem(join_field(field, rule[0]) or None, rule[1], *((rule[2], True) if len(rule) > 2 else ()))
            for rule in error["ctx"]["problems"]
        ]
    if kind == "missing":
        return [Problem(field, "is required")]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        return [
            Problem(
                field, f"unknown key{_closest(str(loc[-1]), allowed)}; allowed here: {', '.join(allowed)}", value, True
            )
        ]
    if kind == "unknown_control":
        message = f"{error['msg']}{_closest(str(loc[-1]), CONTROL_KEYS)}"
        return [Problem(field, message, value, True)]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        example = '{"control_weight": 0.5}' if loc and loc[0] in CONTROL_KEYS else "an object {...}"
        return [Problem(field, f"must be an object, e.g. {example}", value, True)]
    if kind == "list_type":
        return [Problem(field, "must be a list [...]", value, True)]
    return [Problem(field, error["msg"], value, True)]


def join_field(prefix: str, sub: str) -> str:
    return f"{prefix}.{sub}" if prefix and sub else prefix or sub


def problems_from_validation_error(exc: ValidationError) -> list[Problem]:
    """Every problem in a pydantic ValidationError raised by these models, in our wording."""
    return [p for error in exc.errors() for p in _problems_from_error(error)]
