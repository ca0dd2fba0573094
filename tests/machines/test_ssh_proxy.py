"""ProxyJump and ProxyCommand for real, through the test sshd; and OpenSSH reaching the host the same way.

The test sshd allows TCP forwarding (OpenSSH's default), so it serves as its own jump host. The jump host is
named ``localhost`` and the target ``127.0.0.1``, so known_hosts can tell them apart.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from cosmos_assets.machines.ssh_connect import HostKeyChangedError, HostKeyUnknownError, connect
from cosmos_assets.machines.ssh_link import HostUnreachableError, SshLink
from cosmos_assets.machines.ssh_target import SshTarget
from tests.infra.sshd import SshServer, keygen

pytestmark = pytest.mark.integration

RELAY = """\
import os, socket, sys, threading
with open(sys.argv[3], "a") as log:
    log.write(" ".join(sys.argv[1:3]) + "\\n")
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while data := os.read(0, 65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    os.write(1, data)
"""


def _config(tmp_path: Path, sshd: SshServer, extra: str) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(
        f"Host jumpbox\n  HostName localhost\n  Port {sshd.port}\n  User root\n  IdentityFile {sshd.key_path}\n"
        f"Host behind-jump\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n  IdentityFile {sshd.key_path}\n"
        f"  ProxyJump jumpbox\n{extra}"
    )
    return path


def _known_hosts(tmp_path: Path, sshd: SshServer, jump_key: str | None = None) -> Path:
    path = tmp_path / "known_hosts"
    lines = [sshd.known_hosts_line]
    if jump_key is not None:
        lines.append(f"[localhost]:{sshd.port} {jump_key}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _openssh(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([argv[0], "-o", "BatchMode=yes", *argv[1:]], capture_output=True, text=True, timeout=60)


def test_proxy_jump_goes_through_the_hop_and_openssh_goes_the_same_way(sshd: SshServer, tmp_path: Path) -> None:
    target = SshTarget(
        host="behind-jump",
        ssh_config=_config(tmp_path, sshd, ""),
        known_hosts=_known_hosts(tmp_path, sshd, sshd.host_pubkey),
        allow_agent=False,
    )
    client = connect(target)
    try:
        assert isinstance(client.get_transport().sock, paramiko.Channel)  # SSH inside the hop's direct-tcpip channel
        link = SshLink(target, "behind-jump", connect_fn=lambda _t: client)
        assert link.exec(["echo", "through the jump"]) == (0, "through the jump\n", "")
    finally:
        client.close()
    done = _openssh(target.openssh_argv(["echo", "openssh too"]))
    assert (done.returncode, done.stdout) == (0, "openssh too\n"), done.stderr


def test_the_jump_host_key_is_checked_as_strictly_as_the_target(sshd: SshServer, tmp_path: Path) -> None:
    config = _config(tmp_path, sshd, "")
    unknown = SshTarget(
        host="behind-jump", ssh_config=config, known_hosts=_known_hosts(tmp_path, sshd), allow_agent=False
    )
    with pytest.raises(HostKeyUnknownError, match=rf"Host key of \[localhost\]:{sshd.port} is not in"):
        connect(unknown)
    impostor = " ".join(keygen(tmp_path / "impostor", "impostor").split()[:2])
    changed = SshTarget(
        host="behind-jump",
        ssh_config=config,
        known_hosts=_known_hosts(tmp_path, sshd, impostor),
        allow_agent=False,
        trust_on_first_use=True,
    )
    with pytest.raises(HostKeyChangedError, match="HOST KEY CHANGED for \\[localhost\\]"):
        connect(changed)


def test_proxy_command_runs_as_the_socket_with_tokens_as_separate_arguments(sshd: SshServer, tmp_path: Path) -> None:
    relay = tmp_path / "relay with space.py"
    relay.write_text(RELAY)
    log = tmp_path / "relay.log"
    config = _config(
        tmp_path,
        sshd,
        f"Host via-command\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.key_path}\n"
        f"  ProxyCommand {sys.executable} '{relay}' %h %p '{log}'\n",
    )
    target = SshTarget(
        host="via-command", ssh_config=config, known_hosts=_known_hosts(tmp_path, sshd), allow_agent=False
    )
    link = SshLink(target, "via-command")
    try:
        assert link.exec(["echo", "through the command"])[:2] == (0, "through the command\n")
    finally:
        link.close()
    assert log.read_text().splitlines() == [f"127.0.0.1 {sshd.port}"]
    done = _openssh(target.openssh_argv(["echo", "openssh too"]))
    assert (done.returncode, done.stdout) == (0, "openssh too\n"), done.stderr
    assert log.read_text().splitlines() == [f"127.0.0.1 {sshd.port}"] * 2


def test_a_failing_proxy_command_is_a_clear_connection_error(sshd: SshServer, tmp_path: Path) -> None:
    config = _config(tmp_path, sshd, "Host broken\n  HostName 127.0.0.1\n  ProxyCommand /nonexistent/relay %h %p\n")
    link = SshLink(SshTarget(host="broken", ssh_config=config, known_hosts=_known_hosts(tmp_path, sshd)), "broken")
    with pytest.raises(
        HostUnreachableError, match="cannot connect to broken .*ProxyCommand for broken could not start"
    ):
        link.exec(["true"])
