"""``cosmos-assets`` subcommands about the GPU hosts: a shell on one (the seed's ssh_lambda.sh), the pool's state, and
their resident model services (docs/serving.md)."""

from __future__ import annotations

import argparse
import json
import os

from cosmos_assets.cli.common import settings_from_env
from cosmos_assets.machines.job import HostNotReadyError


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


def cmd_service(args: argparse.Namespace) -> int:
    """The resident model services on the SSH hosts (docs/serving.md): ``status`` lists them, ``stop`` stops them."""
    from cosmos_assets.defs.resources import gpu_host_from_settings
    from cosmos_assets.machines import ssh_served

    members = [m for m in gpu_host_from_settings(settings_from_env()).members() if hasattr(m, "host_settings")]
    if args.host:
        members = [m for m in members if m.label == args.host]
        if not members:
            raise ValueError(f"--host {args.host}: no SSH host of that name (see `cosmos-assets hosts`)")
    try:
        for member in members:
            machine = member.machine_for("cosmos3") if member.has_model("cosmos3") else member.machine()
            if args.action == "stop":
                stopped = machine.stop_service(print)
                print(f"{member.label}: {len(stopped)} model service(s) stopped")
            else:
                services = ssh_served.services(machine)
                print(
                    f"{member.label}: "
                    + (", ".join(f"{name} ({state})" for name, state in services) or "no model service")
                )
            machine.close()
    except RuntimeError as error:  # docker on the host refused
        raise HostNotReadyError(str(error)) from None
    return 0
