"""Verified, resumable, all-at-once SFTP download: :func:`download_tree` copies into a temporary sibling folder, every
file verified, then renames it into place; after a lost link a retry continues from what arrived. An existing
destination is never overwritten (:func:`cosmos_assets.files.move_aside` moves it first). Downloads hash and write in
a thread so the reads never wait on the disk.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import time
from pathlib import Path

import paramiko

from cosmos_assets.files import (
    fsync_dir,
    hash_file,
    refuse_existing,
    remove_tree,
    rename_no_replace,
)
from cosmos_assets.machines import sftp_wire
from cosmos_assets.machines.disk_writer import DiskWriter
from cosmos_assets.machines.remote_hash import (
    same_remote_files,
    sha256_result,
    start_sha256,
)
from cosmos_assets.machines.remote_tree import list_remote_files
from cosmos_assets.machines.sftp_transfer import (
    TRANSFER_STALL_S,
    ByteProgress,
    LocalDiskFullError,
    ProgressFn,
    TransferVerificationError,
    skipped_transfer,
)
from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.machines.transfer_resume import (
    partial_folders,
)
from cosmos_assets.progress import FileTransfer, TransferStats, rate_mb_s

_logger = logging.getLogger(__name__)
DOWNLOAD_QUEUE_CHUNKS = 64  # chunks (up to 252 KiB each) read ahead of the download's disk writer


def _download_file(
    link: SshLink,
    sftp: paramiko.SFTPClient,
    remote: str,
    size: int,
    part: Path,
    progress: ByteProgress,
    resume: bool = True,
) -> FileTransfer:
    """Download remote into ``part``, continuing a shorter ``part`` from its end (trusted by size: the sha256 of
    the whole file is checked against the remote's, and a resumed file that fails is fetched again whole, once)."""
    t0 = time.monotonic()
    hashing = start_sha256(link, remote)  # runs while we download
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if resume and part.exists() else 0
    offset = have if have <= size else 0
    base = progress.value
    try:
        hasher = hash_file(part, offset) if offset else hashlib.sha256()
        progress.add(offset)
        with sftp.open(remote, "rb") as rf, open(part, "r+b" if offset else "wb") as lf:
            lf.seek(offset)
            lf.truncate()
            writer = DiskWriter(lf, hasher, DOWNLOAD_QUEUE_CHUNKS)
            try:
                for data in sftp_wire.pipelined_read(sftp, rf, size, offset):
                    link.carried(len(data))
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
        if offset:
            _logger.warning("resumed download of %s failed verification; fetching it again whole", remote)
            progress.set(base)
            return _download_file(link, sftp, remote, size, part, progress, resume=False)
        part.unlink(missing_ok=True)
        raise TransferVerificationError(
            f"download of {remote} failed verification: remote sha256 {expected}, received {got}"
        )
    seconds = time.monotonic() - t0
    return FileTransfer(
        local=str(part),
        remote=remote,
        size=size,
        sha256=got,
        bytes_sent=size - offset,
        skipped=False,
        resumed_from=offset,
        seconds=seconds,
        rate_mb_s=rate_mb_s(size - offset, seconds),
    )


def _already_here(link: SshLink, staging: Path, remote_dir: str, files: list[tuple[str, int]]) -> dict[str, str]:
    """rel -> sha256 of the files an earlier attempt finished in ``staging`` that still equal the remote ones;
    anything else in ``staging`` is removed."""
    wanted = dict(files)
    present = [p for p in staging.rglob("*") if p.is_file() or p.is_symlink()]
    candidates: list[tuple[Path, str]] = []
    for path in present:
        rel = path.relative_to(staging).as_posix()
        if path.is_symlink() or wanted.get(rel) != path.stat().st_size:
            path.unlink()
        else:
            candidates.append((path, rel))
    if not candidates:
        return {}
    same = same_remote_files(link, [(p, posixpath.join(remote_dir, rel)) for p, rel in candidates])
    kept: dict[str, str] = {}
    for (path, rel), sha in zip(candidates, same):
        if sha is None:
            path.unlink()
        else:
            kept[rel] = sha
    return kept


def download_tree(
    link: SshLink,
    remote_dir: str,
    local_dir: Path,
    progress: ProgressFn | None = None,
    files: list[tuple[str, int]] | None = None,
) -> TransferStats:
    """Copy remote_dir to local_dir (which must not exist), verified, appearing all at once.

    Files land in ``.<name>.partial-<key>`` beside local_dir (each first as a ``.part`` in ``.<name>.parts-<key>``)
    and the folder is renamed into place when all are verified. When the link is lost both stay, and a retry of
    the same download keeps the files that arrived whole (checked against the remote sha256) and continues each
    ``.part`` from its end; any other failure removes them. An existing local_dir raises FileExistsError: move it
    first (:func:`cosmos_assets.files.move_aside`). ``files``: :func:`list_remote_files` of remote_dir when the
    caller already listed it.
    """
    local_dir = Path(local_dir)
    refuse_existing(local_dir)
    t0 = time.monotonic()
    sftp = link.open_sftp()
    staging, parts = partial_folders(local_dir, remote_dir)
    stats = TransferStats(direction="download")
    try:
        sftp.get_channel().settimeout(TRANSFER_STALL_S)
        files = files if files is not None else list_remote_files(sftp, remote_dir)
        done = ByteProgress(progress, sum(size for _, size in files))
        staging.mkdir(parents=True, exist_ok=True)
        here = _already_here(link, staging, remote_dir, files)
        for rel, size in files:
            target = staging / rel
            if not target.resolve().is_relative_to(staging.resolve()):
                raise OSError(f"remote file {rel!r} would land outside {local_dir}; refusing it")
            if rel in here:
                stats.add(skipped_transfer(target, posixpath.join(remote_dir, rel), size, here[rel], 0.0))
                done.add(size)
                continue
            part = parts / (rel + ".part")
            item = _download_file(link, sftp, posixpath.join(remote_dir, rel), size, part, done)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            item.local = str(target)
            stats.add(item)
        remove_tree(parts)
        fsync_dir(staging)
        rename_no_replace(staging, local_dir)
        fsync_dir(local_dir.parent)
        for item in stats.files:  # name the files where they now are
            item.local = str(local_dir / Path(item.local).relative_to(staging))
    except BaseException as error:
        if not (isinstance(error, Exception) and link.lost(error)):
            remove_tree(staging)
            remove_tree(parts)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise LocalDiskFullError(
                f"download from {link.label} into {local_dir} failed: the local disk is full ({error.strerror}). "
                f"Free space on the disk holding {local_dir.parent}, then run again (the outputs stay on the host)"
            ) from error
        raise
    finally:
        sftp.close()
    stats.seconds = time.monotonic() - t0
    return stats
