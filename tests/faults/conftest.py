"""Shared fixtures of the fault suite: a fault-injecting proxy in front of the session's real sshd.

- ``fault_proxy``: a :class:`~tests.faults.fault_proxy.FaultProxy` to the session ``sshd`` (one per test, stopped
  after it). Its ``known_hosts`` attribute is a known_hosts file for the proxy's address, so host keys stay checked.
- ``proxy_target``: the :class:`~cosmos_assets.machines.ssh_target.SshTarget` reaching the sshd through the proxy.
- :func:`proxied_link`: an :class:`~cosmos_assets.machines.ssh_link.SshLink` over it whose reconnect backoff is
  ``BACKOFF_SCALE`` of the real one (1, 2, 4 s ... become 0.1, 0.2, 0.4 s), so budgets are spent in test time.
- :func:`proxied_host_fields`: ``SshGpuHost`` fields of a host reached through the proxy (for Dagster-level tests).
- ``preview_host`` (from tests/integration/test_durable_runs.py): ``SshGpuHost`` fields of a host with only a
  Dockerfile, running the preview backend in docker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.machines.ssh_target import SshTarget
from tests.faults.fault_proxy import FaultProxy
from tests.infra.sshd import SshServer
from tests.integration.test_durable_runs import preview_host

__all__ = [
    "BACKOFF_SCALE",
    "fault_proxy",
    "preview_host",
    "proxied_host_fields",
    "proxied_link",
    "proxy_target",
    "scaled_sleep",
    "target_through",
]

BACKOFF_SCALE = 0.1


@pytest.fixture
def fault_proxy(sshd: SshServer, tmp_path: Path) -> Iterator[FaultProxy]:
    proxy = FaultProxy(sshd.host, sshd.port).start()
    proxy.known_hosts = tmp_path / "proxy_known_hosts"
    proxy.known_hosts.write_text(f"[127.0.0.1]:{proxy.port} {sshd.host_pubkey}\n")
    try:
        yield proxy
    finally:
        proxy.stop()


def target_through(proxy: FaultProxy, sshd: SshServer, folder: Path) -> SshTarget:
    """The sshd's target with the proxy's address (and a known_hosts naming the sshd's key at that address)."""
    return SshTarget(
        host="127.0.0.1",
        port=proxy.port,
        user=sshd.user,
        key_file=sshd.key_path,
        known_hosts=proxy.known_hosts,
        ssh_config=folder / "no-ssh-config",
        allow_agent=False,
    )


@pytest.fixture
def proxy_target(fault_proxy: FaultProxy, sshd: SshServer, tmp_path: Path) -> SshTarget:
    return target_through(fault_proxy, sshd, tmp_path)


def scaled_sleep(seconds: float) -> None:
    time.sleep(seconds * BACKOFF_SCALE)


def proxied_link(target: SshTarget, reconnect_attempts: int = 6, label: str = "ssh@faulty-host") -> SshLink:
    return SshLink(target, label, reconnect_attempts, sleep=scaled_sleep)


def proxied_host_fields(proxy: FaultProxy, sshd: SshServer, folder: Path, **fields: object) -> dict[str, object]:
    """``SshGpuHost`` connection fields of the sshd reached through ``proxy``; ``fields`` add or override."""
    return {
        "host": "127.0.0.1",
        "port": proxy.port,
        "user": sshd.user,
        "ssh_key": str(sshd.key_path),
        "known_hosts": str(proxy.known_hosts),
        "ssh_config": str(folder / "no-ssh-config"),
        **fields,
    }
