"""``cosmos-assets`` subcommands around the artist's files: render frames to control videos, prompt files, their
validation and the exact host command, partitions, wedges, the sample render and the demo set-up."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from cosmos_assets.cli.common import layout_from_env, settings_from_env
from cosmos_assets.layout import ProjectLayout

DEMO_SHOT = "sample_flythrough"
DEMO_PROMPT = "sample_flythrough_demo"
DEMO_TEXT = (
    "A slow camera move over a city block of glass towers at dusk, wet asphalt reflecting warm street lights, "
    "cinematic, photorealistic."
)


def cmd_convert(args: argparse.Namespace) -> int:
    from cosmos_assets.media import RenderValidationError, encode_control_videos, scan_render_folder

    layout = layout_from_env()
    try:
        sequence = scan_render_folder(Path(args.render_dir))
    except RenderValidationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out_dir = layout.shot_videos_dir(args.name)
    videos = encode_control_videos(sequence, out_dir, max_frames=args.frames)
    for video in videos.values():
        note = " (padded to even size)" if video.padded else ""
        print(
            f"{video.path}: {video.frames} frames {video.width}x{video.height} @ {video.fps} fps, {video.bytes} bytes{note}"
        )
    return 0


def cmd_new_prompt(args: argparse.Namespace) -> int:
    from cosmos_assets.prompts.files import duplicate_prompt, new_prompt_spec, write_new_prompt, write_spec_if_absent

    layout = layout_from_env()
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
                print(
                    f"error: {path} exists; pick another --name (prompt files are never overwritten)", file=sys.stderr
                )
                return 1
    print(path)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from cosmos_assets.prompts.inputs import validate_for_run
    from cosmos_assets.prompts.spec import SpecError, load_spec

    layout = layout_from_env()
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
    from cosmos_assets.prompts.spec import SpecError
    from cosmos_assets.redaction import shell_join
    from cosmos_assets.runs.ids import new_run_id
    from cosmos_assets.runs.plan import model_for, plan_generation, plan_upscale, upscaler_for

    settings = settings_from_env()
    layout = ProjectLayout(root=settings.root)
    path = Path(args.prompt)
    path = path.resolve() if path.suffix == ".json" else layout.prompt_file(args.prompt).resolve()
    if path.parent != layout.prompts_dir.resolve() or not path.exists():
        print(
            f"error: no prompt {args.prompt} in {layout.prompts_dir}; prompts run from inputs/prompts/", file=sys.stderr
        )
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
            plan = plan_upscale(
                layout, backend, path.stem, run_id=run_id, control_weight=args.upscale, num_gpus=num_gpus
            )
    except (SpecError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    machine = host.machine_for(backend.name)
    try:
        command = machine.command_for(plan.job)
    finally:
        machine.close()
    print(
        f"# {plan.job.stage} on {machine.label} ({backend.label}); spec {plan.request.spec_remote}: {json.dumps(plan.request.spec)}"
    )
    print(shell_join(command))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from cosmos_assets.defs.partitions import register_partitions, register_wedges

    shots, prompts = register_partitions(layout_from_env())
    print(f"added shots: {shots or 'none new'}; prompts: {prompts or 'none new'}")
    wedges = register_wedges(layout_from_env())
    if wedges:
        print(f"added wedges: {wedges}")
    return 0


def cmd_wedge(args: argparse.Namespace) -> int:
    """One prompt file per combination of --vary values, registered; the comparison follows their runs."""
    from cosmos_assets.defs.partitions import register_partitions, register_wedges
    from cosmos_assets.prompts.wedge_vary import parse_vary
    from cosmos_assets.prompts.wedges import plan_wedge, write_wedge

    layout = layout_from_env()
    base = Path(args.base) if args.base.endswith(".json") else layout.prompt_file(args.base)
    if not base.is_file():
        print(f"error: {base}: no such prompt file; give inputs/prompts/NAME.json or NAME", file=sys.stderr)
        return 1
    plan = plan_wedge(layout, base, [parse_vary(option) for option in args.vary], name=args.name)
    if not args.no_register and not os.environ.get("DAGSTER_HOME"):
        print(
            "error: DAGSTER_HOME is not set, so the wedge's partitions would go to a throwaway instance; "
            "export DAGSTER_HOME=$PWD/dagster_home, or pass --no-register (then `cosmos-assets register`)",
            file=sys.stderr,
        )
        return 1
    written = write_wedge(layout, plan)
    wedge = plan.manifest.name
    for path, variant in zip(written, plan.manifest.variants):
        print(f"{path}  ({', '.join(variant.label_lines())})")
    if not args.no_register:
        register_partitions(layout)
        register_wedges(layout)
    keys = ",".join(v.prompt for v in plan.manifest.variants)
    print(
        f"wedge {wedge}: {len(written)} prompts{'' if args.no_register else ' registered'}. Generate them, e.g.\n"
        f"  for p in {keys.replace(',', ' ')}; do dagster asset materialize -m cosmos_assets.definitions "
        f"--select prompt_inputs,prompt_specs,generated_videos --partition $p; done\n"
        f"then the comparison (wedge_sensor starts it by itself when the sensors run):\n"
        f"  dagster asset materialize -m cosmos_assets.definitions --select wedge_comparisons --partition {wedge}"
    )
    return 0


def cmd_sample_render(args: argparse.Namespace) -> int:
    from cosmos_assets.media.sample_render import make_sample_render

    layout = layout_from_env()
    folder = layout.render_dir(args.shot)
    sequence = make_sample_render(folder, frames=args.frames, width=args.width, height=args.height)
    print(f"{folder}: {sequence.frame_count} frames {sequence.width}x{sequence.height}")
    return 0


def cmd_demo_setup(args: argparse.Namespace) -> int:
    """The sample render, a prompt for it and their partitions: everything `make demo` materializes."""
    from cosmos_assets.defs.partitions import register_partitions
    from cosmos_assets.media import RenderValidationError, scan_render_folder
    from cosmos_assets.media.sample_render import make_sample_render
    from cosmos_assets.prompts.files import new_prompt_spec, write_spec_if_absent

    layout = layout_from_env()
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
