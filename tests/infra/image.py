"""The offline test image `cosmos-test-base:latest`: Debian minbase + python3, PyAV, numpy.

No registry is reachable from the test engine, so the image is made with
`debootstrap` and `docker import`. The rootfs tarball is cached between runs under
`$COSMOS_TEST_CACHE` (default `~/.cache/cosmos_assets/`), keyed by suite, variant,
architecture and package list, so a machine pays the debootstrap once.

The Debian mirror is read at run time from the machine's own apt sources; nothing
here names a mirror host.

Run `python -m tests.infra.image` to warm the cache by hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker

log = logging.getLogger(__name__)

IMAGE_TAG = "cosmos-test-base:latest"
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES: tuple[str, ...] = ("python3", "python3-av", "python3-numpy")
DEBOOTSTRAP_TIMEOUT_S = 1800


@dataclass(frozen=True)
class RootfsRecipe:
    suite: str = SUITE
    variant: str = VARIANT
    packages: tuple[str, ...] = PACKAGES

    def cache_key(self) -> str:
        payload = json.dumps(
            {"suite": self.suite, "variant": self.variant, "arch": _dpkg_arch(), "packages": sorted(self.packages)},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    root = os.environ.get("COSMOS_TEST_CACHE") or os.path.expanduser("~/.cache/cosmos_assets")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _dpkg_arch() -> str:
    try:
        return subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.uname().machine


def _sources_files() -> list[Path]:
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def _entries_from_deb822(text: str) -> list[tuple[str, list[str], list[str]]]:
    entries = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        for uri in fields.get("uris", "").split():
            entries.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    return entries


def _entries_from_list(text: str) -> list[tuple[str, list[str], list[str]]]:
    entries = []
    for line in text.splitlines():
        body = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0])  # drop [arch=... signed-by=...]
        words = body.split()
        if len(words) >= 4 and words[0] == "deb":
            entries.append((words[1], [words[2]], words[3:]))
    return entries


def debian_mirror(suite: str = SUITE) -> str:
    """The first enabled apt source on this machine that serves `suite` with `main`."""
    for f in _sources_files():
        text = f.read_text(errors="replace")
        entries = _entries_from_deb822(text) if f.suffix == ".sources" else _entries_from_list(text)
        for uri, suites, components in entries:
            if suite in suites and "main" in components:
                return uri
    raise RuntimeError(
        f"no apt source for suite {suite!r} with component 'main' in /etc/apt/sources.list*; "
        "debootstrap needs a Debian mirror: add one to the machine's apt sources"
    )


def build_rootfs_tarball(recipe: RootfsRecipe, dest: Path) -> None:
    """debootstrap into a temp dir, tar it to `dest` (atomically via a .part file)."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed: run .ci/install-system-deps.sh")
    mirror = debian_mirror(recipe.suite)
    work = Path(tempfile.mkdtemp(prefix="cosmos-rootfs-", dir=dest.parent))
    try:
        rootfs = work / "rootfs"
        cmd = [
            "debootstrap",
            f"--variant={recipe.variant}",
            "--include=" + ",".join(recipe.packages),
            recipe.suite,
            str(rootfs),
            mirror,
        ]
        log.info("building test rootfs: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        part = dest.with_name(dest.name + ".part")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(part), "."], check=True)
        os.replace(part, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cached_rootfs_tarball(recipe: RootfsRecipe = RootfsRecipe()) -> Path:
    """Path of the cached tarball for `recipe`, building it first if missing."""
    dest = cache_dir() / f"rootfs-{recipe.suite}-{recipe.variant}-{recipe.cache_key()}.tar"
    if not dest.is_file():
        build_rootfs_tarball(recipe, dest)
    return dest


def ensure_test_image(
    client: docker.DockerClient, tag: str = IMAGE_TAG, recipe: RootfsRecipe = RootfsRecipe()
) -> dict[str, float]:
    """Make `tag` exist in the engine behind `client`; returns timings in seconds."""
    timings: dict[str, float] = {}
    try:
        client.images.get(tag)
        return timings
    except docker.errors.ImageNotFound:
        pass
    t0 = time.monotonic()
    tarball = cached_rootfs_tarball(recipe)
    timings["rootfs_s"] = time.monotonic() - t0
    repo, _, version = tag.partition(":")
    t1 = time.monotonic()
    client.api.import_image_from_file(str(tarball), repository=repo, tag=version or "latest")
    timings["import_s"] = time.monotonic() - t1
    client.images.get(tag)  # raises if the import did not produce the tag
    return timings


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    t = time.monotonic()
    print(cached_rootfs_tarball(), f"{time.monotonic() - t:.1f}s")
