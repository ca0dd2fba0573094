"""Verified, resumable, skip-if-same SFTP upload and verified all-at-once download.

- :func:`upload_files` skips files whose remote copy has the same size and sha256 (one pipelined round of
  SFTP stats, then one remote command hashing every same-size remote), writes to ``<remote>.part`` (resuming a
  ``.part`` whose content is a prefix of the local file; a fresh large file goes over several SFTP channels at
  once), verifies the sha256 of what landed remotely (sync and hash in one command, started before the data so
  its shell start-up overlaps it), then renames into place.
- :func:`download_tree` copies into a temporary sibling folder, every file verified, then renames it into place;
  an existing destination is never overwritten (:func:`cosmos_assets.files.move_aside` moves it first).

Downloads hash and write in a thread so the reads never wait on the disk. Progress goes to a
``progress(bytes done, bytes total)`` callback over the whole transfer (e.g.
:meth:`cosmos_assets.progress.TransferProgress.callback`, which throttles the log lines).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import queue
import secrets
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import paramiko

from cosmos_assets.files import (
    fsync_dir,
    hash_file,
    plain_folder_name,
    refuse_existing,
    remove_tree,
    rename_no_replace,
)
from cosmos_assets.machines import sftp_wire
from cosmos_assets.machines.remote_hash import (
    same_remote_files,
    sha256_result,
    start_sha256,
    start_sync_and_sha256,
    sync_and_sha256,
)
from cosmos_assets.machines.sftp_parallel import send_part_parallel
from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.progress import FileTransfer, TransferStats, rate_mb_s

_logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

PARALLEL_MIN_BYTES = 32 * 1024 * 1024  # a fresh upload this large goes over several channels (sftp_parallel)
DOWNLOAD_QUEUE_CHUNKS = 64  # chunks (up to 252 KiB each) read ahead of the download's disk writer
MAX_TREE_DEPTH = 64


class TransferVerificationError(OSError):
    """A transferred file's sha256 differs between the two ends."""


class _Progress:
    """Bytes done over a whole transfer, passed to ``progress(done, total)`` as they grow (always in order)."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress, self.total, self.value = progress, total, 0

    def add(self, nbytes: int) -> None:
        self.set(self.value + nbytes)

    def set(self, done: int) -> None:
        self.value = done
        if self.progress is not None:
            self.progress(done, self.total)


# --------------------------------------------------------------------------- upload


def _read_local(path: Path, offset: int, step: int, hasher: "hashlib._Hash") -> Iterator[bytes]:
    """Chunks of ``path`` from ``offset``, fed to ``hasher`` on the way."""
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(step):
            hasher.update(chunk)
            yield chunk


def _remote_stat(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None


def make_remote_dirs(sftp: paramiko.SFTPClient, remote_dir: str, attrs: paramiko.SFTPAttributes | None = None) -> None:
    """mkdir -p over SFTP (``attrs``: remote_dir's stat when the caller has it)."""
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
            except OSError:
                if _remote_stat(sftp, str(current)) is None:  # not a lost race with another writer
                    raise
        elif not stat_mod.S_ISDIR(attrs.st_mode or 0):
            raise NotADirectoryError(f"remote {current} exists and is not a directory")


def _resume_state(link: SshLink, local: Path, part: str, part_attrs: paramiko.SFTPAttributes | None,
                  size: int) -> tuple[int, "hashlib._Hash"]:  # fmt: skip
    """(bytes of ``part`` to keep, sha256 state of the local file up to there).

    A ``.part`` is kept when its content is exactly a prefix of the local file, else restarted.
    """
    part_size = part_attrs.st_size if part_attrs is not None else None
    if not part_size or part_size > size:
        return 0, hashlib.sha256()
    remote_hashing = start_sha256(link, part)  # runs beside the local hash
    try:
        prefix = hash_file(local, part_size)
        remote_prefix = sha256_result(part, link.finish(remote_hashing))
    finally:
        remote_hashing.close()
    if remote_prefix == prefix.hexdigest():
        return part_size, prefix
    _logger.info("restarting %s: its content is not a prefix of %s", part, local)
    return 0, hashlib.sha256()


def _skipped(local: Path, remote: str, size: int, sha: str, seconds: float) -> FileTransfer:
    return FileTransfer(local=str(local), remote=remote, size=size, sha256=sha, bytes_sent=0, skipped=True,
                        seconds=seconds, rate_mb_s=None)  # fmt: skip


def _send_file(link: SshLink, sftp: paramiko.SFTPClient, local: Path, remote: str, progress: _Progress) -> FileTransfer:
    """Upload local to remote.part (resuming it when it is a prefix), verify, rename into place."""
    t0 = time.monotonic()
    size = local.stat().st_size
    part, parent = remote + ".part", posixpath.dirname(remote) or "."
    parent_attrs, part_attrs = sftp_wire.remote_stats(sftp, [parent, part])
    make_remote_dirs(sftp, parent, parent_attrs)
    offset, hasher = _resume_state(link, local, part, part_attrs, size)
    progress.add(offset)
    verifier = start_sync_and_sha256(link, part)  # its start-up overlaps the data
    try:
        if offset == 0 and size >= PARALLEL_MIN_BYTES:
            sent, local_sha = send_part_parallel(sftp, local, part, size, progress)
        else:
            sent = _send_part(sftp, local, part, offset, hasher, progress)
            local_sha = hasher.hexdigest()
        _verify_part(link, sftp, local, part, local_sha, verifier)
    finally:
        verifier.close()
    sftp.posix_rename(part, remote)
    seconds = time.monotonic() - t0
    return FileTransfer(local=str(local), remote=remote, size=size, sha256=local_sha, bytes_sent=sent, skipped=False,
                        resumed_from=offset, seconds=seconds, rate_mb_s=rate_mb_s(sent, seconds))  # fmt: skip


def _send_part(sftp: paramiko.SFTPClient, local: Path, part: str, offset: int, hasher: "hashlib._Hash",
               progress: _Progress) -> int:  # fmt: skip
    """Write local[offset:] into part at offset (truncating anything after); hasher sees the bytes."""
    with sftp.open(part, "r+b" if offset else "wb") as f:
        if offset:
            f.truncate(offset)
        chunks = _read_local(local, offset, sftp_wire.request_size(sftp), hasher)
        return sftp_wire.pipelined_write(sftp, f, chunks, offset, progress)


def _verify_part(link: SshLink, sftp: paramiko.SFTPClient, local: Path, part: str, local_sha: str,
                 waiting: paramiko.Channel | None = None) -> None:  # fmt: skip
    remote_sha = sync_and_sha256(link, part, waiting)
    if remote_sha != local_sha:
        try:
            sftp.remove(part)
        except OSError:
            pass
        raise TransferVerificationError(
            f"upload of {local} to {part} failed verification: local sha256 {local_sha}, "
            f"remote {remote_sha}; the .part file was removed, retry to send it again"
        )


def _skip_check(link: SshLink, sftp: paramiko.SFTPClient, items: list[tuple[Path, str]], sizes: list[int]) -> list[str | None]:
    """:func:`same_remote_files` after one pipelined round of SFTP stats: the remote command (whose shell
    start-up can cost more than the stats) runs only when some remote has the local size."""
    stats = sftp_wire.remote_stats(sftp, [remote for _, remote in items])
    candidates = [i for i, (attrs, size) in enumerate(zip(stats, sizes))
                  if attrs is not None and stat_mod.S_ISREG(attrs.st_mode or 0) and attrs.st_size == size]  # fmt: skip
    same: list[str | None] = [None] * len(items)
    if candidates:
        found = same_remote_files(link, [items[i] for i in candidates], [sizes[i] for i in candidates])
        for i, sha in zip(candidates, found):
            same[i] = sha
    return same


def upload_files(link: SshLink, items: list[tuple[Path, str]], progress: ProgressFn | None = None) -> TransferStats:
    """Upload each (local file, remote path); ``progress(bytes done, bytes total)`` over all files.

    Files whose remote copy already has the same size and sha256 are skipped; that check is one remote
    command for all files.
    """
    t0 = time.monotonic()
    stats = TransferStats(direction="upload")
    items = [(Path(local), remote) for local, remote in items]
    sizes = [local.stat().st_size for local, _ in items]
    done = _Progress(progress, sum(sizes))
    sftp = link.open_sftp()
    try:
        same = _skip_check(link, sftp, items, sizes)
        checked = time.monotonic() - t0
        for (local, remote), size, sha in zip(items, sizes, same):
            base = done.value
            if sha is not None:
                stats.add(_skipped(local, remote, size, sha, checked / len(items)))
            else:
                stats.add(_send_file(link, sftp, local, remote, done))
            done.set(base + size)
    finally:
        sftp.close()
    stats.seconds = time.monotonic() - t0
    _logger.info("upload: %d sent, %d skipped, %d bytes in %.1fs", stats.files_sent, stats.files_skipped,
                 stats.bytes_sent, stats.seconds)  # fmt: skip
    return stats


# --------------------------------------------------------------------------- download


def list_remote_files(sftp: paramiko.SFTPClient, remote_dir: str) -> list[tuple[str, int]]:
    """(path relative to remote_dir, size) of every regular file below it (symlinks followed).

    Every name the server lists must be a plain name, so no listed path leaves ``remote_dir``.
    """
    found: list[tuple[str, int]] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        if rel.count("/") >= MAX_TREE_DEPTH:
            raise OSError(f"{remote_dir} has folders nested over {MAX_TREE_DEPTH} deep (a symlink loop?); fix it on the host")
        for entry in sftp.listdir_attr(posixpath.join(remote_dir, rel) if rel else remote_dir):
            plain_folder_name(entry.filename, f"file name listed by the server under {remote_dir}")
            child = f"{rel}/{entry.filename}" if rel else entry.filename
            attrs = entry
            if stat_mod.S_ISLNK(entry.st_mode or 0):
                attrs = sftp.stat(posixpath.join(remote_dir, child))
            if stat_mod.S_ISDIR(attrs.st_mode or 0):
                stack.append(child)
            elif stat_mod.S_ISREG(attrs.st_mode or 0):
                found.append((child, attrs.st_size or 0))
    return sorted(found)


class _DiskWriter:
    """Hashes and writes a download's chunks in a thread, so the SFTP reads never wait on them.

    The queue is bounded (DOWNLOAD_QUEUE_CHUNKS); after a write error the thread keeps draining it
    (dropping the data) so the reader never blocks, and ``put``/``close`` raise that error.
    """

    def __init__(self, f: BinaryIO) -> None:
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


def _download_file(link: SshLink, sftp: paramiko.SFTPClient, remote: str, size: int, local: Path,
                   progress: _Progress) -> FileTransfer:  # fmt: skip
    t0 = time.monotonic()
    hashing = start_sha256(link, remote)  # runs while we download
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        with sftp.open(remote, "rb") as rf, open(local, "wb") as lf:
            writer = _DiskWriter(lf)
            try:
                for data in sftp_wire.pipelined_read(sftp, rf, size):
                    writer.put(data)
                    progress.add(len(data))
            finally:
                writer.close()
            lf.flush()
            os.fsync(lf.fileno())
        expected = sha256_result(remote, link.finish(hashing))
    finally:
        hashing.close()
    got = writer.hasher.hexdigest()
    if got != expected:
        raise TransferVerificationError(f"download of {remote} failed verification: remote sha256 {expected}, received {got}")
    seconds = time.monotonic() - t0
    return FileTransfer(local=str(local), remote=remote, size=size, sha256=got, bytes_sent=size, skipped=False,
                        seconds=seconds, rate_mb_s=rate_mb_s(size, seconds))  # fmt: skip


def download_tree(link: SshLink, remote_dir: str, local_dir: Path, progress: ProgressFn | None = None,
                  files: list[tuple[str, int]] | None = None) -> TransferStats:  # fmt: skip
    """Copy remote_dir to local_dir (which must not exist), verified, appearing all at once.

    Files land in ``local_dir.parent/.<name>.partial-<random>`` and the folder is renamed into place when all
    are verified. An existing local_dir raises FileExistsError: move it first (:func:`cosmos_assets.files.move_aside`).
    ``files``: :func:`list_remote_files` of remote_dir when the caller already listed it.
    """
    local_dir = Path(local_dir)
    refuse_existing(local_dir)
    t0 = time.monotonic()
    sftp = link.open_sftp()
    staging = local_dir.parent / f".{local_dir.name}.partial-{secrets.token_hex(4)}"
    stats = TransferStats(direction="download")
    try:
        files = files if files is not None else list_remote_files(sftp, remote_dir)
        done = _Progress(progress, sum(size for _, size in files))
        staging.mkdir(parents=True)
        for rel, size in files:
            target = staging / rel
            if not target.resolve().is_relative_to(staging.resolve()):
                raise OSError(f"remote file {rel!r} would land outside {local_dir}; refusing it")
            stats.add(_download_file(link, sftp, posixpath.join(remote_dir, rel), size, target, done))
        fsync_dir(staging)
        rename_no_replace(staging, local_dir)
        fsync_dir(local_dir.parent)
        for item in stats.files:  # name the files where they now are
            item.local = str(local_dir / Path(item.local).relative_to(staging))
    except BaseException:
        remove_tree(staging)
        raise
    finally:
        sftp.close()
    stats.seconds = time.monotonic() - t0
    return stats
