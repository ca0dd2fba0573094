"""A fresh large upload over several SFTP channels of one connection at once.

One channel is limited by the server's per-channel window (OpenSSH: 2 MiB in flight, ~50 MB/s at 40 ms RTT);
several channels each have their own. Used by :mod:`cosmos_assets.machines.sftp_transfer`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import paramiko

from cosmos_assets.files import sha256_file
from cosmos_assets.machines import sftp_wire

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


def send_part_parallel(sftp: paramiko.SFTPClient, local: Path, part: str, size: int,
                       progress: Progress) -> tuple[int, str]:  # fmt: skip
    """Write local into a fresh part over PARALLEL_CHANNELS SFTP channels of the same connection.

    One channel is limited by the server's per-channel window (OpenSSH: 2 MiB in flight, ~50 MB/s at 40 ms
    RTT); several channels each have their own. The channels take PARALLEL_BLOCK blocks in file order from a
    shared queue; the local sha256 is computed meanwhile. Returns (bytes sent, local sha256). On failure
    ``part`` is cut to the prefix that fully landed (a valid resume point; the next upload checks it against
    the local file's prefix anyway) and the error re-raised.
    """
    transport = sftp.get_channel().get_transport()
    step = sftp_wire.request_size(sftp)
    with sftp.open(part, "wb"):
        pass
    blocks: queue.SimpleQueue[int] = queue.SimpleQueue()
    for start in range(0, size, PARALLEL_BLOCK):
        blocks.put(start)
    landed = _Landed(size, PARALLEL_BLOCK)
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
                sftp_wire.set_request_size(client, step)
            with client.open(part, "r+b") as f:
                sftp_wire.pipelined_write_at(client, f, pieces(), counter, landed.acked)
        except BaseException as exc:  # noqa: BLE001 - collected, re-raised by the caller
            abort.set()
            errors.append(exc)
        finally:
            if client is not sftp:
                client.close()

    threads = [threading.Thread(target=channel, args=(i,), name=f"sftp-put-{i}", daemon=True)
               for i in range(PARALLEL_CHANNELS)]  # fmt: skip
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
        keep = landed.prefix()
        try:
            sftp.truncate(part, keep)
            _logger.info("parallel upload of %s failed; kept the %d bytes that landed in %s", local, keep, part)
        except Exception as exc:  # noqa: BLE001 - the link may be gone; the next upload re-checks the part
            _logger.warning("could not cut %s to its landed prefix (%s); the next upload re-checks it", part, exc)
        raise next((e for e in errors if not isinstance(e, _Aborted)), errors[0])
    progress.set(base + counter.value)
    return counter.value, local_sha


