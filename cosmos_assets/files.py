"""Local file primitives, one of each: atomic write, no-replace rename, move-aside, hashing, fsync, new temp names.

Nothing here knows about runs or hosts. Every writer in the package goes through these, so "a file is
either the old one or the whole new one", "an earlier run's folder is never overwritten" and "what we write
has the permissions the umask allows" (group-shareable on a studio's shared folder) hold in one place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

HASH_BLOCK = 4 * 1024 * 1024
COPY_BLOCK = 1024 * 1024


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# What a new file or folder asks the kernel for. The kernel takes the umask off (or, in a folder with a default
# ACL, applies that ACL), and a folder made in a setgid folder inherits its group and the setgid bit. tempfile's
# mkstemp (0600) and mkdtemp (0700) ignore the umask: renamed into place, nobody else on a shared folder could open
# what we wrote, so every temp-then-rename path uses new_temp_file / new_temp_path / new_temp_folder instead.
FILE_MODE = 0o666
FOLDER_MODE = 0o777
TEMP_NAME_TRIES = 100

_PROC_STATUS = "/proc/self/status"
_umask_lock = threading.Lock()
_umask_fallback: int | None = None


def process_umask() -> int:
    """This process's umask, read without changing it (Linux >= 4.7: ``Umask:`` in /proc/self/status).

    Writing needs none of this (the kernel applies the umask to FILE_MODE/FOLDER_MODE); it says which modes that
    gives. Without /proc it is set and restored once, under a lock, and remembered: a thread creating a file in
    that instant would get 022 instead, so this is never done per call.
    """
    global _umask_fallback
    try:
        with open(_PROC_STATUS, "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        if _umask_fallback is None:
            _umask_fallback = os.umask(0o022)
            os.umask(_umask_fallback)
        return _umask_fallback


def umask_file_mode() -> int:
    """The permission bits a new file of ours gets: 0o666 less the umask (0o664 under a studio's 002)."""
    return FILE_MODE & ~process_umask()


def umask_folder_mode() -> int:
    """The permission bits a new folder of ours gets: 0o777 less the umask (0o775 under 002; setgid kept)."""
    return FOLDER_MODE & ~process_umask()


def _temp_name(directory: Path, prefix: str, suffix: str) -> Path:
    return Path(directory) / f"{prefix}{os.urandom(5).hex()}{suffix}"


def new_temp_file(directory: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new empty file ``directory/<prefix><random><suffix>``, open for reading and writing: (fd, path).

    Never an existing name or a symlink (O_EXCL); its mode is what the umask allows, as for any file we write.
    """
    for _ in range(TEMP_NAME_TRIES):
        path = _temp_name(directory, prefix, suffix)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name {prefix}*{suffix} in {directory}", str(directory))


def new_temp_path(directory: Path, prefix: str, suffix: str) -> Path:
    """:func:`new_temp_file`, closed: for writers that open the file by name (PyAV's muxer truncates, keeping its mode)."""
    fd, path = new_temp_file(directory, prefix, suffix)
    os.close(fd)
    return path


def new_temp_folder(directory: Path, prefix: str) -> Path:
    """A new empty folder ``directory/<prefix><random>`` with the mode the umask allows (and a setgid parent's group)."""
    for _ in range(TEMP_NAME_TRIES):
        path = _temp_name(directory, prefix, "")
        try:
            os.mkdir(path, FOLDER_MODE)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary folder name {prefix}* in {directory}", str(directory))


def synced_temp_file(directory: Path, name: str, data: bytes) -> Path:
    """A hidden temp file ``.<name>.*.tmp`` in ``directory`` holding ``data``, flushed to disk (for rename or link)."""
    fd, temp = new_temp_file(directory, f".{name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` so readers see the old file or the whole new one (temp + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = synced_temp_file(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_new(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data``, whole or not at all, never over an existing file (FileExistsError)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = synced_temp_file(path.parent, path.name, data)
    try:
        os.link(temp, path)  # fails if the target exists: no window between the check and the write
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(data: Any) -> bytes:
    """The one JSON layout of every file we write: two-space indent, UTF-8 as is, a final newline."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json_bytes(data))


def hash_file(path: Path, length: int | None = None, block: int = HASH_BLOCK) -> hashlib._Hash:
    """sha256 state over the first ``length`` bytes of ``path`` (all of it when None)."""
    hasher = hashlib.sha256()
    left = length
    with open(path, "rb") as handle:
        while left is None or left > 0:
            chunk = handle.read(block if left is None else min(block, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            hasher.update(chunk)
    return hasher


def sha256_file(path: Path) -> str:
    return hash_file(path).hexdigest()


def same_file_content(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)


def copy_verified(src: Path, dst: Path, on_bytes: Callable[[int], None] | None = None) -> None:
    """Copy to a temp name beside ``dst`` (hashing on the way), check it against the source, rename into place.

    ``dst`` gets the mode the umask allows, never the source's (a model's or another user's 0600 file stays its own).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_temp_file(dst.parent, f".{dst.name}.", ".part")
    try:
        hasher = hashlib.sha256()
        with os.fdopen(fd, "wb") as writer, open(src, "rb") as reader:
            while block := reader.read(COPY_BLOCK):
                writer.write(block)
                hasher.update(block)
                if on_bytes is not None:
                    on_bytes(len(block))
            writer.flush()
            os.fsync(writer.fileno())
        if sha256_file(tmp) != hasher.hexdigest():
            raise OSError(f"copy of {src} to {dst} does not match its source (sha256); disk full or failing?")
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def refuse_existing(path: Path) -> None:
    if path.exists() or path.is_symlink():
        raise FileExistsError(
            f"{path} already exists and is not overwritten; move it aside first "
            "(cosmos_assets.files.move_aside) or choose another destination"
        )


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_no_replace(src: Path, dst: Path) -> None:
    """Atomic rename that fails with FileExistsError if ``dst`` exists (Linux renameat2)."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL/ENOSYS: the filesystem lacks the flag
            if err == errno.EEXIST:
                raise FileExistsError(err, f"{dst} already exists and is not overwritten", str(dst))
            raise OSError(err, os.strerror(err), str(src))
    refuse_existing(dst)  # fallback: check then rename (small race)
    os.rename(src, dst)


def plain_folder_name(name: str, what: str) -> str:
    """``name`` when it is one path component (no '/', not '.', '..' or empty); else ValueError naming ``what``."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise ValueError(f"{what} {name!r} is not a plain folder name")
    return name


def move_aside(folder: Path, previous_root: Path, run_id: str) -> Path:
    """Rename ``folder`` to ``previous_root/<folder name>/<run_id>`` atomically, never over an existing one.

    A second folder of the same ``run_id`` gets a short random suffix. Returns where it went.
    """
    plain_folder_name(run_id, "run_id")
    dest_parent = Path(previous_root) / Path(folder).name
    dest_parent.mkdir(parents=True, exist_ok=True)
    dest = dest_parent / run_id
    while True:
        try:
            rename_no_replace(Path(folder), dest)
            return dest
        except FileExistsError:
            if not Path(folder).exists():
                raise
            dest = dest_parent / f"{run_id}_{os.urandom(3).hex()}"


# ---------------------------------------------------------------------------------------------------------
# bounded reads of files named by a setting or the user


class UnsafeReadError(OSError):
    """A file named by a setting or the user that is not a regular file or is larger than we read; the message
    (one line) names it and the fix. An OSError, so a reader that skips unreadable files skips it too. ``reason``
    says which: ``"link"``, ``"not_regular"`` or ``"too_large"``."""

    def __init__(self, what: str, path: Path, detail: str, reason: str) -> None:
        super().__init__(f"{what} {printable_path(path)} {detail}")
        self.reason = reason
        self.detail = detail  # what is wrong and the fix, without the file: for a message that names it already


def read_bounded(path: Path, limit: int, what: str, *, follow_links: bool = True) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    ``/dev/null`` reads as empty. A FIFO, another device, a socket or a folder, or a file over ``limit`` bytes,
    raises :class:`UnsafeReadError` naming ``what`` (the setting or the kind of file), the path and the fix. Opened
    non-blocking, so a FIFO with no writer is refused at once instead of hanging; at most ``limit + 1`` bytes are
    read whatever the size said (a file growing meanwhile, or /proc files that show size 0). A missing or unreadable
    file raises the usual OSError. ``follow_links=False`` refuses a symbolic link as the last part of the path (a
    link planted in a folder we list, such as ``outputs/.runs``).
    """

    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_links:
            raise UnsafeReadError(
                what, path, "is a symbolic link, not a regular file; replace it with the file itself", "link"
            ) from None
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == os.stat(os.devnull).st_rdev:
            return b""  # /dev/null: the empty file by convention (`ssh -F /dev/null`, a known_hosts that keeps nothing)
        if not stat.S_ISREG(info.st_mode):
            kinds = (
                (stat.S_ISDIR, "a folder"),
                (stat.S_ISFIFO, "a FIFO (named pipe)"),
                (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"),
            )
            kind = next((name for test, name in kinds if test(info.st_mode)), "not a plain file")
            raise UnsafeReadError(
                what, path, f"is {kind}, not a regular file; give the path of a regular file", "not_regular"
            )
        if info.st_size > limit:
            raise UnsafeReadError(what, path, _too_large(limit, info.st_size), "too_large")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(COPY_BLOCK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise UnsafeReadError(what, path, _too_large(limit, None), "too_large")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(limit: int, size: int | None) -> str:
    size_text = f" ({size} bytes)" if size is not None else ""
    return f"is larger than {limit} bytes{size_text}, more than such a file holds; give the right file"


def printable_path(path: Path | str) -> str:
    """``path`` as one printable line whatever the name holds (a line break or a control character escaped)."""
    text = str(path)
    return text if text.isprintable() else repr(text)[1:-1]
