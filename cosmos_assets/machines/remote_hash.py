"""sha256, fsync and free space of remote files, over an :class:`~cosmos_assets.machines.ssh_link.SshLink`.

Remote hashing runs as ``sh -c SCRIPT sh ARG...``: paths are arguments, never part of the script. It uses
OpenSSL when the host has it (SHA-NI/AVX code: ~3x coreutils sha256sum on the benchmark machine), else
sha256sum; each file's digest is printed alone on a line.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path

import paramiko

from cosmos_assets.files import sha256_file
from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.machines.transfer_resume import Range, kept_blocks, local_block_hashes, total
from cosmos_assets.progress import format_bytes

_logger = logging.getLogger(__name__)

REMOTE_HASH_TIMEOUT_S = 600.0
DISK_FULL_MARGIN = 1024 * 1024  # less free than what is left to send plus this: the disk is what failed

_HASHER_SH = (
    "if openssl dgst -sha256 -r </dev/null >/dev/null 2>&1; then h() { openssl dgst -sha256 -r; }; "
    "else h() { sha256sum; }; fi; "
)
SHA256_SH = _HASHER_SH + 'o=$(h < "$1") || exit 2; printf "%s\\n" "${o%% *}"'
# sync and hash the same file at once; exit status is the hash's, a failed sync is only reported.
# It first waits for a "go" line on stdin: started before the data is sent (so the remote shell's
# start-up, e.g. a heavy ~/.bashrc, overlaps the transfer) and told to go once every write landed.
SYNC_SHA256_SH = (
    _HASHER_SH + 'read -r go && [ "$go" = go ] || exit 3; '
    'sync -- "$1" & s=$!; o=$(h < "$1") || exit 2; printf "%s\\n" "${o%% *}"; '
    'wait "$s" || echo "remote sync failed" >&2'
)
# args: size1 path1 size2 path2 ...; first one line per file: "=" if it is a regular file of that
# size, else "-"; then per file its sha256 if it (still) has that size, else "-"
SAME_SIZE_SHA256_SH = _HASHER_SH + (
    "k=s; for a; do if [ $k = s ]; then s=$a; k=f; else k=s; "
    'if [ -f "$a" ] && [ "$(wc -c < "$a")" -eq "$s" ]; then echo =; else echo -; fi; fi; done; '
    "k=s; for a; do if [ $k = s ]; then s=$a; k=f; else k=s; "
    'if [ -f "$a" ] && [ "$(wc -c < "$a")" -eq "$s" ] && o=$(h < "$a"); then printf "%s\\n" "${o%% *}"; '
    "else echo -; fi; fi; done"
)
# args: path block length first; the sha256 of each block of a file of `length` bytes from block `first`, one a
# line (dd reads a regular file in whole blocks; the last block is whatever is left up to the file's end, so
# `length` is the file's size)
BLOCKS_SHA256_SH = _HASHER_SH + (
    'i=$4; while [ $((i * $2)) -lt "$3" ]; do o=$(dd if="$1" bs="$2" skip="$i" count=1 2>/dev/null | h) || exit 2; '
    'printf "%s\\n" "${o%% *}"; i=$((i + 1)); done'
)


class RemoteCommandError(RuntimeError):
    """A helper command run over SSH (sha256, sync) failed."""


class RemoteDiskFullError(OSError):
    """The host's disk filled up during an upload; the message names the host, the folder and the fix."""

    cause = "host_not_ready"  # the run's failure cause: a retry cannot help until space is freed


def sh(script: str, *args: str) -> list[str]:
    """argv running ``script`` with ``args`` as its positional parameters."""
    return ["sh", "-c", script, "sh", *args]


def start_sha256(link: SshLink, path: str) -> paramiko.Channel:
    """Start hashing a remote file; collect it with ``sha256_result(path, link.finish(chan))``."""
    return link.start(sh(SHA256_SH, path), REMOTE_HASH_TIMEOUT_S)


def sha256_result(path: str, result: tuple[int, str, str]) -> str:
    code, out, err = result
    if code != 0 or not out:
        raise RemoteCommandError(f"sha256 of remote {path!r} failed ({code}): {err.strip()}")
    # sha256sum prefixes a backslash when it escapes an unusual file name
    return out.split()[0].lstrip("\\")


def remote_sha256(link: SshLink, path: str) -> str:
    """sha256 of a remote file; RemoteCommandError if it fails. The product starts the hash beside a transfer
    (:func:`start_sha256`); this blocking form is the transfer benchmark's (bench/bench_transfer.py)."""
    return sha256_result(path, link.finish(start_sha256(link, path)))


def start_sync_and_sha256(link: SshLink, path: str) -> paramiko.Channel:
    """Start the command of :func:`sync_and_sha256`; it waits until told to go."""
    return link.start(sh(SYNC_SHA256_SH, path), REMOTE_HASH_TIMEOUT_S)


def sync_and_sha256(link: SshLink, path: str, waiting: paramiko.Channel | None = None) -> str:
    """fsync a remote file (best effort, logged) and hash it, both at once in one remote command.

    ``waiting``: that command already started by :func:`start_sync_and_sha256`; it starts work now.
    """
    chan = waiting if waiting is not None else start_sync_and_sha256(link, path)
    try:
        chan.sendall(b"go\n")
        chan.shutdown_write()
    except BaseException:
        chan.close()
        raise
    code, out, err = link.finish(chan)
    if "remote sync failed" in err:
        _logger.warning("remote sync of %r failed: %s", path, err.strip())
    return sha256_result(path, (code, out, err))


def start_block_sha256(link: SshLink, path: str, block: int, length: int, first: int = 0) -> paramiko.Channel:
    """Start hashing a remote file block by block from block ``first``; collect with
    ``block_sha256_result(path, link.finish(chan))``."""
    return link.start(sh(BLOCKS_SHA256_SH, path, str(block), str(length), str(first)), REMOTE_HASH_TIMEOUT_S)


def block_sha256_result(path: str, result: tuple[int, str, str]) -> list[str]:
    code, out, err = result
    hashes = out.split()
    if code != 0 or not all(_is_sha256(h) for h in hashes):
        raise RemoteCommandError(f"block sha256 of remote {path!r} failed ({code}): {err.strip()}")
    return hashes


def remote_free_bytes(link: SshLink, path: str) -> int | None:
    """Bytes free on the filesystem of remote ``path`` (POSIX ``df -Pk``); None when df cannot tell."""
    code, out, _ = link.exec(["df", "-Pk", "--", path])
    lines = out.strip().splitlines()
    try:
        return int(lines[-1].split()[3]) * 1024 if code == 0 and len(lines) >= 2 else None
    except (ValueError, IndexError):
        return None


def matching_blocks(link: SshLink, local: Path, part: str, part_size: int, block: int, first: int = 0) -> list[Range]:
    """The blocks of remote ``part`` (``part_size`` bytes), from block ``first``, whose sha256 equals the same
    block of ``local``.

    One remote command hashes the blocks while the local ones are hashed here. If it fails none is kept.
    """
    remote_hashing = start_block_sha256(link, part, block, part_size, first)
    try:
        mine = local_block_hashes(local, part_size, block, first)
        theirs = block_sha256_result(part, link.finish(remote_hashing))
    except RemoteCommandError as error:
        _logger.info("not keeping %s past block %d: its blocks could not be checked (%s)", part, first, error)
        return []
    finally:
        remote_hashing.close()
    kept = kept_blocks(part_size, block, theirs, mine, first)
    checked = part_size - first * block
    if total(kept) < checked:
        _logger.info(
            "%s: %d of the %d bytes checked match %s; the rest is sent again", part, total(kept), checked, local
        )
    return kept


def remote_disk_full(link: SshLink, part: str, needed: int, error: OSError) -> RemoteDiskFullError | None:
    """A :class:`RemoteDiskFullError` when ``error`` (a failed upload of ``part``) came from a full remote disk."""
    if isinstance(error, TimeoutError) or not link.answers():
        return None  # the link, not the disk (asking df now would reconnect or wait)
    folder = posixpath.dirname(part) or "."
    try:
        free = remote_free_bytes(link, folder)
    except Exception:  # noqa: BLE001 - df itself failed: say nothing more than the error
        return None
    if free is None or free >= needed + DISK_FULL_MARGIN:
        return None
    return RemoteDiskFullError(
        f"upload to {link.label} failed: the disk holding {folder} is full ({format_bytes(free)} free, "
        f"{format_bytes(needed)} still to send). Free space on {link.label} (old outputs/<prompt>/<run_id> folders, "
        f"`docker image prune`) or point REMOTE_DIR at a bigger disk, then run again: {posixpath.basename(part)} "
        "keeps what arrived"
    )


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def same_remote_files(link: SshLink, files: list[tuple[Path, str]], sizes: list[int] | None = None) -> list[str | None]:
    """For each (local, remote): the sha256 if the remote has the same size and sha256, else None.

    One remote command for all files (one round trip, not one per file): it first reports which remotes have
    the local size, then hashes those while we hash the same local files.
    """
    if not files:
        return []
    sizes = sizes if sizes is not None else [Path(local).stat().st_size for local, _ in files]
    args = [a for (_, remote), size in zip(files, sizes) for a in (str(size), remote)]
    chan = link.start(sh(SAME_SIZE_SHA256_SH, *args), REMOTE_HASH_TIMEOUT_S)
    try:
        out = chan.makefile("rb")
        same_size = [out.readline().strip() == b"=" for _ in files]
        local_sha = [sha256_file(Path(local)) if match else None for (local, _), match in zip(files, same_size)]
        remote_sha = [out.readline().decode(errors="replace").strip() for _ in files]
        code = chan.recv_exit_status()
        if code != 0 or not all(remote_sha):
            err = chan.makefile_stderr("rb").read().decode(errors="replace")
            raise RemoteCommandError(f"remote size/sha256 check failed ({code}): {err.strip()}")
    finally:
        chan.close()
    return [
        mine if mine is not None and _is_sha256(theirs) and theirs == mine else None
        for mine, theirs in zip(local_sha, remote_sha)
    ]
