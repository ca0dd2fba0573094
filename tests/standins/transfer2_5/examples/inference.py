"""Stand-in for Cosmos-Transfer2.5's ``examples/inference.py`` (NOT the model): the real flags, spec checks, outputs.

Flags from ``cli.json`` beside this file; each sample checked against ``spec_schema.json`` (unknown top-level keys,
integer guidance 0..7, string sigma_max, control weights 0..1, at least one control) plus the load-time rules
(paths exist, relative to the spec's folder; unique names); exit 2 on a usage error, 1 on a bad spec. Outputs are
upstream's flat layout: ``config.yaml``, ``console.log``, ``debug.log``, ``<name>.json`` (before the guardrail),
``<name>_control_<key>.mp4``, ``<name>_mask_<key>.mp4`` (a control with ``mask_prompt``), ``<name>.mp4``,
``<name>.txt``. A prompt containing GUARDRAIL_TEST_BLOCK is blocked
as upstream does with the default --keep-going: CRITICAL line, ``<name>.json`` only, exit 0.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from standin_common import (
    GUARDRAIL_TEST_BLOCK,
    composite_video,
    contract,
    copy_file,
    parser_from_contract,
    resolve,
    say,
    schema_problems,
    video_size,
)

BANNER = "cosmos-transfer2.5 stand-in (not the model)"
KEYS = ("edge", "vis", "depth", "seg")


def load_samples(files: list[str]) -> list[tuple[dict, Path]]:
    schema = contract("spec_schema.json")
    samples, names = [], set()
    for file in files:
        path = Path(file)
        if path.suffix not in (".json", ".jsonl"):
            raise SystemExit(f"ValueError: Unsupported file extension: {path.suffix}")
        lines = [path.read_text()] if path.suffix == ".json" else path.read_text().splitlines()
        for i, text in enumerate(lines):
            data = json.loads(text)
            problems = schema_problems(data, schema, schema)
            for field in ("video_path", "prompt_path", "image_context_path"):
                if isinstance(data.get(field), str) and not os.path.isfile(resolve(data[field], path.parent)):
                    problems.append(f"{field}: Path does not point to a file")
            for key in KEYS:
                block = data.get(key) or {}
                if isinstance(block.get("control_path"), str) and not os.path.isfile(
                    resolve(block["control_path"], path.parent)
                ):
                    problems.append(f"{key}.control_path: Path does not point to a file")
            if problems:
                print(f"Error validating parameters from '{path}' at line {i}\n" + "\n".join(problems), file=sys.stderr)
                raise SystemExit(1)
            if data["name"] in names:
                print(f"Error: Inference samplename {data['name']} is not unique", file=sys.stderr)
                raise SystemExit(1)
            names.add(data["name"])
            samples.append((data, path.parent))
    return samples


def run_sample(data: dict, spec_dir: Path, out: Path, args, console: Path) -> None:
    name = data["name"]
    prompt = data.get("prompt", "")
    overrides = {k: getattr(args, k) for k in ("seed", "guidance", "num_steps") if getattr(args, k) is not None}
    resolved = {**data, **overrides, "video_path": resolve(data["video_path"], spec_dir)}
    (out / f"{name}.json").write_text(json.dumps(resolved, indent=2))
    if not args.disable_guardrails and GUARDRAIL_TEST_BLOCK in prompt:
        say(BANNER, f"CRITICAL Guardrail blocked generation. Prompt: {prompt}", console)
        return
    controls, weights = {}, {}
    for key in KEYS:
        block = data.get(key)
        if block is None:
            continue
        weights[key] = float(block.get("control_weight", 1.0))
        if block.get("control_path"):
            controls[key] = resolve(block["control_path"], spec_dir)
        copy_file(controls.get(key, resolved["video_path"]), out / f"{name}_control_{key}.mp4")
        if block.get("mask_prompt"):  # upstream writes the mask it segmented beside the control
            copy_file(controls.get(key, resolved["video_path"]), out / f"{name}_mask_{key}.mp4")
    steps = int(resolved.get("num_steps", 35))
    width, height = video_size(resolved["video_path"])  # keep_input_resolution (default): the input's size, even
    size = (width - width % 2, height - height % 2) if resolved.get("keep_input_resolution", True) else None
    composite_video(
        out / f"{name}.mp4",
        resolved["video_path"],
        controls,
        weights,
        prompt,
        int(resolved.get("seed", 2025)),
        min(steps, 3),
        BANNER,
        size,
    )
    (out / f"{name}.txt").write_text(prompt)
    say(BANNER, f"Generated video saved to {out / name}.mp4", console)


def main(argv: list[str] | None = None) -> int:
    cli = contract("cli.json")
    args = parser_from_contract(cli, "inference.py").parse_args(argv)
    if args.guidance is not None and not 0 <= args.guidance <= 7:
        print("1 validation error\nguidance: Input should be less than or equal to 7", file=sys.stderr)
        return 1
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # only rank 0 writes
    samples = load_samples(args.input_files)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    console = out / "console.log"
    (out / "config.yaml").write_text(f"# stand-in config\ncontext_parallel_size: {world}\n")
    say(
        BANNER,
        f"{len(samples)} sample(s), context parallel size {world}, guardrails "
        f"{'off' if args.disable_guardrails else 'on'}",
        console,
    )
    for data, spec_dir in samples:
        run_sample(data, spec_dir, out, args, console)
    (out / "debug.log").write_text(console.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
