"""What an SSH host is like, learned once per connection: absolute paths and the user the container runs as."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.machines.ssh_link import SshLink


@dataclass(frozen=True)
class HostFacts:
    """Absolute REMOTE_DIR and checkpoint folder on the host, and the uid:gid the container runs as (and why)."""

    home: str
    remote_dir: str
    checkpoint_dir: str
    uid: int
    gid: int
    user_source: str


def absolute_remote_path(path: str, home: str) -> str:
    """REMOTE_DIR as the host sees it: ``~`` and relative paths are under the remote user's home."""
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    elif path.startswith("~"):
        raise ValueError(f"{path!r}: only ~ (the remote user's home) is expanded, not ~user; give an absolute path")
    elif not path.startswith("/"):
        path = posixpath.join(home, path)
    return posixpath.normpath(path)


def remote_child(root: str, relative: str) -> str:
    """``root/relative`` for a path that must stay inside ``root`` (the model's folder on the host)."""
    normal = posixpath.normpath(relative)
    if relative.startswith("/") or normal == ".." or normal.startswith("../"):
        raise ValueError(f"{relative!r} must be relative to {root} and stay inside it")
    return posixpath.join(root, normal)


def parse_user(value: str) -> tuple[int, int]:
    """``uid:gid`` (numbers only) for ``docker run -u``."""
    match = re.match(r"^\s*(\d+):(\d+)\s*$", value)
    if not match:
        raise ValueError(f"container_user {value!r} must be numeric uid:gid, e.g. 1000:1000")
    return int(match[1]), int(match[2])


def container_ids(link: SshLink, remote_dir: str, container_user: str | None) -> tuple[int, int, str]:
    """uid:gid for ``docker run -u``: configured, else the remote user's, else (root) REMOTE_DIR's owner."""
    if container_user:
        uid, gid = parse_user(container_user)
        return uid, gid, "container_user setting"
    code, out, err = link.exec(["sh", "-c", "id -u && id -g"])
    if code != 0:
        raise HostNotReadyError(f"`id -u; id -g` failed on {link.label}: {err.strip()}")
    uid, gid = (int(x) for x in out.split()[:2])
    if uid != 0:
        return uid, gid, "remote user (id -u, id -g)"
    # Logged in as root: outputs would be root-owned; write them as the checkout's owner instead.
    code, out, _ = link.exec(["stat", "-c", "%u %g", "--", remote_dir])
    if code == 0:
        owner_uid, owner_gid = (int(x) for x in out.split()[:2])
        if owner_uid != 0:
            return owner_uid, owner_gid, f"owner of {remote_dir} (remote user is root)"
    return 0, 0, "root (remote user and REMOTE_DIR owner are root; set COSMOS_CONTAINER_USER=uid:gid)"


def read_host_facts(
    link: SshLink, remote_dir: str, checkpoint_dir: str | None, container_user: str | None
) -> HostFacts:
    """Ask the host for its home folder and ids; REMOTE_DIR and the checkpoint folder made absolute."""
    sftp = link.open_sftp()
    try:
        home = sftp.normalize(".")
    finally:
        sftp.close()
    remote = absolute_remote_path(remote_dir, home)
    checkpoints = absolute_remote_path(checkpoint_dir or f"{remote}/../checkpoints", home)
    uid, gid, source = container_ids(link, remote, container_user)
    return HostFacts(home=home, remote_dir=remote, checkpoint_dir=checkpoints, uid=uid, gid=gid, user_source=source)


_COMMIT = re.compile(r"[0-9a-f]{40}")


def read_revisions(link: SshLink, facts: HostFacts, files: Mapping[str, str]) -> dict[str, str]:
    """Repository -> the commit in its cache's ``refs/main`` (``files``: repository -> that file relative to the
    checkpoint folder), for each file that holds one; a missing or odd file is left out."""
    if not files:
        return {}
    paths = [remote_child(facts.checkpoint_dir, rel) for rel in files.values()]
    # one line per file whatever it holds: at most 41 bytes, only hex digits kept (a newline never shifts the lines)
    script = 'for p do printf "%s\\n" "$(head -c 41 -- "$p" 2>/dev/null | tr -cd 0-9a-f)"; done'
    code, out, _ = link.exec(["sh", "-c", script, "sh", *paths])
    if code != 0:
        return {}
    lines = out.split("\n")
    found = {}
    for repo, line in zip(files, lines):
        if _COMMIT.fullmatch(line.strip()):
            found[repo] = line.strip()
    return found
