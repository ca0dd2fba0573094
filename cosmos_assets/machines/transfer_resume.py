"""What an interrupted transfer keeps: byte ranges that landed, and which of them a retry may trust.

Plain logic (no SSH), used by :mod:`cosmos_assets.machines.sftp_transfer` and :mod:`cosmos_assets.machines.sftp_download`:

- :class:`Landed` records the ranges the far side confirmed, from any number of threads (SFTP write acks).
- :class:`LandedParts` keeps a :class:`Landed` per remote ``.part`` across the retries of one upload in this
  process (``SshHost.upload`` hands the same one to every retry), tied to the local file's identity: a retry sends
  only what never landed, trusting those ranges; the final sha256 check catches anything else.
- Past what the record holds (writes land before their acknowledgements are read), and for a ``.part`` with no
  record (a later process), :func:`kept_blocks` keeps the blocks whose sha256 equals the local file's same block
  (the block hashes are computed on both ends), so holes left by parallel channels and a wrong or stale ``.part``
  are found, not trusted.

Ranges are ``(offset, length)`` with length > 0, sorted and merged.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

Range = tuple[int, int]

CHECK_BLOCK = 1024 * 1024  # a .part is checked in blocks this small, so partly written parallel blocks keep most
MAX_CHECK_BLOCKS = 2048  # ... but never more blocks than this (each is one small process on the host)


def check_block(part_size: int) -> int:
    """The block size a ``.part`` of ``part_size`` bytes is checked in: CHECK_BLOCK, larger for huge parts."""
    blocks_of_check = -(-part_size // MAX_CHECK_BLOCKS)
    return max(CHECK_BLOCK, -(-blocks_of_check // CHECK_BLOCK) * CHECK_BLOCK)


def merged(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, overlapping or touching ranges joined, empty ones dropped."""
    out: list[Range] = []
    for start, length in sorted(r for r in ranges if r[1] > 0):
        if out and start <= out[-1][0] + out[-1][1]:
            last_start, last_length = out[-1]
            out[-1] = (last_start, max(last_start + last_length, start + length) - last_start)
        else:
            out.append((start, length))
    return out


def clipped(ranges: Iterable[Range], size: int) -> list[Range]:
    """The parts of ``ranges`` inside ``[0, size)``."""
    return merged((start, min(start + length, size) - start) for start, length in ranges if start < size)


def missing(size: int, kept: Iterable[Range]) -> list[Range]:
    """The ranges of ``[0, size)`` not in ``kept``."""
    out: list[Range] = []
    at = 0
    for start, length in clipped(kept, size):
        if start > at:
            out.append((at, start - at))
        at = max(at, start + length)
    if at < size:
        out.append((at, size - at))
    return out


def total(ranges: Iterable[Range]) -> int:
    return sum(length for _, length in ranges)


def prefix_length(ranges: Iterable[Range]) -> int:
    """Bytes from 0 that are all in ``ranges``."""
    for start, length in merged(ranges):
        return start + length if start == 0 else 0
    return 0


def split(ranges: Iterable[Range], block: int) -> list[Range]:
    """``ranges`` cut into pieces of at most ``block`` bytes, in file order."""
    return [
        (at, min(block, start + length - at))
        for start, length in merged(ranges)
        for at in range(start, start + length, block)
    ]


def block_spans(length: int, block: int, first: int = 0) -> list[Range]:
    """``[first * block, length)`` in blocks of ``block`` bytes (the last one may be shorter)."""
    return [(at, min(block, length - at)) for at in range(first * block, length, block)]


def local_block_hashes(path: Path, length: int, block: int, first: int = 0) -> list[str]:
    """sha256 of each block of ``path``'s first ``length`` bytes from block ``first`` (as :func:`block_spans` cuts them)."""
    hashes: list[str] = []
    with open(path, "rb") as f:
        f.seek(first * block)
        for _, size in block_spans(length, block, first):
            hashes.append(hashlib.sha256(f.read(size)).hexdigest())
    return hashes


def kept_blocks(length: int, block: int, remote: list[str], local: list[str], first: int = 0) -> list[Range]:
    """The blocks (from block ``first``) of a ``.part`` of ``length`` bytes whose remote sha256 equals the local one."""
    spans = block_spans(length, block, first)
    if len(remote) != len(spans) or len(local) != len(spans):
        return []  # an answer of the wrong shape proves nothing: send it all again
    return merged(span for span, theirs, mine in zip(spans, remote, local) if theirs == mine)


def partial_folders(local_dir: Path, remote_dir: str) -> tuple[Path, Path]:
    """Where a download of remote_dir into local_dir keeps its finished files and its ``.part`` files meanwhile.

    Named after the source, so a retry of the same download finds them and no other download does.
    """
    key = hashlib.sha256(remote_dir.encode()).hexdigest()[:12]
    return (local_dir.parent / f".{local_dir.name}.partial-{key}", local_dir.parent / f".{local_dir.name}.parts-{key}")


def is_partial_download(name: str, local_name: str) -> bool:
    """Whether ``name`` is one of :func:`partial_folders` of a download into a folder named ``local_name``."""
    return name.startswith((f".{local_name}.partial-", f".{local_name}.parts-"))


class Landed:
    """Ranges the far side confirmed, added to from several threads."""

    def __init__(self, ranges: Iterable[Range] = ()) -> None:
        self._ranges = merged(ranges)
        self._lock = threading.Lock()

    def add(self, offset: int, length: int) -> None:
        with self._lock:
            self._ranges = merged([*self._ranges, (offset, length)])

    def ranges(self) -> list[Range]:
        with self._lock:
            return list(self._ranges)

    def keep_only(self, ranges: Iterable[Range]) -> None:
        with self._lock:
            self._ranges = merged(ranges)


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime_ns): a changed local file no longer matches what was recorded for it."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class LandedParts:
    """What landed in each remote ``.part`` during one upload's attempts in this process."""

    _parts: dict[str, tuple[tuple[int, int, int, int], Landed]] = field(default_factory=dict)

    def recorded(self, part: str, local: Path) -> Landed | None:
        """The record of ``part`` if it was made for this very local file, else None (and it is dropped)."""
        found = self._parts.get(part)
        if found is None:
            return None
        if found[0] != file_identity(local):
            del self._parts[part]
            return None
        return found[1]

    def start(self, part: str, local: Path, kept: Iterable[Range]) -> Landed:
        """A fresh record of ``part`` holding ``kept`` (what the retry found there)."""
        landed = Landed(kept)
        self._parts[part] = (file_identity(local), landed)
        return landed

    def forget(self, part: str) -> None:
        self._parts.pop(part, None)
