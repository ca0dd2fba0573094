"""Which process orchestrates a run, and whether that process is provably gone.

A run's worker is named by host, pid, the kernel's boot id, the process's start time (clock ticks since
boot) and its pid namespace, so a reused pid or a rebooted machine (power loss) is never mistaken for the worker
that started the run. "Provably dead" needs the worker to be on this host: a worker on another machine is never
judged. A worker in a container (a run worker of the DockerRunLauncher) has its own pid namespace, and with host
networking the host's name: its pid means nothing here. It is judged only from the host's own pid namespace, which
sees every process (gone when no process of its namespace has its pid and start time); from another container it is
never judged (Dagster's run monitoring asks the Docker engine instead; docs/team.md).
Plain Python (no Dagster); the Dagster edge (:mod:`cosmos_assets.defs.sensors.dead_runs`) stores it in a run tag.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_HOST_PID_NAMESPACE = "4026531836"  # the initial pid namespace's inode (PROC_PID_INIT_INO): it sees every process


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _namespace_of(link: str) -> str:
    return link.partition("[")[2].rstrip("]")  # 'pid:[4026531836]' -> '4026531836'


def _pid_namespace() -> str:
    """The inode of this process's pid namespace; '' where it cannot be read (no procfs)."""
    try:
        return _namespace_of(os.readlink("/proc/self/ns/pid"))
    except OSError:
        return ""


def _alive_in_namespace(namespace: str, pid: int, start: str) -> bool | None:
    """Whether the process ``pid`` (as numbered inside ``namespace``) with start time ``start`` still runs; None when
    this process cannot see every process (it is not in the host's pid namespace, or /proc refuses it a look)."""
    if _pid_namespace() != _HOST_PID_NAMESPACE:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            nspids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if len(nspids) == 1:
                continue  # in our own (the host's) namespace, whatever /proc lets us read of it
            if _namespace_of(os.readlink(entry / "ns" / "pid")) != namespace:
                continue
        except FileNotFoundError:
            continue  # exited while we looked
        except OSError:
            return None  # a nested process /proc will not name the namespace of: we cannot judge
        inner = nspids[-1] if nspids else ""
        if inner != str(pid):
            continue
        ticks = _start_ticks(int(entry.name))  # counted from boot: the same in every namespace
        if ticks is not None and (not start or not ticks or ticks == start):
            return True
    return False


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
    pid_namespace: str = ""  # '' in records written before it was kept: judged as in ours

    @classmethod
    def current(cls) -> Worker:
        pid = os.getpid()
        return cls(
            host=socket.gethostname(),
            pid=pid,
            boot_id=_boot_id(),
            start=_start_ticks(pid) or "",
            pid_namespace=_pid_namespace(),
        )

    def to_text(self) -> str:
        text = f"{self.host}|{self.pid}|{self.boot_id}|{self.start}"
        return f"{text}|{self.pid_namespace}" if self.pid_namespace else text

    @classmethod
    def from_text(cls, text: str) -> Worker | None:
        parts = text.split("|")
        if len(parts) not in (4, 5) or not parts[1].isdigit():
            return None
        return cls(
            host=parts[0],
            pid=int(parts[1]),
            boot_id=parts[2],
            start=parts[3],
            pid_namespace=parts[4] if len(parts) == 5 else "",
        )

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def provably_dead(self) -> bool:
        """True only when this worker is on this host and is certainly gone (exited, killed, or the host rebooted)."""
        if self.host != socket.gethostname():
            return False
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return True  # the machine restarted since (power loss, reboot): every process of that boot is gone
        ours = _pid_namespace()
        if self.pid_namespace and ours and self.pid_namespace != ours:  # a container's process: its pid is not ours
            return _alive_in_namespace(self.pid_namespace, self.pid, self.start) is False
        start = _start_ticks(self.pid)
        if start is None:
            return True
        return bool(self.start and start and start != self.start)  # the pid now belongs to another process
