"""Which process orchestrates a run, and whether that process is provably gone.

A run's worker is named by host, pid, the kernel's boot id and the process's start time (clock ticks since
boot), so a reused pid or a rebooted machine (power loss) is never mistaken for the worker that started the
run. "Provably dead" needs the worker to be on this host: a worker on another machine is never judged.
Plain Python (no Dagster); the Dagster edge (:mod:`cosmos_assets.dead_runs`) stores it in a run tag.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), '' where /proc is absent, None if no such pid.

    A zombie (killed, not yet reaped by its parent) counts as gone.
    """
    if not Path("/proc/self/stat").exists():  # no procfs (macOS): whether the pid exists is all we can know
        return _pid_exists_portable(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _pid_exists_portable(pid)
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _pid_exists_portable(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""
    return ""


@dataclass(frozen=True)
class Worker:
    """The process that orchestrates a run."""

    host: str
    pid: int
    boot_id: str
    start: str

    @classmethod
    def current(cls) -> "Worker":
        pid = os.getpid()
        return cls(host=socket.gethostname(), pid=pid, boot_id=_boot_id(), start=_start_ticks(pid) or "")

    def to_text(self) -> str:
        return f"{self.host}|{self.pid}|{self.boot_id}|{self.start}"

    @classmethod
    def from_text(cls, text: str) -> "Worker | None":
        parts = text.split("|")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        return cls(host=parts[0], pid=int(parts[1]), boot_id=parts[2], start=parts[3])

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def provably_dead(self) -> bool:
        """True only when this worker is on this host and is certainly gone (exited, killed, or the host rebooted)."""
        if self.host != socket.gethostname():
            return False
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return True  # the machine restarted since (power loss, reboot): every process of that boot is gone
        start = _start_ticks(self.pid)
        if start is None:
            return True
        return bool(self.start and start and start != self.start)  # the pid now belongs to another process
