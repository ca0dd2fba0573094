"""``cosmos-assets``: the seed's scripts as subcommands.

Upload, run, download and the full cycle are asset materializations (``dagster asset materialize``);
these subcommands cover what happens around them: encoding, prompt files, validation and a dry run
of the exact host command. Each subcommand imports what it needs when it runs, so ``cosmos-assets --help`` loads no
Dagster or PyAV; they are grouped by what they work on (``project``, ``runs``, ``hosts``).
"""

from __future__ import annotations

import argparse
import sys

from cosmos_assets.cli.common import plain_name
from cosmos_assets.cli.hosts import cmd_hosts, cmd_service, cmd_ssh
from cosmos_assets.cli.project import (
    DEMO_SHOT,
    cmd_command,
    cmd_convert,
    cmd_demo_setup,
    cmd_new_prompt,
    cmd_register,
    cmd_sample_render,
    cmd_validate,
    cmd_wedge,
)
from cosmos_assets.cli.runs import cmd_generate, cmd_history, cmd_reproduce
from cosmos_assets.machines.job import HostNotReadyError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cosmos-assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert", help="PNG sequences -> inputs/videos/NAME/{color,depth,segmentation}.mp4 (convert_png_sequences.sh)"
    )
    p.add_argument("render_dir")
    p.add_argument("name", type=plain_name, help="shot name: inputs/videos/NAME/")
    p.add_argument("--frames", type=int, default=None, help="convert only the first N frames")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("new-prompt", help="write inputs/prompts/BASE_<timestamp>.json (new_prompt.sh)")
    p.add_argument("base", nargs="?", type=plain_name, help="the shot the prompt is for")
    p.add_argument("text", nargs="?")
    p.add_argument("--duplicate", metavar="FILE", help="copy an existing prompt under a new timestamp")
    p.add_argument("--name", type=plain_name, help="prompt name instead of BASE_<timestamp>")
    p.set_defaults(func=cmd_new_prompt)

    p = sub.add_parser("validate", help="check prompt specs; exit 1 naming the file, field and fix")
    p.add_argument("specs", nargs="+")
    p.add_argument("--schema-only", action="store_true", help="check the spec alone, not that its files exist")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("command", help="print the exact host command for a prompt, without running it")
    p.add_argument("prompt", help="inputs/prompts/NAME.json, or NAME")
    p.add_argument("--num-gpus", type=int, default=None)
    p.add_argument(
        "--upscale", type=float, default=None, metavar="W", help="print the 4K upscale command with weight W"
    )
    p.add_argument(
        "--model",
        default=None,
        help="model: cosmos-transfer1, cosmos-transfer2.5, cosmos3 (default: the prompt file's cosmos_assets.model, else COSMOS_MODEL)",
    )
    p.set_defaults(func=cmd_command)

    p = sub.add_parser("register", help="add render folders and prompt files as Dagster partitions (DAGSTER_HOME)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser(
        "wedge", help="one prompt file per combination of --vary values, registered; compared after their runs"
    )
    p.add_argument("base", help="the prompt to vary: inputs/prompts/NAME.json, or NAME")
    p.add_argument(
        "--vary",
        action="append",
        required=True,
        metavar="PATH=V1,V2,...",
        help="a field of the prompt file and its values, e.g. edge.control_weight=0.2,0.5,0.8, seed=1,2, "
        "model=cosmos-transfer1,cosmos-transfer2.5 (repeat for more axes: every combination is made); "
        r"a comma inside a value is written \, and \\ is one backslash "
        r"(--vary 'prompt=a city\, at dusk,a forest')",
    )
    p.add_argument(
        "--name", type=plain_name, help="wedge name (default BASE_wedge_<timestamp>); prompts are NAME_NN_..."
    )
    p.add_argument("--no-register", action="store_true", help="write the files only; `cosmos-assets register` later")
    p.set_defaults(func=cmd_wedge)

    p = sub.add_parser("sample-render", help="write the procedural sample shot under art/houdini/renders/SHOT")
    p.add_argument("--shot", default=DEMO_SHOT, type=plain_name)
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=704)
    p.set_defaults(func=cmd_sample_render)

    p = sub.add_parser("demo-setup", help="sample render + demo prompt + partitions (used by `make demo`)")
    p.set_defaults(func=cmd_demo_setup)

    p = sub.add_parser("ssh", help="interactive shell on the GPU host with the same settings (ssh_lambda.sh)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="optional command to run instead of a shell")
    p.set_defaults(func=cmd_ssh)

    p = sub.add_parser("generate", help="generate prompts now in this process (DAGSTER_HOME), at a priority")
    p.add_argument("prompts", nargs="+", type=plain_name, metavar="PROMPT")
    p.add_argument("--upscale", action="store_true", help="also the 4K upscale (full_cycle_job)")
    p.add_argument(
        "--priority",
        default=None,
        help="urgent, high, normal, low, backfill, wedge or an integer: higher is placed on a free host first",
    )
    p.add_argument("--force", action="store_true", help="run even if the last run did the same work")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "reproduce", help="run a recorded run again, exactly, into outputs/_reproduced/ and compare the videos"
    )
    p.add_argument("target", metavar="RUN_ID|CLIP.mp4", help="a run id (cosmos-assets history) or a clip it made")
    p.add_argument(
        "--anyway",
        action="store_true",
        help="run even if an input, the image or the checkpoints changed, recording the difference",
    )
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "hosts", help="the GPU hosts (COSMOS_HOSTS_FILE) and their state: reachable, GPUs, disk, image, runs"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per host")
    p.set_defaults(func=cmd_hosts)

    p = sub.add_parser("service", help="the resident Cosmos 3 model service on the GPU hosts: status, or stop it")
    p.add_argument("action", choices=["status", "stop"])
    p.add_argument("--host", help="only this pool host (its name in COSMOS_HOSTS_FILE); default every SSH host")
    p.set_defaults(func=cmd_service)

    p = sub.add_parser("history", help="print notes/run_history.log")
    p.add_argument("--last", type=int, default=20)
    p.add_argument("--summary", action="store_true", help="totals of GPU hours and cost per shot and per day")
    p.set_defaults(func=cmd_history)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; an error we can explain is one line on stderr and exit 1, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (HostNotReadyError, ValueError, OSError) as error:  # SpecError, SettingsError, a file we refuse to read
        for line in str(error).splitlines() or [type(error).__name__]:  # one line per bad setting or spec field
            print(f"error: {line}", file=sys.stderr)
        return 1
