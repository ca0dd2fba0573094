"""What the Transfer2.5 and Cosmos 3 stand-ins share (stdlib + numpy + PyAV: they run in the test image, no torch).

- ``parser_from_contract``: an argparse parser with exactly the flags of the model's ``cli.json`` (both the hyphen and
  the underscore spelling, ``--key=value``, flag pairs ``--x``/``--no-x`` without a value, enum/literal choices); a
  usage error exits 2 as tyro does.
- ``schema_problems``: the spec checked against the model's ``spec_schema.json`` (unknown keys, types, ranges,
  enums, patterns, required), the way upstream's pydantic models reject a sample (exit 1).
- ``composite_video``: the preview program's compositing (a copy of cosmos_assets/models/preview_model.py sits
  beside this file), so the outputs are real, playable videos made from the inputs.

These files are copied into the test checkouts at the real entry points' paths (tests/standins/install.py).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
GUARDRAIL_TEST_BLOCK = "GUARDRAIL_TEST_BLOCK"


def say(banner: str, message: str, log_file: Path | None = None) -> None:
    line = f"[{banner}] {message}"
    print(line, flush=True)
    if log_file is not None:
        with open(log_file, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def contract(name: str) -> dict[str, Any]:
    return json.loads((HERE / name).read_text(encoding="utf-8"))


def _arguments(cli: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for flag, info in cli["arguments"].items():
        if flag.startswith("--"):
            found[flag] = info
        elif isinstance(info, dict):  # Cosmos 3's nested "sample overrides" table
            found.update({k: v for k, v in info.items() if k.startswith("--")})
    return found


def parser_from_contract(cli: dict[str, Any], prog: str) -> argparse.ArgumentParser:
    """argparse with the contract's flags; unknown flags, bad choices, a value after a plain flag: exit 2."""
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    for flag, info in _arguments(cli).items():
        base = flag[2:]
        dest = base.replace("-", "_")
        names = list(dict.fromkeys([flag, "--" + dest, *[a for a in info.get("aliases", []) if a.startswith("-")]]))
        kind = str(info.get("type", "str"))
        if kind == "flag":
            parser.add_argument(*names, dest=dest, action="store_true", default=info.get("default"))
            negation = info.get("negation") or f"--no-{base}"
            parser.add_argument(negation, "--no_" + dest, dest=dest, action="store_false")
            continue
        kwargs: dict[str, Any] = {"dest": dest, "default": None}
        if info.get("nargs"):
            kwargs["nargs"] = info["nargs"] if info["nargs"] in ("+", "*") else int(info["nargs"])
        choices = info.get("choices")
        if choices is not None:
            kwargs["choices"] = [str(c) for c in choices if c is not None] + (["None"] if None in choices else [])
        if kind.startswith("int") and "nargs" not in kwargs:
            kwargs["type"] = int
        parser.add_argument(*names, **kwargs)
    return parser


# --------------------------------------------------------------------------- a small JSON-schema check


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **target}
    return schema


def _type_ok(value: Any, kind: str) -> bool:
    return {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]


def _known_properties(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    schema = _resolve(schema, root)
    names = set(schema.get("properties", {}))
    for sub in schema.get("allOf", []):
        names |= _known_properties(sub, root)
    return names


def schema_problems(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "") -> list[str]:
    """Why ``value`` does not satisfy ``schema`` (the subset of JSON schema the two contracts use)."""
    schema = _resolve(schema, root)
    at = where or "(top level)"
    problems: list[str] = []
    for key in ("oneOf", "anyOf"):
        if key in schema and not any(not schema_problems(value, s, root, where) for s in schema[key]):
            first = schema_problems(value, schema[key][0], root, where)
            problems.append(f"{at}: matches none of the allowed forms ({'; '.join(first[:2])})")
    for sub in schema.get("allOf", []):
        problems += schema_problems(value, sub, root, where)
    if "not" in schema and not schema_problems(value, schema["not"], root, where):
        problems.append(f"{at}: {schema['not'].get('description', 'a forbidden combination')}")
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_type_ok(value, k) for k in kinds):
            return problems + [f"{at}: Input should be {' or '.join(kinds)}, not {json.dumps(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{at}: Input should be one of {schema['enum']}, not {json.dumps(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{at}: Input should be greater than or equal to {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{at}: Input should be less than or equal to {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            problems.append(f"{at}: Input should be greater than {schema['exclusiveMinimum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{at}: String should have at least {schema['minLength']} character")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{at}: String should match pattern '{schema['pattern']}'")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            problems.append(f"{at}: wrong number of items")
        for i, item in enumerate(value):
            if "items" in schema:
                problems += schema_problems(item, schema["items"], root, f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{where + '.' if where else ''}{name}: Field required")
        closed = schema.get("additionalProperties") is False or schema.get("unevaluatedProperties") is False
        known = _known_properties(schema, root)
        for name, item in value.items():
            path = f"{where}.{name}" if where else name
            if name in props:
                problems += schema_problems(item, props[name], root, path)
            elif closed and name not in known:
                problems.append(f"{path}: Extra inputs are not permitted")
    return problems


# --------------------------------------------------------------------------- outputs


def composite_video(
    out: Path,
    base: str | None,
    controls: dict[str, str],
    weights: dict[str, float],
    prompt: str,
    seed: int,
    num_steps: int,
    banner: str,
    size: tuple[int, int] | None = None,
) -> int:
    """A real video composited from the inputs by the preview program (its copy beside this file); ``size``: the
    model's own output size (the preview program's is Transfer1's bucket)."""
    sys.path.insert(0, str(HERE))
    import preview_model

    preview_model.BANNER = banner
    if size is not None:
        preview_model.nearest_bucket = lambda width, height: size
    args = SimpleNamespace(input_video_path=base, num_steps=num_steps, prompt=prompt, seed=seed, fps=24)
    return preview_model.generate(args, {k: {"input_control": v} for k, v in controls.items()}, weights, out)


def video_size(path: str) -> tuple[int, int]:
    sys.path.insert(0, str(HERE))
    import preview_model

    _, width, height = preview_model.count_frames(path)
    return width, height


def copy_file(source: str, target: Path) -> None:
    shutil.copyfile(source, target)


def resolve(path: str, spec_dir: Path) -> str:
    """A spec path as upstream reads it: relative to the spec file's folder, absolute as-is."""
    return path if path.startswith("/") else str(spec_dir / path)
