"""Remote folders over SFTP: ``mkdir -p`` and the listing of a tree (every listed name checked to be plain)."""

from __future__ import annotations

import posixpath
import stat as stat_mod
from pathlib import PurePosixPath

import paramiko

from cosmos_assets.files import plain_folder_name

MAX_TREE_DEPTH = 64


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


def list_remote_files(sftp: paramiko.SFTPClient, remote_dir: str) -> list[tuple[str, int]]:
    """(path relative to remote_dir, size) of every regular file below it (symlinks followed while they stay inside).

    Every name the server lists must be a plain name, and a symlink must resolve inside ``remote_dir`` (a model's
    output folder holding a link to a host file elsewhere is refused), so no listed path leaves ``remote_dir``.
    """
    found: list[tuple[str, int]] = []
    stack = [""]
    root_real: str | None = None
    while stack:
        rel = stack.pop()
        if rel.count("/") >= MAX_TREE_DEPTH:
            raise OSError(
                f"{remote_dir} has folders nested over {MAX_TREE_DEPTH} deep (a symlink loop?); fix it on the host"
            )
        for entry in sftp.listdir_attr(posixpath.join(remote_dir, rel) if rel else remote_dir):
            plain_folder_name(entry.filename, f"file name listed by the server under {remote_dir}")
            child = f"{rel}/{entry.filename}" if rel else entry.filename
            attrs = entry
            if stat_mod.S_ISLNK(entry.st_mode or 0):
                root_real = root_real or sftp.normalize(remote_dir)
                target = sftp.normalize(posixpath.join(remote_dir, child))
                if not inside_posix(target, root_real):
                    raise OSError(
                        f"{posixpath.join(remote_dir, child)} on the host is a symlink to {target}, outside "
                        f"{remote_dir}: refusing to download it; remove the link on the host"
                    )
                attrs = sftp.stat(posixpath.join(remote_dir, child))
            if stat_mod.S_ISDIR(attrs.st_mode or 0):
                stack.append(child)
            elif stat_mod.S_ISREG(attrs.st_mode or 0):
                found.append((child, attrs.st_size or 0))
    return sorted(found)


def inside_posix(path: str, root: str) -> bool:
    """Whether the resolved POSIX ``path`` is ``root`` or below it."""
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")
