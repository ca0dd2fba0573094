"""A throwaway OpenSSH server on 127.0.0.1 and a free high port, with host-key checks kept on.

Recipe: /work/shared/notes/real-infra.md ("A throwaway sshd on a high port").
`SetEnv DOCKER_HOST=...` makes `docker system dial-stdio` (what the Docker SDK runs over
SSH) reach a private engine; `SetEnv PATH=...` puts test doubles (fake `nvidia-smi`) first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD_BIN = "/usr/sbin/sshd"
DEFAULT_SESSION_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_TIMEOUT_S = 20.0


class InfraError(RuntimeError):
    """A piece of test infrastructure could not be started; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> str:
    """Create an ed25519 key pair without passphrase; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, capture_output=True
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry.name))
    return kids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    """True while pid runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    key_path: Path
    known_hosts: Path
    host_pubkey: str  # "ssh-ed25519 AAAA..." (no comment)
    log_path: Path
    config_path: Path
    pid_path: Path
    root: Path
    docker_host: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return int(self.pid_path.read_text().strip())

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_pubkey}"

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listening daemon)."""
        return [p for p in _children(self.pid) if _comm(p) == "sshd"]

    def kill_sessions(self) -> int:
        """Drop every open SSH connection to this server, as if the link died.

        Kills (SIGKILL) the per-connection sshd processes and their sshd children; the
        listening daemon and the user's programs (e.g. a container started via Docker)
        stay, so a later reconnect works. Returns the number of connections dropped.
        """
        sessions = self.session_pids()
        victims: list[int] = []
        for sess in sessions:
            victims.append(sess)
            victims += [c for c in _children(sess) if _comm(c) == "sshd"]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(sessions)

    def stop(self) -> None:
        try:
            pid = self.pid
        except (OSError, ValueError):
            return
        self.kill_sessions()
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _write_config(root: Path, port: int, host_key: Path, authorized: Path, pid_path: Path, env: dict[str, str]) -> Path:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        f"PidFile {pid_path}",
        "StrictModes no",
        "UsePAM no",
        "LogLevel VERBOSE",
        "MaxSessions 64",
        "MaxStartups 64",
        "ClientAliveInterval 0",
        "Subsystem sftp internal-sftp",
    ]
    if env:
        lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()))
    cfg = root / "sshd_config"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _wait_listening(port: int, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise InfraError(f"sshd did not answer on 127.0.0.1:{port} within {READY_TIMEOUT_S}s; log:\n{tail}")


def start_sshd(root: Path, docker_host: str | None = None, path_prepend: list[Path] | None = None) -> SshServer:
    """Start sshd under `root` (a fresh directory). Raises InfraError with the reason."""
    if not Path(SSHD_BIN).exists():
        raise InfraError(f"{SSHD_BIN} missing: run .ci/install-system-deps.sh")
    if os.geteuid() != 0:
        raise InfraError("the test sshd logs in as root and must be started by root")
    root.mkdir(parents=True, exist_ok=True)
    host_key = root / "hostkey"
    user_key = root / "userkey"
    host_pub = keygen(host_key, "cosmos-test-host")
    user_pub = keygen(user_key, "cosmos-test-user")
    authorized = root / "authorized_keys"
    authorized.write_text(user_pub + "\n")
    authorized.chmod(0o600)
    env: dict[str, str] = {}
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    if path_prepend:
        env["PATH"] = ":".join([*map(str, path_prepend), DEFAULT_SESSION_PATH])
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir
    log_path = root / "sshd.log"
    pid_path = root / "sshd.pid"
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = free_port()
        cfg = _write_config(root, port, host_key, authorized, pid_path, env)
        check = subprocess.run([SSHD_BIN, "-t", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise InfraError(f"sshd rejects its config: {check.stderr.strip()}")
        proc = subprocess.run([SSHD_BIN, "-f", str(cfg), "-E", str(log_path)], capture_output=True, text=True)
        if proc.returncode != 0:
            last_error = proc.stderr.strip()
            continue
        try:
            _wait_listening(port, log_path)
        except InfraError as exc:
            last_error = str(exc)
            continue
        known_hosts = root / "known_hosts"
        key_no_comment = " ".join(host_pub.split()[:2])
        server = SshServer(
            host="127.0.0.1",
            port=port,
            user="root",
            key_path=user_key,
            known_hosts=known_hosts,
            host_pubkey=key_no_comment,
            log_path=log_path,
            config_path=cfg,
            pid_path=pid_path,
            root=root,
            docker_host=docker_host,
            extra_env=env,
        )
        known_hosts.write_text(server.known_hosts_line + "\n")
        return server
    raise InfraError(f"sshd failed to start: {last_error}")
