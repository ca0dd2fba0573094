"""``cosmos-assets`` subcommands about the GPU hosts: a shell on one (the seed's ssh_lambda.sh) and the pool's state."""

from __future__ import annotations

import argparse
import json
import os

from cosmos_assets.cli.common import settings_from_env


def ssh_argv(command: list[str]) -> list[str]:
    """The OpenSSH client argv for the GPU host, from the same settings as COSMOS_HOST=ssh (ssh_lambda.sh)."""
    from cosmos_assets.defs.resources import ssh_target_from_settings

    return ssh_target_from_settings(settings_from_env()).openssh_argv(command)


def cmd_ssh(args: argparse.Namespace) -> int:
    argv = ssh_argv(list(args.command))
    os.execvp(argv[0], argv)  # replaces this process; no shell in between
    return 0  # not reached


def cmd_hosts(args: argparse.Namespace) -> int:
    """The hosts runs may go to (COSMOS_HOSTS_FILE, else the single host) and their state now."""
    from cosmos_assets.defs.resources import gpu_host_from_settings
    from cosmos_assets.defs.resources.status import probe_all, table

    statuses = probe_all(gpu_host_from_settings(settings_from_env()).members())
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
