"""Verified, resumable, skip-if-same SFTP upload; what the upload and the download share (their errors, progress).

The download is :mod:`cosmos_assets.machines.sftp_download`.

- :func:`upload_files` skips files whose remote copy has the same size and sha256 (one pipelined round of
  SFTP stats, then one remote command hashing every same-size remote), writes to ``<remote>.part`` (keeping what
  an interrupted attempt left there: see :mod:`cosmos_assets.machines.transfer_resume`; a fresh large file goes
  over several SFTP channels at once), verifies the sha256 of what landed remotely (sync and hash in one command,
  started before the data so its shell start-up overlaps it), then renames into place.

Progress goes to a
``progress(bytes done, bytes total)`` callback over the whole transfer (e.g.
:meth:`cosmos_assets.progress.TransferProgress.callback`, which throttles the log lines). Every byte that
crossed the link is reported to :meth:`SshLink.carried`, so a reconnecting caller knows data flowed again.
"""

from __future__ import annotations

import logging
import posixpath
import stat as stat_mod
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko

from cosmos_assets.files import (
    sha256_file,
)
from cosmos_assets.machines import sftp_wire
from cosmos_assets.machines.remote_hash import (
    matching_blocks,
    remote_disk_full,
    same_remote_files,
    start_sync_and_sha256,
    sync_and_sha256,
)
from cosmos_assets.machines.remote_tree import make_remote_dirs
from cosmos_assets.machines.sftp_parallel import send_part_parallel
from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.machines.transfer_resume import (
    Landed,
    LandedParts,
    Range,
    check_block,
    clipped,
    merged,
    missing,
    prefix_length,
    split,
    total,
)
from cosmos_assets.progress import FileTransfer, TransferStats, rate_mb_s

_logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

PARALLEL_MIN_BYTES = 32 * 1024 * 1024  # a fresh upload this large goes over several channels (sftp_parallel)
TRANSFER_STALL_S = 60.0  # an SFTP channel with no answer for this long is a lost link (a black-holed connection)


class TransferVerificationError(OSError):
    """A transferred file's sha256 differs between the two ends."""


class LocalDiskFullError(OSError):
    """This computer's disk filled up during a download; nothing was put under a final name."""


class ByteProgress:
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


def _kept_in_part(
    link: SshLink, local: Path, part: str, part_attrs: paramiko.SFTPAttributes | None, size: int, record: LandedParts
) -> list[Range]:
    """The ranges of ``part`` a retry keeps: this process's record of what landed there (confirmed by the server;
    the final sha256 checks them), and past its prefix the blocks whose sha256 matches the local file's (writes
    land before their acknowledgements are read). A ``.part`` longer than the local file is from another file:
    nothing is kept."""
    part_size = part_attrs.st_size if part_attrs is not None else None
    if not part_size or part_size > size:
        return []
    landed = record.recorded(part, local)
    trusted = clipped(landed.ranges(), part_size) if landed is not None else []
    block = check_block(part_size)
    first = prefix_length(trusted) // block
    if first * block >= part_size:
        return trusted
    return merged([*trusted, *matching_blocks(link, local, part, part_size, block, first)])


def skipped_transfer(local: Path, remote: str, size: int, sha: str, seconds: float) -> FileTransfer:
    return FileTransfer(
        local=str(local),
        remote=remote,
        size=size,
        sha256=sha,
        bytes_sent=0,
        skipped=True,
        seconds=seconds,
        rate_mb_s=None,
    )


def _send_file(
    link: SshLink,
    sftp: paramiko.SFTPClient,
    local: Path,
    remote: str,
    progress: ByteProgress,
    record: LandedParts,
    resume: bool = True,
) -> FileTransfer:
    """Upload local to remote.part (keeping what already landed there), verify, rename into place.

    A resumed file that fails verification is sent again whole, once; a whole file that fails raises.
    """
    t0 = time.monotonic()
    size = local.stat().st_size
    part, parent = remote + ".part", posixpath.dirname(remote) or "."
    parent_attrs, part_attrs = sftp_wire.remote_stats(sftp, [parent, part])
    make_remote_dirs(sftp, parent, parent_attrs)
    kept = _kept_in_part(link, local, part, part_attrs, size, record) if resume else []
    landed = record.start(part, local, kept)
    todo = missing(size, kept)
    base = progress.value
    progress.add(size - total(todo))
    verifier = start_sync_and_sha256(link, part)  # its start-up overlaps the data
    try:
        try:
            if not kept and size >= PARALLEL_MIN_BYTES:
                sent, local_sha = send_part_parallel(
                    sftp, local, part, size, progress, landed, link.carried, TRANSFER_STALL_S
                )
            else:
                sent = _send_ranges(link, sftp, local, part, todo, bool(kept), landed, progress)
                local_sha = sha256_file(local)
        except OSError as error:
            full = remote_disk_full(link, part, size - total(landed.ranges()), error)
            if full is None:
                raise
            raise full from error
        _verify_part(link, sftp, local, part, local_sha, verifier, resumed=bool(kept))
    except _ResumedPartWrong:
        verifier.close()
        record.forget(part)
        progress.set(base)
        return _send_file(link, sftp, local, remote, progress, record, resume=False)
    finally:
        verifier.close()
    sftp.posix_rename(part, remote)
    record.forget(part)
    seconds = time.monotonic() - t0
    return FileTransfer(
        local=str(local),
        remote=remote,
        size=size,
        sha256=local_sha,
        bytes_sent=sent,
        skipped=False,
        resumed_from=size - total(todo),
        seconds=seconds,
        rate_mb_s=rate_mb_s(sent, seconds),
    )


def _send_ranges(
    link: SshLink,
    sftp: paramiko.SFTPClient,
    local: Path,
    part: str,
    todo: list[Range],
    keep: bool,
    landed: Landed,
    progress: ByteProgress,
) -> int:
    """Write the ``todo`` ranges of local into part over one channel (a fresh part unless ``keep``)."""
    step = sftp_wire.request_size(sftp)

    def pieces() -> Iterator[tuple[int, bytes]]:
        with open(local, "rb") as f:
            for start, length in split(todo, step):
                f.seek(start)
                data = f.read(length)
                if len(data) != length:
                    raise OSError(f"{local} shrank while uploading (at {start})")
                yield start, data

    def acked(offset: int, length: int) -> None:
        landed.add(offset, length)
        link.carried(length)

    with sftp.open(part, "r+b" if keep else "wb") as f:
        return sftp_wire.pipelined_write_at(sftp, f, pieces(), progress, acked)


class _ResumedPartWrong(Exception):
    """A resumed .part failed verification: it is removed and the file sent again whole."""


def _verify_part(
    link: SshLink,
    sftp: paramiko.SFTPClient,
    local: Path,
    part: str,
    local_sha: str,
    waiting: paramiko.Channel | None = None,
    resumed: bool = False,
) -> None:
    remote_sha = sync_and_sha256(link, part, waiting)
    if remote_sha != local_sha:
        try:
            sftp.remove(part)
        except OSError:
            pass
        if resumed:
            _logger.warning("resumed upload of %s to %s failed verification; sending it again whole", local, part)
            raise _ResumedPartWrong(part)
        raise TransferVerificationError(
            f"upload of {local} to {part} failed verification: local sha256 {local_sha}, "
            f"remote {remote_sha}; the .part file was removed, retry to send it again"
        )


def _skip_check(
    link: SshLink, sftp: paramiko.SFTPClient, items: list[tuple[Path, str]], sizes: list[int]
) -> list[str | None]:
    """:func:`same_remote_files` after one pipelined round of SFTP stats: the remote command (whose shell
    start-up can cost more than the stats) runs only when some remote has the local size."""
    stats = sftp_wire.remote_stats(sftp, [remote for _, remote in items])
    candidates = [
        i
        for i, (attrs, size) in enumerate(zip(stats, sizes))
        if attrs is not None and stat_mod.S_ISREG(attrs.st_mode or 0) and attrs.st_size == size
    ]
    same: list[str | None] = [None] * len(items)
    if candidates:
        found = same_remote_files(link, [items[i] for i in candidates], [sizes[i] for i in candidates])
        for i, sha in zip(candidates, found):
            same[i] = sha
    return same


def upload_files(
    link: SshLink, items: list[tuple[Path, str]], progress: ProgressFn | None = None, landed: LandedParts | None = None
) -> TransferStats:
    """Upload each (local file, remote path); ``progress(bytes done, bytes total)`` over all files.

    Files whose remote copy already has the same size and sha256 are skipped; that check is one remote
    command for all files. ``landed``: the same object for every retry of one upload, so a retry after a dropped
    link sends only what never landed (without it, what a ``.part`` holds is checked block by block).
    """
    t0 = time.monotonic()
    stats = TransferStats(direction="upload")
    items = [(Path(local), remote) for local, remote in items]
    sizes = [local.stat().st_size for local, _ in items]
    done = ByteProgress(progress, sum(sizes))
    record = landed if landed is not None else LandedParts()
    sftp = link.open_sftp()
    try:
        sftp.get_channel().settimeout(TRANSFER_STALL_S)
        same = _skip_check(link, sftp, items, sizes)
        checked = time.monotonic() - t0
        for (local, remote), size, sha in zip(items, sizes, same):
            base = done.value
            if sha is not None:
                stats.add(skipped_transfer(local, remote, size, sha, checked / len(items)))
            else:
                stats.add(_send_file(link, sftp, local, remote, done, record))
            done.set(base + size)
    finally:
        sftp.close()
    stats.seconds = time.monotonic() - t0
    _logger.info(
        "upload: %d sent, %d skipped, %d bytes in %.1fs",
        stats.files_sent,
        stats.files_skipped,
        stats.bytes_sent,
        stats.seconds,
    )
    return stats


# --------------------------------------------------------------------------- download
