"""Stand-in for Cosmos 3's ``python -m cosmos_framework.scripts.inference`` (NOT the model) for video2video transfer.

Flags from ``cli.json`` beside this file (``--checkpoint-path`` required, ``-o`` required at run time, the latency
preset's GPU rule: 1 or an even WORLD_SIZE); each sample checked against ``spec_schema.json`` (unknown keys rejected
everywhere, hint blocks included; integer fps; .mp4 vision_path) and the load rules (paths exist, relative to the
spec's folder; depth/seg need a control_path). Outputs: ``<OUT>/<name>/{sample_args.json, vision.mp4,
control_<hint>.mp4, sample_outputs.json}`` and ``<OUT>/console.log``. No guardrail on the transfer path, as upstream.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from standin_common import (
    composite_video,
    contract,
    copy_file,
    parser_from_contract,
    resolve,
    say,
    schema_problems,
    video_size,
)

BANNER = "cosmos3 stand-in (not the model)"
HINTS = ("edge", "blur", "depth", "seg", "wsm")
LAYER = {"edge": "edge", "blur": "vis", "depth": "depth", "seg": "seg", "wsm": "vis"}
# the output size by tier and aspect (docs/upstream/cosmos3.md#resolution-tiers): the bucket, not the source's
TIERS = {
    "720": {"16,9": (1280, 720), "4,3": (1104, 832), "1,1": (960, 960), "3,4": (832, 1104), "9,16": (720, 1280)},
    "480": {"16,9": (832, 480), "4,3": (736, 544), "1,1": (640, 640), "3,4": (544, 736), "9,16": (480, 832)},
}
ASPECTS = {"16,9": 16 / 9, "4,3": 4 / 3, "1,1": 1.0, "3,4": 3 / 4, "9,16": 9 / 16}
CHECKPOINTS = ("Cosmos3-Nano", "Cosmos3-Edge", "Cosmos3-Super", "Cosmos3-Super-Image2Video", "Cosmos3-Super-Text2Image",
               "Cosmos3-Super-Text2Image-4Step", "Cosmos3-Super-Image2Video-4Step")  # fmt: skip


def output_size(data: dict, vision: str | None, first_control: str | None) -> tuple[int, int] | None:
    """With vision_path its aspect_ratio (default 16,9) decides, else the first hint's control video's aspect."""
    if vision is not None:
        aspect = data.get("aspect_ratio", "16,9")
    elif first_control is not None:
        width, height = video_size(first_control)
        aspect = min(ASPECTS, key=lambda name: abs(ASPECTS[name] - width / height))
    else:
        return None
    return TIERS.get(str(data.get("resolution")), {}).get(aspect)


def simulate_load(kind: str, checkpoint: str) -> None:
    """With ``STANDIN_LOAD_SECONDS`` set, sleep that long as the model load and count it: one line per load in
    ``STANDIN_LOADS`` (default ``.standin/loads`` under the working folder, the checkout). The serving app's stand-in
    always does; this one only when asked (the benchmark of served vs one-shot)."""
    seconds = os.environ.get("STANDIN_LOAD_SECONDS")
    if seconds is None and kind == "cli":
        return
    time.sleep(float(seconds or "0.5"))
    loads = Path(os.environ.get("STANDIN_LOADS", ".standin/loads"))
    loads.parent.mkdir(parents=True, exist_ok=True)
    with open(loads, "a", encoding="utf-8") as handle:
        handle.write(f"{time.time():.3f} {kind} {checkpoint}\n")


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def load(path: Path) -> tuple[dict, list[str]]:
    schema = contract("spec_schema.json")
    data = json.loads(path.read_text())
    data.setdefault("name", path.stem)
    problems = schema_problems(data, schema, schema)
    if isinstance(data.get("vision_path"), str) and not os.path.isfile(resolve(data["vision_path"], path.parent)):
        problems.append(f"vision_path: Path does not point to a file: {data['vision_path']}")
    for hint in HINTS:
        block = data.get(hint)
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("control_path"), str):
            if not os.path.isfile(resolve(block["control_path"], path.parent)):
                problems.append(f"{hint}.control_path: Path does not point to a file: {block['control_path']}")
        elif hint in ("depth", "seg", "wsm"):
            problems.append(
                f"Missing pre-computed control input for '{hint}'. Provide a control_path in the transfer config."
            )
        elif "vision_path" not in data:
            problems.append(f"{hint}: needs a control_path or a vision_path to compute it from")
    if not any(isinstance(data.get(h), dict) for h in HINTS):
        problems.append("transfer inference requires at least one control hint (edge, blur, depth, seg, wsm)")
    return data, problems


def main(argv: list[str] | None = None) -> int:
    cli = contract("cli.json")
    args = parser_from_contract(cli, "cosmos_framework.scripts.inference").parse_args(argv)
    if args.checkpoint_path is None:
        print("error: the following arguments are required: --checkpoint-path", file=sys.stderr)
        return 2
    if args.checkpoint_path not in CHECKPOINTS and not os.path.isdir(args.checkpoint_path):
        return fail(f"ValueError: unknown checkpoint {args.checkpoint_path!r}")
    if args.output_dir is None:
        return fail("ValueError: 'output_dir' is required")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if (args.parallelism_preset or "latency") == "latency" and world > 1 and world % 2:
        return fail(f"ValueError: cp_size(1) * cfgp_size(2) must divide WORLD_SIZE({world})")
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    out = Path(args.output_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    console = out / "console.log"
    simulate_load("cli", args.checkpoint_path)
    say(
        BANNER,
        f"checkpoint {args.checkpoint_path}, preset {args.parallelism_preset}, world size {world}, "
        f"guardrails {'loaded, not applied on transfer' if args.guardrails else 'off'}, "
        f"diffusion cache {'on (lossy)' if args.diffusion_cache else 'off'}",
        console,
    )
    for file in sorted(set(args.input_files)):
        data, problems = load(Path(file))
        if problems:
            return fail(f"Error validating '{file}':\n" + "\n".join(problems))
        spec_dir = Path(file).parent
        folder = out / data["name"]
        folder.mkdir(parents=True, exist_ok=True)
        vision = resolve(data["vision_path"], spec_dir) if data.get("vision_path") else None
        controls, weights, first_control = {}, {}, None
        for hint in HINTS:
            block = data.get(hint)
            if not isinstance(block, dict):
                continue
            weights[LAYER[hint]] = float(block.get("weight", 1.0))
            source = resolve(block["control_path"], spec_dir) if block.get("control_path") else vision
            if block.get("control_path"):
                controls[LAYER[hint]] = source
            first_control = first_control or source
            copy_file(source, folder / f"control_{hint}.mp4")
        resolved = {**data, "vision_path": vision, "output_dir": str(folder)}
        (folder / "sample_args.json").write_text(json.dumps(resolved, indent=2))
        composite_video(
            folder / "vision.mp4",
            vision,
            controls,
            weights,
            data.get("prompt", ""),
            int(data.get("seed", 0)),
            min(int(data.get("num_steps", 35)), 3),
            BANNER,
            output_size(data, vision, first_control),
        )
        files = sorted(p.name for p in folder.iterdir())
        status = {"args": resolved, "status": "success", "outputs": [{"content": {}, "files": files}]}
        (folder / "sample_outputs.json").write_text(json.dumps(status, indent=2))
        say(BANNER, f"[RANK 0] Saved transfer outputs to '{folder / 'sample_outputs.json'}'", console)
    (out / "debug.log").write_text(console.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
