"""The value checks of a prompt file's fields: one error per field, in our wording (a number that is text is told
to drop its quotes, a weight is a number from 0 to 1 or a .pt path...). Used as pydantic types by
:mod:`cosmos_assets.prompts.spec`."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import PlainValidator
from pydantic_core import PydanticCustomError

CONTROL_KEYS: tuple[str, ...] = ("vis", "seg", "edge", "depth", "keypoint", "upscale", "hdmap", "lidar")
CONTROL_FIELDS: tuple[str, ...] = (
    "input_control", "control_weight", "ckpt_path", "input_control_prompt", "control_weight_prompt",
)  # fmt: skip
REGIONAL_PROMPT_FIELDS: tuple[str, ...] = ("prompt", "region_definitions_path", "mask_prompt")
WEIGHT_FIX = "use a number from 0 to 1 or a path to a .pt weight map"


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
            raise _custom("weight", f"not a number and not a .pt path; {WEIGHT_FIX}") from None
    elif _is_number(value):
        number = float(value)
    else:
        raise _custom("weight", f"must be a number or a path to a .pt weight map; {WEIGHT_FIX}")
    if not math.isfinite(number):
        raise _custom("weight", f"must be a finite number; {WEIGHT_FIX}")
    if number < 0:
        raise _custom("weight", f"weights must be >= 0; {WEIGHT_FIX}")
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
