"""A private Docker engine for tests, beside any engine already running on the machine.

Recipe: /work/shared/notes/real-infra.md ("A private Docker engine"). Own data-root,
exec-root, socket and pidfile; `--bridge none --iptables=false` keeps it off the other
engine's network (containers get no network, which the tests do not need). The PATH it
starts with holds the stand-in `nvidia-container-runtime-hook`, so GPU requests are accepted.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

from tests.infra.nvidia import write_runtime_hook
from tests.infra.sshd import InfraError, _pid_alive

log = logging.getLogger(__name__)

DOCKERD_BIN = "/usr/sbin/dockerd"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass
class DockerDaemon:
    root: Path
    socket_path: Path
    pid: int
    log_path: Path
    bin_dir: Path  # on dockerd's PATH: the runtime-hook stand-in
    start_seconds: float
    proc: subprocess.Popen | None = field(default=None, repr=False)  # None if not our child

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    def client(self, timeout: int = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout)

    def remove_all_containers(self) -> int:
        client = self.client()
        try:
            containers = client.containers.list(all=True)
            for c in containers:
                c.remove(force=True)
            return len(containers)
        finally:
            client.close()

    def stop(self) -> None:
        if _pid_alive(self.pid):
            try:
                self.remove_all_containers()
            except docker.errors.DockerException as exc:
                log.warning("could not remove leftover containers: %s", exc)
            os.kill(self.pid, signal.SIGTERM)
            if not self._wait_exit(STOP_TIMEOUT_S):
                os.kill(self.pid, signal.SIGKILL)
                self._wait_exit(10)
        _unmount_under(self.root)

    def _wait_exit(self, timeout: float) -> bool:
        if self.proc is not None:  # our child: reap it, else it lingers as a zombie
            try:
                self.proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(self.pid):
            time.sleep(0.1)
        return not _pid_alive(self.pid)


def other_engines() -> list[str]:
    """Command lines of dockerd processes already running (we coexist with them)."""
    out = subprocess.run(["pgrep", "-a", "-x", "dockerd"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def _unmount_under(root: Path) -> None:
    """Lazy-unmount anything a dead engine left mounted under `root` (overlay, shm)."""
    prefix = str(root.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def _wait_ready(proc: subprocess.Popen, sock: Path, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfraError(f"dockerd exited with {proc.returncode} while starting; log:\n{_log_tail(log_path)}")
        if sock.exists():
            try:
                c = docker.DockerClient(base_url=f"unix://{sock}", timeout=5)
                try:
                    if c.ping():
                        return
                finally:
                    c.close()
            except docker.errors.DockerException:
                pass
        time.sleep(0.1)
    proc.kill()
    raise InfraError(f"dockerd not ready within {READY_TIMEOUT_S}s; log:\n{_log_tail(log_path)}")


def start_dockerd(root: Path) -> DockerDaemon:
    """Start a private dockerd under `root` (keep the path short: the socket path is <108 bytes)."""
    if shutil.which(DOCKERD_BIN) is None:
        raise InfraError(f"{DOCKERD_BIN} missing: run .ci/install-system-deps.sh")
    if os.geteuid() != 0:
        raise InfraError("dockerd needs root")
    root.mkdir(parents=True, exist_ok=True)
    others = other_engines()
    if others:
        log.info("another dockerd runs on this machine; starting a private one beside it: %s", others)
    bin_dir = root / "bin"
    write_runtime_hook(bin_dir)
    sock = root / "docker.sock"
    if len(str(sock)) > 100:
        raise InfraError(f"socket path too long for a unix socket: {sock}")
    log_path = root / "dockerd.log"
    cmd = [
        DOCKERD_BIN,
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(root / "exec"),
        "--host",
        f"unix://{sock}",
        "--pidfile",
        str(root / "dockerd.pid"),
        "--bridge",
        "none",
        "--iptables=false",
        "--ip-masq=false",
    ]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
    env.pop("DOCKER_HOST", None)
    t0 = time.monotonic()
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True, stdin=subprocess.DEVNULL
        )
    _wait_ready(proc, sock, log_path)
    return DockerDaemon(
        root=root,
        socket_path=sock,
        pid=proc.pid,
        log_path=log_path,
        bin_dir=bin_dir,
        start_seconds=time.monotonic() - t0,
        proc=proc,
    )
