"""A fresh large upload over several SFTP channels of one connection at once.

One channel is limited by the server's per-channel window (OpenSSH: 2 MiB in flight, ~50 MB/s at 40 ms RTT);
several channels each have their own. Used by :mod:`cosmos_assets.machines.sftp_transfer`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import paramiko

from cosmos_assets.files import sha256_file
from cosmos_assets.machines import sftp_wire
from cosmos_assets.machines.transfer_resume import Landed, prefix_length

_logger = logging.getLogger(__name__)

PARALLEL_CHANNELS = 4
PARALLEL_BLOCK = 8 * 1024 * 1024  # blocks handed out to the channels in file order
PARALLEL_POLL_S = 0.25  # how often a parallel upload reports its progress


class Progress(Protocol):
    value: int

    def set(self, done: int) -> None: ...


class Counter:
    """Bytes done, added to from several threads."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.value += nbytes


class _Aborted(Exception):
    """Another channel of a parallel upload failed: stop sending."""


def send_part_parallel(
    sftp: paramiko.SFTPClient,
    local: Path,
    part: str,
    size: int,
    progress: Progress,
    landed: Landed | None = None,
    carried: Callable[[int], None] | None = None,
    timeout: float | None = None,
) -> tuple[int, str]:
    """Write local into a fresh part over PARALLEL_CHANNELS SFTP channels of the same connection.

    One channel is limited by the server's per-channel window (OpenSSH: 2 MiB in flight, ~50 MB/s at 40 ms
    RTT); several channels each have their own. The channels take PARALLEL_BLOCK blocks in file order from a
    shared queue; the local sha256 is computed meanwhile. Returns (bytes sent, local sha256).

    ``landed`` records every write the server confirmed (a retry in this process sends only the rest);
    ``carried(nbytes)`` is told of them too; ``timeout``: seconds a channel may wait for the server. On failure,
    if the link still answers, ``part`` is cut to the prefix that fully landed (a valid resume point for any later
    upload, and ``landed`` keeps just that); the error is re-raised.
    """
    transport = sftp.get_channel().get_transport()
    step = sftp_wire.request_size(sftp)
    with sftp.open(part, "wb"):
        pass
    blocks: queue.SimpleQueue[int] = queue.SimpleQueue()
    for start in range(0, size, PARALLEL_BLOCK):
        blocks.put(start)
    landed = landed if landed is not None else Landed()

    def acked(offset: int, length: int) -> None:
        landed.add(offset, length)
        if carried is not None:
            carried(length)

    counter = Counter()
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
                        raise OSError(f"{local} shrank while uploading (at {at} of {size})")
                    yield at, data
                    at += len(data)

    def channel(index: int) -> None:
        client = sftp
        try:
            if index:
                client = paramiko.SFTPClient.from_transport(transport)
                client.get_channel().settimeout(timeout)
                sftp_wire.set_request_size(client, step)
            with client.open(part, "r+b") as f:
                sftp_wire.pipelined_write_at(client, f, pieces(), counter, acked)
        except BaseException as exc:  # noqa: BLE001 - collected, re-raised by the caller
            abort.set()
            errors.append(exc)
        finally:
            if client is not sftp:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing a channel of a dead link: the write error is what counts
                    pass

    threads = [
        threading.Thread(target=channel, args=(i,), name=f"sftp-put-{i}", daemon=True) for i in range(PARALLEL_CHANNELS)
    ]
    for t in threads:
        t.start()
    base = progress.value
    try:
        local_sha = sha256_file(local)
    finally:
        for t in threads:
            while t.is_alive():
                t.join(PARALLEL_POLL_S)
                progress.set(base + counter.value)
    if errors:
        keep = prefix_length(landed.ranges())
        try:
            sftp.truncate(part, keep)
            landed.keep_only([(0, keep)])
            _logger.info("parallel upload of %s failed; kept the %d bytes that landed in %s", local, keep, part)
        except Exception as exc:  # noqa: BLE001 - the link may be gone: a retry resumes from what landed
            _logger.info("could not cut %s to its landed prefix (%s); a retry sends only what never landed", part, exc)
        raise next((e for e in errors if not isinstance(e, _Aborted)), errors[0])
    progress.set(base + counter.value)
    return counter.value, local_sha
