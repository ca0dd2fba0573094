"""``cosmos-assets``: the seed's scripts as subcommands.

Upload, run, download and the full cycle are asset materializations (``dagster asset materialize``);
these subcommands cover what happens around them: encoding, prompt files, validation and a dry run
of the exact host command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import datetime
from pathlib import Path

from cosmos_assets.layout import ProjectLayout, name_problem
from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.settings import Settings

DEMO_SHOT = "sample_flythrough"
DEMO_PROMPT = "sample_flythrough_demo"
DEMO_TEXT = (
    "A slow camera move over a city block of glass towers at dusk, wet asphalt reflecting warm street lights, "
    "cinematic, photorealistic."
)


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def plain_name(value: str) -> str:
    """An argparse type for shot and prompt names: they become folder names and partition keys."""
    if not _PLAIN_NAME.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a plain name: use letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
        )
    problem = name_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{value[:40]!r}... is not a plain name: it {problem}")
    return value


def _settings() -> Settings:
    return Settings.from_env()


def _layout() -> ProjectLayout:
    return ProjectLayout(root=_settings().root)


def cmd_convert(args: argparse.Namespace) -> int:
    from cosmos_assets.media import RenderValidationError, encode_control_videos, scan_render_folder

    layout = _layout()
    try:
        sequence = scan_render_folder(Path(args.render_dir))
    except RenderValidationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out_dir = layout.shot_videos_dir(args.name)
    videos = encode_control_videos(sequence, out_dir, max_frames=args.frames)
    for name, video in videos.items():
        note = " (padded to even size)" if video.padded else ""
        print(f"{video.path}: {video.frames} frames {video.width}x{video.height} @ {video.fps} fps, {video.bytes} bytes{note}")
    return 0


def cmd_new_prompt(args: argparse.Namespace) -> int:
    from cosmos_assets.prompts.files import duplicate_prompt, new_prompt_spec, write_new_prompt, write_spec_if_absent

    layout = _layout()
    layout.prompts_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now()
    if args.duplicate:
        path = duplicate_prompt(Path(args.duplicate), layout.prompts_dir, now)
    else:
        if not args.base or args.text is None:
            print('error: give BASE "PROMPT TEXT", or --duplicate FILE', file=sys.stderr)
            return 2
        spec = new_prompt_spec(args.base, args.text)
        if not args.name:
            path = write_new_prompt(spec, layout.prompts_dir, args.base, now)
        else:
            path = layout.prompt_file(args.name)
            try:
                write_spec_if_absent(spec, path)
            except FileExistsError:
                print(f"error: {path} exists; pick another --name (prompt files are never overwritten)", file=sys.stderr)
                return 1
    print(path)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from cosmos_assets.prompts.spec import load_spec, SpecError
    from cosmos_assets.prompts.inputs import validate_for_run

    layout = _layout()
    failed = 0
    for name in args.specs:
        path = Path(name)
        try:
            spec = load_spec(path)
        except SpecError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        problems = validate_for_run(spec, path, layout.root) if not args.schema_only else []
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        for warning in spec.warnings():
            print(f"warning: {path}: {warning}", file=sys.stderr)
        if problems:
            failed += 1
        else:
            print(f"ok: {path}")
    return 1 if failed else 0


def cmd_command(args: argparse.Namespace) -> int:
    """What the configured host and model would run for this prompt; nothing is run or uploaded."""
    from cosmos_assets.defs.resources import gpu_host_from_settings
    from cosmos_assets.redaction import shell_join
    from cosmos_assets.runs.ids import new_run_id
    from cosmos_assets.runs.plan import model_for, plan_generation, plan_upscale, upscaler_for
    from cosmos_assets.prompts.spec import SpecError

    settings = _settings()
    layout = ProjectLayout(root=settings.root)
    path = Path(args.prompt)
    path = path.resolve() if path.suffix == ".json" else layout.prompt_file(args.prompt).resolve()
    if path.parent != layout.prompts_dir.resolve() or not path.exists():
        print(f"error: no prompt {args.prompt} in {layout.prompts_dir}; prompts run from inputs/prompts/", file=sys.stderr)
        return 1
    host = gpu_host_from_settings(settings)
    run_id = new_run_id()
    num_gpus = args.num_gpus or settings.num_gpus
    try:
        if args.upscale is None:
            backend = model_for(layout, path.stem, args.model, host.model)
            plan = plan_generation(layout, backend, path.stem, run_id=run_id, num_gpus=num_gpus)
        else:
            backend = upscaler_for(host.model)  # the 4K upscale is Transfer1's whichever model generated
            plan = plan_upscale(layout, backend, path.stem, run_id=run_id, control_weight=args.upscale, num_gpus=num_gpus)
    except (SpecError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    machine = host.machine_for(backend.name)
    try:
        command = machine.command_for(plan.job)
    finally:
        machine.close()
    print(f"# {plan.job.stage} on {machine.label} ({backend.label}); spec {plan.request.spec_remote}: {json.dumps(plan.request.spec)}")
    print(shell_join(command))
    return 0


def register_partitions(layout: ProjectLayout) -> tuple[list[str], list[str]]:
    """Add every render folder and prompt file as a partition of the instance in DAGSTER_HOME."""
    import dagster as dg

    from cosmos_assets.defs.partitions import PROMPTS, SHOTS

    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit(
            "error: DAGSTER_HOME is not set, so partitions would go to a throwaway instance; "
            "export DAGSTER_HOME=$PWD/dagster_home (the Makefile does)"
        )
    instance = dg.DagsterInstance.get()
    added: dict[str, list[str]] = {}
    for partitions, keys in ((SHOTS, layout.shot_names()), (PROMPTS, layout.prompt_names())):
        known = set(instance.get_dynamic_partitions(partitions.name))
        new = [key for key in keys if key not in known]
        if new:
            instance.add_dynamic_partitions(partitions.name, new)
        added[partitions.name] = new
    return added[SHOTS.name], added[PROMPTS.name]


def cmd_register(args: argparse.Namespace) -> int:
    shots, prompts = register_partitions(_layout())
    print(f"added shots: {shots or 'none new'}; prompts: {prompts or 'none new'}")
    wedges = register_wedges(_layout())
    if wedges:
        print(f"added wedges: {wedges}")
    return 0


def register_wedges(layout: ProjectLayout) -> list[str]:
    """Add every wedge manifest (inputs/wedges/*.json) as a `wedges` partition; call after register_partitions."""
    import dagster as dg

    from cosmos_assets.defs.partitions import WEDGES
    from cosmos_assets.prompts.wedges import wedge_names

    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(WEDGES.name))
    new = [name for name in wedge_names(layout) if name not in known]
    if new:
        instance.add_dynamic_partitions(WEDGES.name, new)
    return new


def cmd_wedge(args: argparse.Namespace) -> int:
    """One prompt file per combination of --vary values, registered; the comparison follows their runs."""
    from cosmos_assets.prompts.wedge_vary import parse_vary
    from cosmos_assets.prompts.wedges import plan_wedge, write_wedge

    layout = _layout()
    base = Path(args.base) if args.base.endswith(".json") else layout.prompt_file(args.base)
    if not base.is_file():
        print(f"error: {base}: no such prompt file; give inputs/prompts/NAME.json or NAME", file=sys.stderr)
        return 1
    plan = plan_wedge(layout, base, [parse_vary(option) for option in args.vary], name=args.name)
    if not args.no_register and not os.environ.get("DAGSTER_HOME"):
        print("error: DAGSTER_HOME is not set, so the wedge's partitions would go to a throwaway instance; "
              "export DAGSTER_HOME=$PWD/dagster_home, or pass --no-register (then `cosmos-assets register`)",
              file=sys.stderr)  # fmt: skip
        return 1
    written = write_wedge(layout, plan)
    wedge = plan.manifest.name
    for path, variant in zip(written, plan.manifest.variants):
        print(f"{path}  ({', '.join(variant.label_lines())})")
    if not args.no_register:
        register_partitions(layout)
        register_wedges(layout)
    keys = ",".join(v.prompt for v in plan.manifest.variants)
    print(f"wedge {wedge}: {len(written)} prompts{'' if args.no_register else ' registered'}. Generate them, e.g.\n"
          f"  for p in {keys.replace(',', ' ')}; do dagster asset materialize -m cosmos_assets.definitions "
          f"--select prompt_inputs,prompt_specs,generated_videos --partition $p; done\n"
          f"then the comparison (wedge_sensor starts it by itself when the sensors run):\n"
          f"  dagster asset materialize -m cosmos_assets.definitions --select wedge_comparisons --partition {wedge}")
    return 0


def cmd_sample_render(args: argparse.Namespace) -> int:
    from cosmos_assets.media.sample_render import make_sample_render

    layout = _layout()
    folder = layout.render_dir(args.shot)
    sequence = make_sample_render(folder, frames=args.frames, width=args.width, height=args.height)
    print(f"{folder}: {sequence.frame_count} frames {sequence.width}x{sequence.height}")
    return 0


def cmd_demo_setup(args: argparse.Namespace) -> int:
    """The sample render, a prompt for it and their partitions: everything `make demo` materializes."""
    from cosmos_assets.media import RenderValidationError, scan_render_folder
    from cosmos_assets.media.sample_render import make_sample_render
    from cosmos_assets.prompts.files import new_prompt_spec, write_spec_if_absent

    layout = _layout()
    layout.ensure_working_folders()
    folder = layout.render_dir(DEMO_SHOT)
    try:
        scan_render_folder(folder)
        print(f"sample render already in {folder}")
    except RenderValidationError:
        make_sample_render(folder)
        print(f"sample render written to {folder}")
    prompt_path = layout.prompt_file(DEMO_PROMPT)
    if not prompt_path.exists():
        write_spec_if_absent(new_prompt_spec(DEMO_SHOT, DEMO_TEXT), prompt_path)
    print(f"prompt: {prompt_path}")
    shots, prompts = register_partitions(layout)
    print(f"partitions added: shots {shots or '(already there)'}, prompts {prompts or '(already there)'}")
    return 0


def ssh_argv(command: list[str]) -> list[str]:
    """The OpenSSH client argv for the GPU host, from the same settings as COSMOS_HOST=ssh (ssh_lambda.sh)."""
    from cosmos_assets.defs.resources import ssh_target_from_settings

    return ssh_target_from_settings(_settings()).openssh_argv(command)


def cmd_ssh(args: argparse.Namespace) -> int:
    argv = ssh_argv(list(args.command))
    os.execvp(argv[0], argv)  # replaces this process; no shell in between
    return 0  # not reached


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate (and upscale) prompts now, in this process, at a priority: an urgent shot is placed on the next free
    host before the runs already waiting (Dagster's dagster/priority orders every pool wait); docs/hosts.md."""
    import dagster as dg

    from cosmos_assets.definitions import build_definitions
    from cosmos_assets.defs.resources.placement import HOST_TAG
    from cosmos_assets.runs.priority import priority_tags

    settings = _settings()
    layout = ProjectLayout(root=settings.root)
    missing = [p for p in args.prompts if not layout.prompt_file(p).is_file()]
    if missing:
        print(f"error: no prompt file {layout.prompt_file(missing[0])}; prompts run from inputs/prompts/", file=sys.stderr)
        return 1
    tags = priority_tags(args.priority)  # a bad value is a ValueError: one line
    register_partitions(layout)
    job = build_definitions(settings).resolve_job_def("full_cycle_job" if args.upscale else "generate_job")
    config = {"ops": {op: {"config": {"force": True}} for op in ("generated_videos", "upscaled_videos")[: 2 if args.upscale else 1]}}
    failed = 0
    with dg.DagsterInstance.get() as instance:
        for prompt in args.prompts:
            result = job.execute_in_process(partition_key=prompt, instance=instance, tags=tags, raise_on_error=False,
                                            run_config=config if args.force else None)  # fmt: skip
            run = instance.get_run_by_id(result.run_id)
            host = run.tags.get(HOST_TAG, "?") if run is not None else "?"
            if result.success:
                print(f"{prompt}: succeeded on {host} (run {result.run_id}, priority {tags.get('dagster/priority', '0')})")
            else:
                failed += 1
                errors = [_failure_line(e) for e in result.all_events if e.is_step_failure and e.message]
                print(f"error: {prompt}: failed on {host} (run {result.run_id}): {errors[0] if errors else 'see the run in the UI'}",
                      file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _failure_line(event) -> str:  # noqa: ANN001 - a DagsterEvent
    """A failed step's own one-line reason (the Failure's description), else Dagster's message."""
    user = event.step_failure_data.user_failure_data if event.step_failure_data is not None else None
    return ((user.description if user is not None and user.description else None) or event.message).splitlines()[0]


def cmd_hosts(args: argparse.Namespace) -> int:
    """The hosts runs may go to (COSMOS_HOSTS_FILE, else the single host) and their state now."""
    from cosmos_assets.defs.resources import gpu_host_from_settings
    from cosmos_assets.defs.resources.status import probe_all, table

    statuses = probe_all(gpu_host_from_settings(_settings()).members())
    if os.environ.get("DAGSTER_HOME"):  # runs in flight: who holds each host's Dagster slot
        import dagster as dg

        from cosmos_assets.defs.resources import slots

        instance = dg.DagsterInstance.get()
        if slots.supported(instance):
            for status in statuses:
                status.runs_in_flight, status.waiting = slots.runs_on(instance, status.name)
    if args.json:
        print(json.dumps([status.model_dump() for status in statuses], indent=2))
    else:
        print(table(statuses), end="")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """The history's good lines; a bad line is named on stderr (file:line, what is wrong) and left out, exit 0."""
    from cosmos_assets.runs.history import read_history

    path = _layout().history_log
    try:
        lines = read_history(path, warn=lambda problem: print(f"warning: {problem}", file=sys.stderr))
    except OSError as error:
        print(f"error: cannot read {path} ({error.strerror or error}); check its permissions", file=sys.stderr)
        return 1
    if args.summary:
        from cosmos_assets.runs.cost import summary_table

        print(summary_table(lines), end="")
        return 0
    for record in lines[-args.last :]:
        cost = "" if record.cost is None else f", cost {record.cost:.2f}"
        print(f"{record.when:%Y-%m-%d %H:%M:%S} {record.status:<17} {record.stage:<8} {record.prompt} ({record.shot}) on {record.host}: "
              f"{record.total_seconds:.1f}s, {record.gpu_seconds / 3600.0:.3f} GPU h{cost}")  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cosmos-assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="PNG sequences -> inputs/videos/NAME/{color,depth,segmentation}.mp4 (convert_png_sequences.sh)")
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
    p.add_argument("--upscale", type=float, default=None, metavar="W", help="print the 4K upscale command with weight W")
    p.add_argument("--model", default=None, help="model: cosmos-transfer1, cosmos-transfer2.5, cosmos3 (default: the prompt file's cosmos_assets.model, else COSMOS_MODEL)")
    p.set_defaults(func=cmd_command)

    p = sub.add_parser("register", help="add render folders and prompt files as Dagster partitions (DAGSTER_HOME)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("wedge", help="one prompt file per combination of --vary values, registered; compared after their runs")
    p.add_argument("base", help="the prompt to vary: inputs/prompts/NAME.json, or NAME")
    p.add_argument("--vary", action="append", required=True, metavar="PATH=V1,V2,...",
                   help="a field of the prompt file and its values, e.g. edge.control_weight=0.2,0.5,0.8, seed=1,2, "
                        "model=cosmos-transfer1,cosmos-transfer2.5 (repeat for more axes: every combination is made); "
                        r"a comma inside a value is written \, and \\ is one backslash "
                        r"(--vary 'prompt=a city\, at dusk,a forest')")
    p.add_argument("--name", type=plain_name, help="wedge name (default BASE_wedge_<timestamp>); prompts are NAME_NN_...")
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
    p.add_argument("--priority", default=None, help="urgent, high, normal, low, backfill, wedge or an integer: "
                   "higher is placed on a free host first")
    p.add_argument("--force", action="store_true", help="run even if the last run did the same work")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("hosts", help="the GPU hosts (COSMOS_HOSTS_FILE) and their state: reachable, GPUs, disk, image, runs")
    p.add_argument("--json", action="store_true", help="one JSON object per host")
    p.set_defaults(func=cmd_hosts)

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


if __name__ == "__main__":
    sys.exit(main())
