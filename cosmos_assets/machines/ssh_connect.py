"""Opening a verified SSH connection: the host-key policy and the fast transport.

- Host keys are checked against known_hosts. An unknown host is refused with the exact commands to check and
  trust its key, or recorded when ``trust_on_first_use`` is asked for; a changed key is always refused.
- The transport prefers AES-GCM, has large windows and TCP_NODELAY (see :func:`fast_transport`).
- ``ProxyCommand`` runs as the socket (:class:`paramiko.ProxyCommand`); ``ProxyJump`` connects to the hop first
  (verified the same way) and opens a ``direct-tcpip`` channel to the target as the socket.
- A failed connect is said once, by whoever called :func:`connect` (the exception): paramiko's transport thread
  also logs it at ERROR with a full traceback (the ``paramiko.transport`` logger), which printed a traceback on every
  failed reconnect. Those records of a transport still connecting are lowered to DEBUG (still there for whoever
  asks for paramiko's debug log); once connected, its records are left as paramiko makes them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shlex
import socket
import threading
import weakref
from pathlib import Path

import paramiko

from cosmos_assets.machines.ssh_target import ResolvedTarget, SshTarget

_logger = logging.getLogger(__name__)

# Ciphers first in this order when the server offers them (AEAD: one pass, no separate MAC).
# paramiko has no chacha20-poly1305; AES-GCM is hardware-accelerated on x86 and ARM.
PREFERRED_CIPHERS: tuple[str, ...] = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
WINDOW_SIZE = 64 * 1024 * 1024  # per-channel receive window: room for high-latency links
MAX_PACKET_SIZE = 256 * 1024  # largest channel packet we accept from the server


_CONNECTING: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # transports (each its own thread) not yet connected


class _QuietWhileConnecting(logging.Filter):
    """Lowers to DEBUG what a transport logs from its own thread while :func:`connect` waits for it: the same
    failure reaches connect's caller as an exception, said there in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and threading.current_thread() in _CONNECTING:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


logging.getLogger("paramiko.transport").addFilter(_QuietWhileConnecting())


class HostKeyError(paramiko.SSHException):
    """Base class of host-key verification failures."""


class HostKeyUnknownError(HostKeyError):
    """The server's host key is not in known_hosts; the message says how to trust it."""


class HostKeyChangedError(HostKeyError):
    """The server presented a different key than known_hosts records: always refused."""


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint, e.g. ``SHA256:abc...`` (as ``ssh-keygen -lf`` prints)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _unknown_host_help(target: ResolvedTarget, key: paramiko.PKey) -> str:
    scan = f"ssh-keyscan -p {target.port} -t {key.get_name()} {shlex.quote(target.hostname)}"
    via = f" (reached through {target.jump.name}: run ssh-keyscan on that host)" if target.jump is not None else ""
    return (
        f"Host key of {target.known_hosts_name} is not in {target.known_hosts}: refusing to connect{via}.\n"
        f"The server presented {key.get_name()} {fingerprint(key)}.\n"
        "Check that fingerprint with the host's owner (on the host: "
        f"ssh-keygen -lf /etc/ssh/ssh_host_{key.get_name().removeprefix('ssh-')}_key.pub), then trust it:\n"
        f"  {scan} | ssh-keygen -lf -      # must print {fingerprint(key)}\n"
        f"  {scan} >> {shlex.quote(str(target.known_hosts))}\n"
        "or connect once with trust_on_first_use=True, which records the key in that file."
    )


def _changed_host_help(target: ResolvedTarget, error: paramiko.BadHostKeyException) -> str:
    return (
        f"HOST KEY CHANGED for {target.known_hosts_name}: {target.known_hosts} records "
        f"{error.expected_key.get_name()} {fingerprint(error.expected_key)}, the server presented "
        f"{error.key.get_name()} {fingerprint(error.key)}. Refusing to connect (someone may be "
        "intercepting the connection). If the host was really re-installed, verify the new "
        f"fingerprint with its owner, then remove the old entry: ssh-keygen -R "
        f"{shlex.quote(target.known_hosts_name)} -f {shlex.quote(str(target.known_hosts))}"
    )


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host: refuse with help, or (TOFU) append the key to the known_hosts file."""

    def __init__(self, target: ResolvedTarget) -> None:
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.target.trust_on_first_use:
            raise HostKeyUnknownError(_unknown_host_help(self.target, key))
        append_known_host(self.target.known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        _logger.warning(
            "trust on first use: recorded %s %s %s in %s",
            hostname,
            key.get_name(),
            fingerprint(key),
            self.target.known_hosts,
        )


def append_known_host(path: Path, hostname: str, key: paramiko.PKey) -> None:
    """Add one ``hostname keytype base64`` line to known_hosts (created 0600, its folder 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        needs_newline = os.fstat(fd).st_size > 0 and not path.read_bytes().endswith(b"\n")
        os.write(fd, (b"\n" if needs_newline else b"") + line.encode())
    finally:
        os.close(fd)


def fast_transport(sock: object, **kwargs: object) -> paramiko.Transport:
    """paramiko Transport with large windows and AES-GCM preferred when the server has it.

    TCP_NODELAY: SSH does its own packet batching; with Nagle on, a small request sent right after
    another (pipelined stats, a channel request) waits for the peer's delayed ACK (~40 ms).
    """
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(
        sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE, **kwargs
    )  # type: ignore[arg-type]
    options = transport.get_security_options()
    available = list(options.ciphers)
    options.ciphers = [c for c in PREFERRED_CIPHERS if c in available] + [
        c for c in available if c not in PREFERRED_CIPHERS
    ]
    return transport


class SshClient(paramiko.SSHClient):
    """paramiko's client that also closes the hop it was reached through (ProxyJump) when it closes."""

    def __init__(self) -> None:
        super().__init__()
        self.via: paramiko.SSHClient | None = None

    def close(self) -> None:
        super().close()
        if self.via is not None:
            self.via.close()
            self.via = None


def _socket_for(target: ResolvedTarget) -> tuple[object | None, paramiko.SSHClient | None]:
    """The socket to run SSH over: None (a plain TCP connection), a ProxyCommand, or a channel through the hop."""
    if target.proxy_command is not None:
        try:
            return paramiko.ProxyCommand(shlex.join(target.proxy_command)), None
        except OSError as error:
            raise paramiko.SSHException(
                f"ProxyCommand for {target.name} could not start ({error}): check the command in the ssh config"
            ) from error
    if target.jump is None:
        return None, None
    hop = connect(target.jump)
    try:
        transport = hop.get_transport()
        assert transport is not None
        channel = transport.open_channel(
            "direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0), timeout=target.connect_timeout_s
        )
    except paramiko.ChannelException as error:
        hop.close()
        raise paramiko.SSHException(
            f"the ProxyJump hop {target.jump.name} could not reach {target.address} ({error.text}); "
            "check the target's address and that the hop allows TCP forwarding"
        ) from error
    except BaseException:
        hop.close()
        raise
    return channel, hop


def connect(target: SshTarget | ResolvedTarget) -> paramiko.SSHClient:
    """Open a verified SSH connection. Raises HostKeyUnknownError / HostKeyChangedError, or paramiko/OS errors."""
    resolved = target.resolve() if isinstance(target, SshTarget) else target
    sock, hop = _socket_for(resolved)
    client = SshClient()
    client.via = hop
    if resolved.known_hosts.is_file():
        client.load_host_keys(str(resolved.known_hosts))
    client.set_missing_host_key_policy(KnownHostsPolicy(resolved))
    passphrase = os.environ.get(resolved.key_passphrase_env) or None
    started: list[paramiko.Transport] = []

    def quiet_transport(sock: object, **kwargs: object) -> paramiko.Transport:
        transport = fast_transport(sock, **kwargs)
        started.append(transport)
        _CONNECTING.add(transport)
        return transport

    try:
        client.connect(
            hostname=resolved.hostname,
            port=resolved.port,
            username=resolved.user,
            key_filename=[str(k) for k in resolved.key_files] or None,
            passphrase=passphrase,
            look_for_keys=not resolved.key_files,
            allow_agent=resolved.allow_agent,
            timeout=resolved.connect_timeout_s,
            banner_timeout=resolved.connect_timeout_s,
            auth_timeout=resolved.connect_timeout_s,
            sock=sock,  # type: ignore[arg-type]
            transport_factory=quiet_transport,  # type: ignore[arg-type]
        )
    except paramiko.BadHostKeyException as error:
        client.close()
        raise HostKeyChangedError(_changed_host_help(resolved, error)) from None
    except BaseException:
        client.close()
        if sock is not None and hasattr(sock, "close"):
            sock.close()
        raise
    finally:
        for transport in started:
            _CONNECTING.discard(transport)
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(resolved.keepalive_s)
    via = f" via {resolved.jump.name}" if resolved.jump else " via ProxyCommand" if resolved.proxy_command else ""
    _logger.info(
        "ssh connected to %s@%s:%d%s (cipher %s)",
        resolved.user,
        resolved.hostname,
        resolved.port,
        via,
        transport.remote_cipher,
    )
    return client
