"""Verified, resumable, skip-if-same file transfer over SSH (paramiko). No Dagster here.

- `connect_ssh`: honours ``~/.ssh/config``, verifies host keys against known_hosts (an unknown
  host is refused with the exact command to trust it, or recorded with the explicit
  ``trust_on_first_use=True``; a changed key is always refused), keepalive, fast ciphers,
  large windows.
- `upload_files`: skips files whose remote copy has the same size and sha256 (one pipelined
  round of SFTP stats, then one remote command hashing every same-size remote), writes to
  ``<remote>.part`` (resuming a ``.part`` whose content is a prefix of the local file; a fresh
  large file goes over several SFTP channels at once), verifies the sha256 of what landed
  remotely (sync and hash in one command, started before the data so its shell start-up
  overlaps it), then renames into place.
- `download_tree`: into a temporary sibling folder, every file verified, then renamed into
  place; an existing destination is never overwritten (`move_aside` moves it first).

Throughput: paramiko's own `get`/`put` wait on small requests (32 KiB) and its prefetch has
quadratic bookkeeping (paramiko issue 2455). Here reads and writes are pipelined with our own
request window over paramiko's SFTP request layer, with the request size the server announces
(``limits@openssh.com``; OpenSSH allows ~256 KiB), falling back to 32 KiB. Downloads hash and
write in a thread so the reads never wait on the disk. Remote hashing uses OpenSSL when the host
has it (much faster than coreutils sha256sum), else sha256sum; paths are always arguments.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import getpass
import hashlib
import logging
import os
import secrets
import shlex
import socket
import queue
import stat as stat_mod
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_READ,
    CMD_STAT,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    int64,
)
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

DEFAULT_PASSPHRASE_ENV = "COSMOS_SSH_KEY_PASSPHRASE"
# Ciphers first in this order when the server offers them (AEAD: one pass, no separate MAC).
# paramiko has no chacha20-poly1305; AES-GCM is hardware-accelerated on x86 and ARM.
PREFERRED_CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
WINDOW_SIZE = 64 * 1024 * 1024  # per-channel receive window: room for high-latency links
MAX_PACKET_SIZE = 256 * 1024  # largest channel packet we accept from the server
FALLBACK_REQUEST_SIZE = 32 * 1024  # what every SFTP server must accept
MAX_REQUEST_SIZE = 252 * 1024  # upper bound even if a server announces more
IN_FLIGHT_BYTES = 16 * 1024 * 1024  # pipelined requests outstanding per file
HASH_BLOCK = 4 * 1024 * 1024
# A fresh upload of at least PARALLEL_MIN_BYTES goes over PARALLEL_CHANNELS SFTP channels at once
# (each channel has its own server window), in PARALLEL_BLOCK blocks handed out in file order.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
PARALLEL_CHANNELS = 4
PARALLEL_BLOCK = 8 * 1024 * 1024
DOWNLOAD_QUEUE_CHUNKS = 64  # chunks (up to 252 KiB each) read ahead of the download's disk writer
PROGRESS_INTERVAL_S = 1.0
REMOTE_CMD_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------- errors


class HostKeyError(paramiko.SSHException):
    """Base class of host-key verification failures."""


class HostKeyUnknownError(HostKeyError):
    """The server's host key is not in known_hosts; the message says how to trust it."""


class HostKeyChangedError(HostKeyError):
    """The server presented a different key than known_hosts records: always refused."""


class TransferVerificationError(IOError):
    """A transferred file's sha256 differs between the two ends."""


class RemoteCommandError(RuntimeError):
    """A helper command run over SSH (sha256sum, sync) failed."""


# --------------------------------------------------------------------------- models


class SshSettings(BaseModel):
    """How to reach a host. Fields left None come from ``~/.ssh/config`` (or `ssh_config`)."""

    model_config = ConfigDict(frozen=True)

    host: str = Field(description="host name, address, or an alias from the ssh config")
    port: int | None = None
    user: str | None = None
    key_file: Path | None = None
    key_passphrase_env: str = Field(
        default=DEFAULT_PASSPHRASE_ENV, description="name of the env var holding the key passphrase"
    )
    known_hosts: Path | None = Field(default=None, description="default ~/.ssh/known_hosts")
    ssh_config: Path | None = Field(default=None, description="default ~/.ssh/config if it exists")
    trust_on_first_use: bool = False
    allow_agent: bool = True
    keepalive_s: int = 15
    connect_timeout_s: float = 20.0


class ResolvedTarget(BaseModel):
    """The connection parameters after applying the ssh config. Holds no secret."""

    model_config = ConfigDict(frozen=True)

    hostname: str
    port: int
    user: str
    key_files: list[Path]
    known_hosts: Path

    @property
    def known_hosts_name(self) -> str:
        """The name under which OpenSSH and paramiko file this host in known_hosts."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


class FileTransfer(BaseModel):
    local: str
    remote: str
    size: int
    sha256: str
    bytes_sent: int
    skipped: bool
    resumed_from: int = 0
    seconds: float
    rate_mb_s: float | None = Field(description="MB/s (10^6) of bytes sent, None when skipped")


class TransferReport(BaseModel):
    direction: Literal["upload", "download"]
    files_sent: int = 0
    files_skipped: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    files: list[FileTransfer] = Field(default_factory=list)

    @property
    def rate_mb_s(self) -> float | None:
        return _rate(self.bytes_sent, self.seconds)

    def add(self, item: FileTransfer) -> None:
        self.files.append(item)
        if item.skipped:
            self.files_skipped += 1
        else:
            self.files_sent += 1
        self.bytes_sent += item.bytes_sent


def _rate(nbytes: int, seconds: float) -> float | None:
    return round(nbytes / seconds / 1e6, 2) if nbytes and seconds > 0 else None


# --------------------------------------------------------------------------- connecting


def _default_ssh_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh"


def resolve_target(settings: SshSettings) -> ResolvedTarget:
    """Apply the ssh config for `settings.host`; explicit settings win, like ssh's -p/-l/-i."""
    config_path = settings.ssh_config or _default_ssh_dir() / "config"
    entry: dict = {}
    if config_path.is_file():
        entry = paramiko.SSHConfig.from_path(str(config_path)).lookup(settings.host)
    hostname = entry.get("hostname", settings.host)
    port = settings.port or int(entry.get("port", 22))
    user = settings.user or entry.get("user") or getpass.getuser()
    if settings.key_file is not None:
        keys = [settings.key_file.expanduser()]
    else:
        keys = [Path(p).expanduser() for p in entry.get("identityfile", [])]
    known = (settings.known_hosts or _default_ssh_dir() / "known_hosts").expanduser()
    return ResolvedTarget(hostname=hostname, port=port, user=user, key_files=keys, known_hosts=known)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint, e.g. ``SHA256:abc...`` (as ``ssh-keygen -lf`` prints)."""
    import base64

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _unknown_host_help(target: ResolvedTarget, key: paramiko.PKey) -> str:
    scan = f"ssh-keyscan -p {target.port} -t {key.get_name()} {shlex.quote(target.hostname)}"
    return (
        f"Host key of {target.known_hosts_name} is not in {target.known_hosts}: refusing to connect.\n"
        f"The server presented {key.get_name()} {fingerprint(key)}.\n"
        "Check that fingerprint with the host's owner (on the host: "
        f"ssh-keygen -lf /etc/ssh/ssh_host_{key.get_name().removeprefix('ssh-')}_key.pub), then trust it:\n"
        f"  {scan} | ssh-keygen -lf -      # must print {fingerprint(key)}\n"
        f"  {scan} >> {shlex.quote(str(target.known_hosts))}\n"
        "or connect once with trust_on_first_use=True, which records the key in that file."
    )


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host: refuse with help, or (TOFU) append the key to the known_hosts file."""

    def __init__(self, target: ResolvedTarget, trust_on_first_use: bool) -> None:
        self.target = target
        self.tofu = trust_on_first_use

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.tofu:
            raise HostKeyUnknownError(_unknown_host_help(self.target, key))
        _append_known_host(self.target.known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("trust on first use: recorded %s %s %s in %s", hostname, key.get_name(),
                    fingerprint(key), self.target.known_hosts)


def _append_known_host(path: Path, hostname: str, key: paramiko.PKey) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        needs_newline = os.fstat(fd).st_size > 0 and not path.read_bytes().endswith(b"\n")
        os.write(fd, (b"\n" if needs_newline else b"") + line.encode())
    finally:
        os.close(fd)


def _fast_transport(sock: object, **kwargs: object) -> paramiko.Transport:
    """paramiko Transport with large windows and AES-GCM preferred when the server has it.

    TCP_NODELAY: SSH does its own packet batching; with Nagle on, a small request sent right after
    another (pipelined stats, a channel request) waits for the peer's delayed ACK (~40 ms).
    """
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE,
                                   default_max_packet_size=MAX_PACKET_SIZE, **kwargs)
    options = transport.get_security_options()
    available = list(options.ciphers)
    options.ciphers = [c for c in PREFERRED_CIPHERS if c in available] + [
        c for c in available if c not in PREFERRED_CIPHERS
    ]
    return transport


def connect_ssh(settings: SshSettings) -> paramiko.SSHClient:
    """Open a verified SSH connection. Raises HostKeyUnknownError / HostKeyChangedError."""
    target = resolve_target(settings)
    client = paramiko.SSHClient()
    if target.known_hosts.is_file():
        client.load_host_keys(str(target.known_hosts))
    client.set_missing_host_key_policy(_KnownHostsPolicy(target, settings.trust_on_first_use))
    passphrase = os.environ.get(settings.key_passphrase_env) or None
    try:
        client.connect(
            hostname=target.hostname,
            port=target.port,
            username=target.user,
            key_filename=[str(k) for k in target.key_files] or None,
            passphrase=passphrase,
            look_for_keys=not target.key_files,
            allow_agent=settings.allow_agent,
            timeout=settings.connect_timeout_s,
            banner_timeout=settings.connect_timeout_s,
            auth_timeout=settings.connect_timeout_s,
            transport_factory=_fast_transport,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyChangedError(
            f"HOST KEY CHANGED for {target.known_hosts_name}: {target.known_hosts} records "
            f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, the server presented "
            f"{exc.key.get_name()} {fingerprint(exc.key)}. Refusing to connect (someone may be "
            "intercepting the connection). If the host was really re-installed, verify the new "
            f"fingerprint with its owner, then remove the old entry: ssh-keygen -R "
            f"{shlex.quote(target.known_hosts_name)} -f {shlex.quote(str(target.known_hosts))}"
        ) from None
    except BaseException:
        client.close()
        raise
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(settings.keepalive_s)
    log.info("ssh connected to %s@%s:%d (cipher %s)", target.user, target.hostname, target.port,
             transport.remote_cipher)
    return client


# --------------------------------------------------------------------------- remote commands


def run_remote(transport: paramiko.Transport, argv: list[str],
               timeout: float = REMOTE_CMD_TIMEOUT_S) -> tuple[int, str, str]:
    """Run argv on the remote host (each word shell-quoted); returns (exit code, stdout, stderr)."""
    return finish_remote(start_remote(transport, argv, timeout))


def start_remote(transport: paramiko.Transport, argv: list[str],
                 timeout: float = REMOTE_CMD_TIMEOUT_S) -> paramiko.Channel:
    """Start argv on the remote host (each word shell-quoted); collect it with `finish_remote`."""
    chan = transport.open_session(timeout=timeout)
    try:
        chan.settimeout(timeout)
        chan.exec_command(shlex.join(argv))
    except BaseException:
        chan.close()
        raise
    return chan


def finish_remote(chan: paramiko.Channel) -> tuple[int, str, str]:
    """Wait for a command started by `start_remote`; returns (exit code, stdout, stderr)."""
    try:
        out = chan.makefile("rb").read()
        err = chan.makefile_stderr("rb").read()
        code = chan.recv_exit_status()
    finally:
        chan.close()
    return code, out.decode(errors="replace"), err.decode(errors="replace")


# Remote hashing runs as `sh -c SCRIPT sh ARG...`: paths are arguments, never part of the script.
# `h` hashes stdin with OpenSSL when the host has it (SHA-NI/AVX code: ~3x coreutils sha256sum on
# the benchmark machine), else with sha256sum; each file's digest is printed alone on a line.
_HASHER_SH = ('if openssl dgst -sha256 -r </dev/null >/dev/null 2>&1; then h() { openssl dgst -sha256 -r; }; '
              'else h() { sha256sum; }; fi; ')
_SHA256_SH = _HASHER_SH + 'o=$(h < "$1") || exit 2; printf "%s\\n" "${o%% *}"'
# sync and hash the same file at once; exit status is the hash's, a failed sync is only reported.
# It first waits for a "go" line on stdin: started before the data is sent (so the remote shell's
# start-up, e.g. a heavy ~/.bashrc, overlaps the transfer) and told to go once every write landed.
_SYNC_SHA256_SH = (_HASHER_SH + 'read -r go && [ "$go" = go ] || exit 3; '
                   'sync -- "$1" & s=$!; o=$(h < "$1") || exit 2; printf "%s\\n" "${o%% *}"; '
                   'wait "$s" || echo "remote sync failed" >&2')
# args: size1 path1 size2 path2 ...; first one line per file: "=" if it is a regular file of that
# size, else "-"; then per file its sha256 if it (still) has that size, else "-"
_SAME_SIZE_SHA256_SH = _HASHER_SH + (
    'k=s; for a; do if [ $k = s ]; then s=$a; k=f; else k=s; '
    'if [ -f "$a" ] && [ "$(wc -c < "$a")" -eq "$s" ]; then echo =; else echo -; fi; fi; done; '
    'k=s; for a; do if [ $k = s ]; then s=$a; k=f; else k=s; '
    'if [ -f "$a" ] && [ "$(wc -c < "$a")" -eq "$s" ] && o=$(h < "$a"); then printf "%s\\n" "${o%% *}"; '
    'else echo -; fi; fi; done'
)


def _sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "sh", *args]


def start_sha256(transport: paramiko.Transport, path: str) -> paramiko.Channel:
    """Start hashing a remote file; collect it with ``_sha256_result(path, finish_remote(chan))``."""
    return start_remote(transport, _sh(_SHA256_SH, path))


def remote_sha256(transport: paramiko.Transport, path: str) -> str:
    """sha256 of a remote file (path passed as an argument); RemoteCommandError if it fails."""
    return _sha256_result(path, finish_remote(start_sha256(transport, path)))


def _sha256_result(path: str, result: tuple[int, str, str]) -> str:
    code, out, err = result
    if code != 0 or not out:
        raise RemoteCommandError(f"sha256 of remote {path!r} failed ({code}): {err.strip()}")
    # sha256sum prefixes a backslash when it escapes an unusual file name
    return out.split()[0].lstrip("\\")


def _remote_sync(transport: paramiko.Transport, path: str) -> None:
    """Best-effort fsync of one remote file (coreutils `sync FILE`); a failure is only logged."""
    code, _out, err = run_remote(transport, ["sync", "--", path])
    if code != 0:
        log.warning("remote sync of %r failed (%d): %s", path, code, err.strip())


def _start_sync_and_sha256(transport: paramiko.Transport, path: str) -> paramiko.Channel:
    """Start the remote command of `_remote_sync_and_sha256`; it waits until told to go."""
    return start_remote(transport, _sh(_SYNC_SHA256_SH, path))


def _remote_sync_and_sha256(transport: paramiko.Transport, path: str,
                            waiting: paramiko.Channel | None = None) -> str:
    """fsync a remote file (best effort, logged) and hash it, both at once in one remote command.

    `waiting`: that command already started by `_start_sync_and_sha256`; it starts work now.
    """
    chan = waiting if waiting is not None else _start_sync_and_sha256(transport, path)
    try:
        chan.sendall(b"go\n")
        chan.shutdown_write()
    except BaseException:
        chan.close()
        raise
    code, out, err = finish_remote(chan)
    if "remote sync failed" in err:
        log.warning("remote sync of %r failed: %s", path, err.strip())
    return _sha256_result(path, (code, out, err))


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def same_remote_files(transport: paramiko.Transport, files: list[tuple[Path, str]]) -> list[str | None]:
    """For each (local, remote): the sha256 if remote has the same size and sha256, else None.

    One remote command for all files (one round trip, not one per file): it first reports which
    remotes have the local size, then hashes those while we hash the same local files.
    """
    if not files:
        return []
    sizes = [Path(local).stat().st_size for local, _ in files]
    args = [a for (_, remote), size in zip(files, sizes) for a in (str(size), remote)]
    return _same_remote_files(transport, files, args)


def _same_remote_files(transport: paramiko.Transport, files: list[tuple[Path, str]],
                       args: list[str]) -> list[str | None]:
    chan = start_remote(transport, _sh(_SAME_SIZE_SHA256_SH, *args))
    try:
        out = chan.makefile("rb")
        same_size = [out.readline().strip() == b"=" for _ in files]
        local_sha = [_hash_local(Path(local)).hexdigest() if match else None
                     for (local, _), match in zip(files, same_size)]
        remote_sha = [out.readline().decode(errors="replace").strip() for _ in files]
        code = chan.recv_exit_status()
        if code != 0 or not all(remote_sha):
            err = chan.makefile_stderr("rb").read().decode(errors="replace")
            raise RemoteCommandError(f"remote size/sha256 check failed ({code}): {err.strip()}")
    finally:
        chan.close()
    return [mine if mine is not None and _is_sha256(theirs) and theirs == mine else None
            for mine, theirs in zip(local_sha, remote_sha)]


# --------------------------------------------------------------------------- pipelined I/O


class _Responses:
    """Collects SFTP responses addressed to us by paramiko's response dispatcher."""

    def __init__(self) -> None:
        self.by_num: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.by_num[num] = (t, msg)


def _wait_for(sftp: paramiko.SFTPClient, sink: _Responses, num: int) -> tuple[int, paramiko.Message]:
    while num not in sink.by_num:
        sftp._read_response()  # reads one packet, hands it to its addressee (maybe us)
    return sink.by_num.pop(num)


def request_size(sftp: paramiko.SFTPClient) -> int:
    """Largest read/write request the server accepts (``limits@openssh.com``), cached per client."""
    cached = getattr(sftp, "_cosmos_request_size", None)
    if cached:
        return cached
    size = FALLBACK_REQUEST_SIZE
    try:
        t, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
        if t == CMD_EXTENDED_REPLY:
            msg.get_int64()  # max packet length
            max_read, max_write = msg.get_int64(), msg.get_int64()
            announced = min(x for x in (max_read, max_write) if x > 0) if (max_read or max_write) else 0
            if announced:
                size = max(FALLBACK_REQUEST_SIZE, min(MAX_REQUEST_SIZE, announced))
    except (IOError, paramiko.SSHException, EOFError):
        pass
    sftp._cosmos_request_size = size  # type: ignore[attr-defined]
    return size


class _Throttle:
    """Calls progress(done, total) at most once per interval, and always at the end."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        self.last = 0.0

    def add(self, n: int) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.progress and now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            self.progress(self.done, self.total)

    def finish(self) -> None:
        if self.progress:
            self.progress(self.done, self.total)


class _Counter:
    """Bytes done, added to from several threads (progress of a parallel upload)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


def _pipelined_write(sftp: paramiko.SFTPClient, handle: bytes, chunks: Iterator[bytes], offset: int,
                     throttle: _Throttle | _Counter) -> int:
    """Send chunks (written one after another from offset) with many write requests in flight."""
    def pieces() -> Iterator[tuple[int, bytes]]:
        at = offset
        for data in chunks:
            yield at, data
            at += len(data)
    return _pipelined_write_at(sftp, handle, pieces(), throttle)


def _pipelined_write_at(sftp: paramiko.SFTPClient, handle: bytes, pieces: Iterator[tuple[int, bytes]],
                        throttle: _Throttle | _Counter,
                        acked: Callable[[int, int], None] | None = None) -> int:
    """Write each (offset, bytes) with many requests in flight; returns the bytes written.

    acked(offset, length) is called for each write the server confirmed, in the order sent. If
    `pieces` raises, the writes already sent are settled first (so `acked` has seen all that landed).
    """
    sink = _Responses()
    pending: deque[tuple[int, int, int]] = deque()  # (request number, offset, length)
    in_flight_max = max(4, IN_FLIGHT_BYTES // request_size(sftp))
    written = 0

    def settle() -> None:
        num, at, n = pending.popleft()
        _check_write(*_wait_for(sftp, sink, num))
        if acked is not None:
            acked(at, n)

    source = iter(pieces)
    while True:
        try:
            at, data = next(source)
        except StopIteration:
            break
        except BaseException:
            try:
                while pending:
                    settle()
            except Exception:  # noqa: BLE001 - the source's error is the one to report
                pass
            raise
        pending.append((sftp._async_request(sink, CMD_WRITE, handle, int64(at), data), at, len(data)))
        written += len(data)
        throttle.add(len(data))
        while len(pending) > in_flight_max or (pending and pending[0][0] in sink.by_num):
            settle()
    while pending:
        settle()
    return written


def _check_write(t: int, msg: paramiko.Message) -> None:
    if t != CMD_STATUS:
        raise IOError(f"SFTP write: unexpected response type {t}")
    code = msg.get_int()
    if code != SFTP_OK:
        raise IOError(f"SFTP write failed: {msg.get_text()} (status {code})")


def _pipelined_read(sftp: paramiko.SFTPClient, handle: bytes, size: int) -> Iterator[bytes]:
    """Yield a remote file's bytes in order, with many read requests in flight."""
    sink = _Responses()
    step = request_size(sftp)
    in_flight_max = max(4, IN_FLIGHT_BYTES // step)
    pending: deque[tuple[int, int, int]] = deque()  # (num, offset, length)
    next_offset = 0

    def request(offset: int, length: int) -> None:
        pending.append((sftp._async_request(sink, CMD_READ, handle, int64(offset), length), offset, length))

    while next_offset < size or pending:
        while next_offset < size and len(pending) < in_flight_max:
            length = min(step, size - next_offset)
            request(next_offset, length)
            next_offset += length
        num, offset, length = pending.popleft()
        t, msg = _wait_for(sftp, sink, num)
        if t == CMD_STATUS:
            code = msg.get_int()
            if code == SFTP_EOF:
                raise IOError(f"remote file shrank while reading (EOF at {offset} of {size})")
            raise IOError(f"SFTP read failed at {offset}: {msg.get_text()} (status {code})")
        if t != CMD_DATA:
            raise IOError(f"SFTP read: unexpected response type {t}")
        data = msg.get_string()
        if len(data) < length:  # short read: ask for the rest before anything queued after it
            rest = (sftp._async_request(sink, CMD_READ, handle, int64(offset + len(data)),
                                        length - len(data)), offset + len(data), length - len(data))
            pending.appendleft(rest)
        yield data


def _read_local(path: Path, offset: int, step: int, hasher: "hashlib._Hash | None" = None,
                limit: int | None = None) -> Iterator[bytes]:
    """Chunks of path from offset (up to `limit` bytes in all), fed to hasher on the way."""
    left = limit
    with open(path, "rb") as f:
        f.seek(offset)
        while left is None or left > 0:
            chunk = f.read(step if left is None else min(step, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            if hasher is not None:
                hasher.update(chunk)
            yield chunk


def _hash_local(path: Path, length: int | None = None) -> "hashlib._Hash":
    """sha256 state over the first `length` bytes of path (all of it when None)."""
    hasher = hashlib.sha256()
    for chunk in _read_local(path, 0, HASH_BLOCK, limit=length):
        hasher.update(chunk)
    return hasher


# --------------------------------------------------------------------------- upload


def _remote_stat(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None
    except IOError as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return None
        raise


def _remote_stats(sftp: paramiko.SFTPClient, paths: list[str]) -> list[paramiko.SFTPAttributes | None]:
    """stat of each path (None when it does not exist), all requests in flight at once."""
    sink = _Responses()
    nums = [sftp._async_request(sink, CMD_STAT, sftp._adjust_cwd(path)) for path in paths]
    found: list[paramiko.SFTPAttributes | None] = []
    for path, num in zip(paths, nums):
        t, msg = _wait_for(sftp, sink, num)
        if t == CMD_ATTRS:
            found.append(paramiko.SFTPAttributes._from_msg(msg))
            continue
        if t != CMD_STATUS:
            raise IOError(f"SFTP stat of {path!r}: unexpected response type {t}")
        code, text = msg.get_int(), msg.get_text()
        if code != SFTP_NO_SUCH_FILE:
            raise IOError(f"SFTP stat of {path!r} failed: {text} (status {code})")
        found.append(None)
    return found


def make_remote_dirs(sftp: paramiko.SFTPClient, remote_dir: str,
                     attrs: paramiko.SFTPAttributes | None = None) -> None:
    """mkdir -p over SFTP (`attrs`: remote_dir's stat when the caller has it)."""
    if attrs is None:
        attrs = _remote_stat(sftp, remote_dir)
    if attrs is not None and stat_mod.S_ISDIR(attrs.st_mode or 0):
        return  # the usual case: one stat
    parts = PurePosixPath(remote_dir).parts
    current = PurePosixPath(parts[0]) if parts else PurePosixPath(".")
    for part in parts[1:]:
        current = current / part
        attrs = _remote_stat(sftp, str(current))
        if attrs is None:
            try:
                sftp.mkdir(str(current))
            except IOError:
                if _remote_stat(sftp, str(current)) is None:  # not a lost race with another writer
                    raise
        elif not stat_mod.S_ISDIR(attrs.st_mode or 0):
            raise NotADirectoryError(f"remote {current} exists and is not a directory")


def _resume_state(transport: paramiko.Transport, local: Path, part: str,
                  part_attrs: paramiko.SFTPAttributes | None, size: int) -> tuple[int, "hashlib._Hash"]:
    """(bytes of `part` to keep, sha256 state of the local file up to there).

    A `.part` is kept when its content is exactly a prefix of the local file, else restarted.
    """
    part_size = part_attrs.st_size if part_attrs is not None else None
    if not part_size or part_size > size:
        return 0, hashlib.sha256()
    remote_hashing = start_sha256(transport, part)  # runs beside the local hash
    try:
        prefix = _hash_local(local, part_size)
        remote_prefix = _sha256_result(part, finish_remote(remote_hashing))
    finally:
        remote_hashing.close()
    if remote_prefix == prefix.hexdigest():
        return part_size, prefix
    log.info("restarting %s: its content is not a prefix of %s", part, local)
    return 0, hashlib.sha256()


def upload_file(sftp: paramiko.SFTPClient, local: Path, remote: str,
                progress: ProgressFn | None = None) -> FileTransfer:
    """Upload one file (skip if same, resume `.part`, verify, rename). See `upload_files`."""
    t0 = time.monotonic()
    same = _skip_check(sftp, [(local, remote)], [local.stat().st_size])[0]
    if same is not None:
        return _skipped(local, remote, local.stat().st_size, same, time.monotonic() - t0)
    return _send_file(sftp, local, remote, progress)


def _skipped(local: Path, remote: str, size: int, sha: str, seconds: float) -> FileTransfer:
    return FileTransfer(local=str(local), remote=remote, size=size, sha256=sha, bytes_sent=0,
                        skipped=True, seconds=seconds, rate_mb_s=None)


def _send_file(sftp: paramiko.SFTPClient, local: Path, remote: str,
               progress: ProgressFn | None) -> FileTransfer:
    """Upload local to remote.part (resuming it when it is a prefix), verify, rename into place."""
    t0 = time.monotonic()
    transport = sftp.get_channel().get_transport()
    size = local.stat().st_size
    part = remote + ".part"
    parent = str(PurePosixPath(remote).parent)
    parent_attrs, part_attrs = _remote_stats(sftp, [parent, part])
    make_remote_dirs(sftp, parent, parent_attrs)
    offset, hasher = _resume_state(transport, local, part, part_attrs, size)
    verifier = _start_sync_and_sha256(transport, part)  # its start-up overlaps the data
    try:
        if offset == 0 and size >= PARALLEL_MIN_BYTES:
            sent, local_sha = _send_part_parallel(sftp, local, part, size, progress)
        else:
            sent = _send_part(sftp, local, part, offset, size, progress, hasher)
            local_sha = hasher.hexdigest()
        _verify_part(sftp, transport, local, part, local_sha, verifier)
    finally:
        verifier.close()
    sftp.posix_rename(part, remote)
    seconds = time.monotonic() - t0
    return FileTransfer(local=str(local), remote=remote, size=size, sha256=local_sha, bytes_sent=sent,
                        skipped=False, resumed_from=offset, seconds=seconds, rate_mb_s=_rate(sent, seconds))


def _send_part(sftp: paramiko.SFTPClient, local: Path, part: str, offset: int, size: int,
               progress: ProgressFn | None, hasher: "hashlib._Hash") -> int:
    """Write local[offset:] into part at offset (truncating anything after); hasher sees the bytes."""
    throttle = _Throttle(progress, size)
    throttle.done = offset
    mode = "r+b" if offset else "wb"
    with sftp.open(part, mode) as f:
        if offset:
            f.truncate(offset)
        chunks = _read_local(local, offset, request_size(sftp), hasher)
        sent = _pipelined_write(sftp, f.handle, chunks, offset, throttle)
    throttle.finish()
    return sent


class _Landed:
    """Which blocks of a parallel upload the server confirmed, for the contiguous prefix on failure.

    Each block is written by one channel, in order, so its confirmed bytes are a prefix of it.
    """

    def __init__(self, size: int, block: int) -> None:
        self.size, self.block = size, block
        self.done = [0] * (-(-size // block))
        self._lock = threading.Lock()

    def acked(self, offset: int, length: int) -> None:
        with self._lock:
            self.done[offset // self.block] += length

    def prefix(self) -> int:
        """Bytes from 0 that all landed."""
        total = 0
        for i, done in enumerate(self.done):
            total += done
            if done < min(self.block, self.size - i * self.block):
                break
        return total


class _Aborted(Exception):
    """Another channel of a parallel upload failed: stop sending."""


def _send_part_parallel(sftp: paramiko.SFTPClient, local: Path, part: str, size: int,
                        progress: ProgressFn | None) -> tuple[int, str]:
    """Write local into a fresh part over PARALLEL_CHANNELS SFTP channels of the same connection.

    One channel is limited by the server's per-channel window (OpenSSH: 2 MiB in flight, ~50 MB/s
    at 40 ms RTT); several channels each have their own. The channels take PARALLEL_BLOCK blocks in
    file order from a shared queue; the local sha256 is computed meanwhile. Returns (bytes sent,
    local sha256). On failure `part` is cut to the prefix that fully landed (a valid resume point;
    the next upload checks it against the local file's prefix anyway) and the error re-raised.
    """
    transport = sftp.get_channel().get_transport()
    step = request_size(sftp)
    with sftp.open(part, "wb"):
        pass
    blocks: queue.SimpleQueue[int] = queue.SimpleQueue()
    for start in range(0, size, PARALLEL_BLOCK):
        blocks.put(start)
    landed = _Landed(size, PARALLEL_BLOCK)
    counter = _Counter()
    abort = threading.Event()
    errors: list[BaseException] = []

    def pieces() -> Iterator[tuple[int, bytes]]:
        with open(local, "rb") as f:
            while True:
                try:
                    start = blocks.get_nowait()
                except queue.Empty:
                    return
                f.seek(start)
                at, end = start, min(start + PARALLEL_BLOCK, size)
                while at < end:
                    if abort.is_set():
                        raise _Aborted
                    data = f.read(min(step, end - at))
                    if not data:
                        raise IOError(f"{local} shrank while uploading (at {at} of {size})")
                    yield at, data
                    at += len(data)

    def channel(index: int) -> None:
        client = sftp
        try:
            if index:
                client = paramiko.SFTPClient.from_transport(transport)
                client._cosmos_request_size = step  # type: ignore[attr-defined]
            with client.open(part, "r+b") as f:
                _pipelined_write_at(client, f.handle, pieces(), counter, landed.acked)
        except BaseException as exc:  # noqa: BLE001 - collected, re-raised by the caller
            abort.set()
            errors.append(exc)
        finally:
            if client is not sftp:
                client.close()

    threads = [threading.Thread(target=channel, args=(i,), name=f"sftp-put-{i}", daemon=True)
               for i in range(PARALLEL_CHANNELS)]
    for t in threads:
        t.start()
    try:
        local_sha = _hash_local(local).hexdigest()
    finally:
        throttle = _Throttle(progress, size)
        for t in threads:
            while t.is_alive():
                t.join(PROGRESS_INTERVAL_S / 4)
                throttle.set(counter.value)
    if errors:
        keep = landed.prefix()
        try:
            sftp.truncate(part, keep)
            log.info("parallel upload of %s failed; kept the %d bytes that landed in %s", local, keep, part)
        except Exception as exc:  # noqa: BLE001 - the link may be gone; the next upload re-checks the part
            log.warning("could not cut %s to its landed prefix (%s); the next upload re-checks it", part, exc)
        raise next((e for e in errors if not isinstance(e, _Aborted)), errors[0])
    throttle.set(counter.value)
    throttle.finish()
    return counter.value, local_sha


def _verify_part(sftp: paramiko.SFTPClient, transport: paramiko.Transport, local: Path, part: str,
                 local_sha: str, waiting: paramiko.Channel | None = None) -> None:
    remote_sha = _remote_sync_and_sha256(transport, part, waiting)
    if remote_sha != local_sha:
        try:
            sftp.remove(part)
        except IOError:
            pass
        raise TransferVerificationError(
            f"upload of {local} to {part} failed verification: local sha256 {local_sha}, "
            f"remote {remote_sha}; the .part file was removed, retry to send it again"
        )


def _skip_check(sftp: paramiko.SFTPClient, items: list[tuple[Path, str]], sizes: list[int]) -> list[str | None]:
    """`same_remote_files`, after one pipelined round of SFTP stats: the remote command (whose
    shell start-up can cost more than the stats) runs only when some remote has the local size."""
    stats = _remote_stats(sftp, [remote for _, remote in items])
    candidates = [i for i, (attrs, size) in enumerate(zip(stats, sizes))
                  if attrs is not None and stat_mod.S_ISREG(attrs.st_mode or 0) and attrs.st_size == size]
    same: list[str | None] = [None] * len(items)
    if candidates:
        found = _same_remote_files(sftp.get_channel().get_transport(), [items[i] for i in candidates],
                                   [a for i in candidates for a in (str(sizes[i]), items[i][1])])
        for i, sha in zip(candidates, found):
            same[i] = sha
    return same


def upload_files(sftp: paramiko.SFTPClient, items: list[tuple[Path, str]],
                 progress: ProgressFn | None = None) -> TransferReport:
    """Upload each (local file, remote path). progress(bytes done, bytes total) over all files.

    Files whose remote copy already has the same size and sha256 are skipped; that check is one
    remote command for all files.
    """
    t0 = time.monotonic()
    report = TransferReport(direction="upload")
    items = [(Path(local), remote) for local, remote in items]
    sizes = [local.stat().st_size for local, _ in items]
    total = sum(sizes)
    same = _skip_check(sftp, items, sizes)
    checked = time.monotonic() - t0
    base = 0

    def file_progress(done: int, _file_total: int) -> None:
        if progress:
            progress(base + done, total)

    last_call = 0.0
    for (local, remote), size, sha in zip(items, sizes, same):
        if sha is not None:
            item = _skipped(local, remote, size, sha, checked / len(items))
        else:
            item = _send_file(sftp, local, remote, file_progress if progress else None)
        report.add(item)
        base += item.size
        if progress and (item.skipped and time.monotonic() - last_call >= PROGRESS_INTERVAL_S):
            last_call = time.monotonic()
            progress(base, total)
    report.seconds = time.monotonic() - t0
    log.info("upload: %d sent, %d skipped, %d bytes in %.1fs", report.files_sent, report.files_skipped,
             report.bytes_sent, report.seconds)
    return report


# --------------------------------------------------------------------------- download


def list_remote_files(sftp: paramiko.SFTPClient, remote_dir: str) -> list[tuple[str, int]]:
    """(path relative to remote_dir, size) of every regular file below it (symlinks followed)."""
    found: list[tuple[str, int]] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        here = str(PurePosixPath(remote_dir) / rel) if rel else remote_dir
        for entry in sftp.listdir_attr(here):
            child = f"{rel}/{entry.filename}" if rel else entry.filename
            attrs = entry
            if stat_mod.S_ISLNK(entry.st_mode or 0):
                attrs = sftp.stat(str(PurePosixPath(remote_dir) / child))
            if stat_mod.S_ISDIR(attrs.st_mode or 0):
                stack.append(child)
            elif stat_mod.S_ISREG(attrs.st_mode or 0):
                found.append((child, attrs.st_size or 0))
    return sorted(found)


class _DiskWriter:
    """Hashes and writes a download's chunks in a thread, so the SFTP reads never wait on them.

    The queue is bounded (DOWNLOAD_QUEUE_CHUNKS); after a write error the thread keeps draining
    it (dropping the data) so the reader never blocks, and `put`/`close` raise that error.
    """

    def __init__(self, f: "object") -> None:
        self.f = f
        self.hasher = hashlib.sha256()
        self.error: BaseException | None = None
        self.chunks: queue.Queue[bytes | None] = queue.Queue(DOWNLOAD_QUEUE_CHUNKS)
        self.thread = threading.Thread(target=self._run, name="sftp-get-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (data := self.chunks.get()) is not None:
            if self.error is None:
                try:
                    self.hasher.update(data)
                    self.f.write(data)  # type: ignore[attr-defined]
                except BaseException as exc:  # noqa: BLE001 - reported by put/close
                    self.error = exc

    def put(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.chunks.put(data)

    def close(self) -> None:
        """Wait until everything queued is written; raise the writer's error if it had one."""
        self.chunks.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _download_file(sftp: paramiko.SFTPClient, transport: paramiko.Transport, remote: str, size: int,
                   local: Path, throttle: _Throttle) -> FileTransfer:
    t0 = time.monotonic()
    hashing = start_sha256(transport, remote)  # runs while we download
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        with sftp.open(remote, "rb") as rf, open(local, "wb") as lf:
            writer = _DiskWriter(lf)
            try:
                for data in _pipelined_read(sftp, rf.handle, size):
                    writer.put(data)
                    throttle.add(len(data))
            finally:
                writer.close()
            lf.flush()
            os.fsync(lf.fileno())
        expected = _sha256_result(remote, finish_remote(hashing))
    finally:
        hashing.close()
    got = writer.hasher.hexdigest()
    if got != expected:
        raise TransferVerificationError(
            f"download of {remote} failed verification: remote sha256 {expected}, received {got}"
        )
    seconds = time.monotonic() - t0
    return FileTransfer(local=str(local), remote=remote, size=size, sha256=got, bytes_sent=size,
                        skipped=False, seconds=seconds, rate_mb_s=_rate(size, seconds))


def download_tree(ssh: paramiko.SSHClient, remote_dir: str, local_dir: Path,
                  progress: ProgressFn | None = None) -> TransferReport:
    """Copy remote_dir to local_dir (which must not exist), verified, appearing all at once.

    Files land in ``local_dir.parent/.<name>.partial-<random>`` and the folder is renamed into
    place when all are verified. An existing local_dir raises FileExistsError: move it first
    (`move_aside`).
    """
    local_dir = Path(local_dir)
    _refuse_existing(local_dir)
    t0 = time.monotonic()
    sftp = ssh.open_sftp()
    transport = ssh.get_transport()
    assert transport is not None
    staging = local_dir.parent / f".{local_dir.name}.partial-{secrets.token_hex(4)}"
    report = TransferReport(direction="download")
    try:
        files = list_remote_files(sftp, remote_dir)
        throttle = _Throttle(progress, sum(s for _, s in files))
        staging.mkdir(parents=True)
        for rel, size in files:
            remote = str(PurePosixPath(remote_dir) / rel)
            report.add(_download_file(sftp, transport, remote, size, staging / rel, throttle))
        throttle.finish()
        _fsync_dir(staging)
        rename_no_replace(staging, local_dir)
        _fsync_dir(local_dir.parent)
        for item in report.files:  # name the files where they now are
            item.local = str(local_dir / Path(item.local).relative_to(staging))
    except BaseException:
        _remove_tree(staging)
        raise
    finally:
        sftp.close()
    report.seconds = time.monotonic() - t0
    return report


def _refuse_existing(local_dir: Path) -> None:
    if local_dir.exists() or local_dir.is_symlink():
        raise FileExistsError(
            f"{local_dir} already exists and is not overwritten; move it aside first "
            "(cosmos_assets.hosts.sftp.move_aside) or choose another destination"
        )


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_no_replace(src: Path, dst: Path) -> None:
    """Atomic rename that fails with FileExistsError if dst exists (Linux renameat2)."""
    if _renameat2 is not None:
        at_fdcwd = -100
        if _renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL/ENOSYS: filesystem lacks the flag
            if err == errno.EEXIST:
                raise FileExistsError(err, f"{dst} already exists and is not overwritten", str(dst))
            raise OSError(err, os.strerror(err), str(src))
    _refuse_existing(dst)  # fallback: check then rename (small race)
    os.rename(src, dst)


def move_aside(local_dir: Path, previous_root: Path, run_id: str) -> Path:
    """Rename an existing local_dir to ``previous_root/<name>/<run_id>`` atomically; returns it."""
    local_dir = Path(local_dir)
    if "/" in run_id or run_id in ("", ".", ".."):
        raise ValueError(f"run_id {run_id!r} is not a plain folder name")
    dest = Path(previous_root) / local_dir.name / run_id
    dest.parent.mkdir(parents=True, exist_ok=True)
    rename_no_replace(local_dir, dest)
    return dest
