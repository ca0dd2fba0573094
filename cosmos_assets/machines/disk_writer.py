"""A download's local side: chunks hashed and written in a thread, so the network reads never wait on the disk."""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import BinaryIO


class DiskWriter:
    """Hashes and writes a download's chunks in a thread, so the SFTP reads never wait on them.

    The queue is bounded (``queued`` chunks); after a write error the thread keeps draining it
    (dropping the data) so the reader never blocks, and ``put``/``close`` raise that error.
    """

    def __init__(self, f: BinaryIO, hasher: hashlib._Hash | None = None, queued: int = 64) -> None:
        """``hasher``: the state to go on from (a resumed file's prefix); a fresh sha256 when None."""
        self.f = f
        self.hasher = hasher if hasher is not None else hashlib.sha256()
        self.error: BaseException | None = None
        self.chunks: queue.Queue[bytes | None] = queue.Queue(queued)
        self.thread = threading.Thread(target=self._run, name="sftp-get-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (data := self.chunks.get()) is not None:
            if self.error is None:
                try:
                    self.hasher.update(data)
                    self.f.write(data)
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
