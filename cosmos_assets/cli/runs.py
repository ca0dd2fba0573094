"""``cosmos-assets`` subcommands about runs: generate now at a priority, the run history and its cost, and the exact
repetition of a recorded run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cosmos_assets.cli.common import layout_from_env, settings_from_env
from cosmos_assets.layout import ProjectLayout


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate (and upscale) prompts now, in this process, at a priority: an urgent shot is placed on the next free
    host before the runs already waiting (Dagster's dagster/priority orders every pool wait); docs/hosts.md."""
    import dagster as dg

    from cosmos_assets.definitions import build_definitions
    from cosmos_assets.defs.partitions import register_partitions
    from cosmos_assets.defs.resources.placement import HOST_TAG
    from cosmos_assets.runs.priority import priority_tags

    settings = settings_from_env()
    layout = ProjectLayout(root=settings.root)
    missing = [p for p in args.prompts if not layout.prompt_file(p).is_file()]
    if missing:
        print(
            f"error: no prompt file {layout.prompt_file(missing[0])}; prompts run from inputs/prompts/", file=sys.stderr
        )
        return 1
    tags = priority_tags(args.priority)  # a bad value is a ValueError: one line
    register_partitions(layout)
    job = build_definitions(settings).resolve_job_def("full_cycle_job" if args.upscale else "generate_job")
    config = {
        "ops": {
            op: {"config": {"force": True}}
            for op in ("generated_videos", "upscaled_videos")[: 2 if args.upscale else 1]
        }
    }
    failed = 0
    with dg.DagsterInstance.get() as instance:
        for prompt in args.prompts:
            result = job.execute_in_process(
                partition_key=prompt,
                instance=instance,
                tags=tags,
                raise_on_error=False,
                run_config=config if args.force else None,
            )
            run = instance.get_run_by_id(result.run_id)
            host = run.tags.get(HOST_TAG, "?") if run is not None else "?"
            if result.success:
                print(
                    f"{prompt}: succeeded on {host} (run {result.run_id}, priority {tags.get('dagster/priority', '0')})"
                )
            else:
                failed += 1
                errors = [_failure_line(e) for e in result.all_events if e.is_step_failure and e.message]
                print(
                    f"error: {prompt}: failed on {host} (run {result.run_id}): {errors[0] if errors else 'see the run in the UI'}",
                    file=sys.stderr,
                )
    return 1 if failed else 0


def _failure_line(event) -> str:
    """A failed step's own one-line reason (the Failure's description), else Dagster's message."""
    user = event.step_failure_data.user_failure_data if event.step_failure_data is not None else None
    return ((user.description if user is not None and user.description else None) or event.message).splitlines()[0]


def cmd_history(args: argparse.Namespace) -> int:
    """The history's good lines; a bad line is named on stderr (file:line, what is wrong) and left out, exit 0."""
    from cosmos_assets.runs.history import read_history

    path = layout_from_env().history_log
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
        print(
            f"{record.when:%Y-%m-%d %H:%M:%S} {record.status:<17} {record.stage:<8} {record.prompt} ({record.shot}) on {record.host}: "
            f"{record.total_seconds:.1f}s, {record.gpu_seconds / 3600.0:.3f} GPU h{cost}"
        )
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run a recorded run again from its record or its clip's stamped recipe, into a new folder (runs/reproduce.py)."""
    from cosmos_assets.defs.resources import gpu_host_from_settings
    from cosmos_assets.machines.docker_engine import ContainerRemovedError, DockerWentAwayError
    from cosmos_assets.machines.job import HostLinkLostError
    from cosmos_assets.runs.options import RunOptions
    from cosmos_assets.runs.reproduce import from_clip, from_run_id, reproduce
    from cosmos_assets.runs.stage import InferenceFailed, RunTerminated

    settings = settings_from_env()
    layout = ProjectLayout(root=settings.root)
    target = args.target
    original = from_clip(layout, Path(target)) if target.endswith(".mp4") else from_run_id(layout, target)
    host = gpu_host_from_settings(settings)
    machines = []

    def machine_for(backend):
        machines.append(host.machine_for(backend.name))
        return machines[-1]

    try:
        options = RunOptions(
            silence_minutes=settings.model_silence_minutes, gpu_price_per_hour=settings.gpu_price_per_hour
        )
        done = reproduce(layout, machine_for, original, anyway=args.anyway, options=options)
    except InferenceFailed as error:  # the model failed: its first line and where its log is kept
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    except (HostLinkLostError, DockerWentAwayError, ContainerRemovedError, RunTerminated) as error:  # the host's doing
        print(f"error: {(str(error).splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
        return 1
    finally:
        for machine in machines:
            machine.close()
    print(done.summary())
    return 0
