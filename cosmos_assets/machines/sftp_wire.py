"""Pipelined SFTP reads, writes and stats: the ONLY module that uses paramiko's internals.

paramiko's own ``get``/``put`` wait on small requests (32 KiB) and its prefetch has quadratic bookkeeping
(paramiko issue 2455). Here many requests are kept in flight over paramiko's SFTP request layer, with the
request size the server announces (``limits@openssh.com``; OpenSSH allows ~256 KiB), falling back to 32 KiB.

The internals used (``SFTPClient._async_request``, ``._read_response``, ``._request``, ``._adjust_cwd``,
``SFTPAttributes._from_msg``, ``SFTPFile.handle`` and the ``paramiko.sftp`` constants) are listed in
:data:`PARAMIKO_INTERNALS`; ``tests/test_sftp_wire_internals.py`` checks each still exists with the call shape
used here, and pyproject.toml pins paramiko below its next major version.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

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

FALLBACK_REQUEST_SIZE = 32 * 1024  # what every SFTP server must accept
MAX_REQUEST_SIZE = 252 * 1024  # upper bound even if a server announces more
IN_FLIGHT_BYTES = 16 * 1024 * 1024  # pipelined requests outstanding per file

PARAMIKO_INTERNALS: dict[str, tuple[str, ...]] = {
    "paramiko.SFTPClient._async_request": ("self", "fileobj", "t", "*args"),
    "paramiko.SFTPClient._read_response": ("self", "waitfor"),
    "paramiko.SFTPClient._request": ("self", "t", "*args"),
    "paramiko.SFTPClient._adjust_cwd": ("self", "path"),
    "paramiko.SFTPAttributes._from_msg": ("msg", "filename", "longname"),
}
"""Each private paramiko callable used here and the parameters it is called with."""

_request_sizes: weakref.WeakKeyDictionary[paramiko.SFTPClient, int] = weakref.WeakKeyDictionary()
_sizes_lock = threading.Lock()


class ByteCounter(Protocol):
    def add(self, nbytes: int) -> None: ...


class _Responses:
    """Collects SFTP responses addressed to us by paramiko's response dispatcher (``_async_response``)."""

    def __init__(self) -> None:
        self.by_num: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.by_num[num] = (t, msg)


def _wait_for(sftp: paramiko.SFTPClient, sink: _Responses, num: int) -> tuple[int, paramiko.Message]:
    while num not in sink.by_num:
        sftp._read_response()  # reads one packet, hands it to its addressee (maybe us)
    return sink.by_num.pop(num)


def request_size(sftp: paramiko.SFTPClient) -> int:
    """Largest read/write request the server accepts (``limits@openssh.com``), asked once per client."""
    with _sizes_lock:
        cached = _request_sizes.get(sftp)
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
    except (OSError, paramiko.SSHException, EOFError):
        pass
    set_request_size(sftp, size)
    return size


def set_request_size(sftp: paramiko.SFTPClient, size: int) -> None:
    """Reuse a size already asked for (another SFTP channel of the same connection)."""
    with _sizes_lock:
        _request_sizes[sftp] = size


def file_handle(f: paramiko.SFTPFile) -> bytes:
    """The server's handle of an open remote file, for the pipelined calls below."""
    return f.handle


def pipelined_write(
    sftp: paramiko.SFTPClient, f: paramiko.SFTPFile, chunks: Iterator[bytes], offset: int, counter: ByteCounter
) -> int:
    """Send chunks (written one after another from ``offset``) with many write requests in flight. The product writes
    through :func:`pipelined_write_at`; this sequential form is the transfer benchmark's (bench/bench_transfer.py)."""

    def pieces() -> Iterator[tuple[int, bytes]]:
        at = offset
        for data in chunks:
            yield at, data
            at += len(data)

    return pipelined_write_at(sftp, f, pieces(), counter)


def pipelined_write_at(
    sftp: paramiko.SFTPClient,
    f: paramiko.SFTPFile,
    pieces: Iterator[tuple[int, bytes]],
    counter: ByteCounter,
    acked: Callable[[int, int], None] | None = None,
) -> int:
    """Write each (offset, bytes) with many requests in flight; returns the bytes written.

    ``acked(offset, length)`` is called for each write the server confirmed, in the order sent. If ``pieces``
    raises, the writes already sent are settled first (so ``acked`` has seen all that landed).
    """
    handle = file_handle(f)
    channel = sftp.get_channel()
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
        counter.add(len(data))
        while len(pending) > in_flight_max or (pending and pending[0][0] in sink.by_num):
            settle()
        while pending and channel.recv_ready():  # read the acknowledgements that came: ``acked`` stays current
            sftp._read_response()
            while pending and pending[0][0] in sink.by_num:
                settle()
    while pending:
        settle()
    return written


def _check_write(t: int, msg: paramiko.Message) -> None:
    if t != CMD_STATUS:
        raise OSError(f"SFTP write: unexpected response type {t}")
    code = msg.get_int()
    if code != SFTP_OK:
        raise OSError(f"SFTP write failed: {msg.get_text()} (status {code})")


def pipelined_read(sftp: paramiko.SFTPClient, f: paramiko.SFTPFile, size: int, start: int = 0) -> Iterator[bytes]:
    """Yield a remote file's bytes from ``start`` up to ``size`` in order, with many read requests in flight."""
    handle = file_handle(f)
    sink = _Responses()
    step = request_size(sftp)
    in_flight_max = max(4, IN_FLIGHT_BYTES // step)
    pending: deque[tuple[int, int, int]] = deque()  # (num, offset, length)
    next_offset = start

    def request(offset: int, length: int) -> tuple[int, int, int]:
        return sftp._async_request(sink, CMD_READ, handle, int64(offset), length), offset, length

    while next_offset < size or pending:
        while next_offset < size and len(pending) < in_flight_max:
            length = min(step, size - next_offset)
            pending.append(request(next_offset, length))
            next_offset += length
        num, offset, length = pending.popleft()
        t, msg = _wait_for(sftp, sink, num)
        if t == CMD_STATUS:
            code = msg.get_int()
            if code == SFTP_EOF:
                raise OSError(f"remote file shrank while reading (EOF at {offset} of {size})")
            raise OSError(f"SFTP read failed at {offset}: {msg.get_text()} (status {code})")
        if t != CMD_DATA:
            raise OSError(f"SFTP read: unexpected response type {t}")
        data = msg.get_string()
        if len(data) < length:  # short read: ask for the rest before anything queued after it
            pending.appendleft(request(offset + len(data), length - len(data)))
        yield data


def remote_stats(sftp: paramiko.SFTPClient, paths: list[str]) -> list[paramiko.SFTPAttributes | None]:
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
            raise OSError(f"SFTP stat of {path!r}: unexpected response type {t}")
        code, text = msg.get_int(), msg.get_text()
        if code != SFTP_NO_SUCH_FILE:
            raise OSError(f"SFTP stat of {path!r} failed: {text} (status {code})")
        found.append(None)
    return found
