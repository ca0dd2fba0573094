"""Preflight checks of an SSH host, before any GPU time is spent: each raises HostNotReadyError naming the fix.

Plain functions over the link, the host facts and the job, in the order :class:`~cosmos_assets.machines.ssh_host.SshHost`
runs them: the model root is not the project's own folders, the model's code, docker, the image (built from
REMOTE_DIR/Dockerfile when missing), GPUs, checkpoints, free disk. The first also serves this computer
(:class:`~cosmos_assets.machines.local.LocalMachine`).
"""

from __future__ import annotations

import os
import posixpath
import shlex
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.docker import DockerCli
from cosmos_assets.machines.docker_run import in_dir, parse_gpus
from cosmos_assets.machines.host_facts import HostFacts, remote_child
from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, LinkDropped, LogLine
from cosmos_assets.machines.ssh_link import TAG, SshLink

BUILD_TAG = "[docker build]"
BUILD_TAIL_LINES = 20
MARKER_PREFIX = ".cosmos-assets-overlap-"
# The setting that names a model's root, by model (a pool file names it per host: remote_dir, model_dirs).
ROOT_SETTINGS = {"cosmos-transfer2.5": "REMOTE_DIR_TRANSFER2_5", "cosmos3": "REMOTE_DIR_COSMOS3"}


# --------------------------------------------------------------------------- the model root is not the project


def project_folders(project_root: Path) -> dict[str, Path]:
    """The folders of the project that hold its own files (renders, prompt files, videos, outputs, notes), by name."""

    layout = ProjectLayout(root=project_root)
    folders = {
        "inputs/": layout.prompts_dir.parent,
        "outputs/": layout.outputs_dir,
        "notes/": layout.notes_dir,
        "art/houdini/renders/": layout.renders_dir,
    }
    return {name: folder for name, folder in folders.items() if folder.is_dir()}


def staged_folders(job: InferenceJob) -> list[str]:
    """The folders under the model root a run writes into: each staged file's folder, and the output folder."""
    folders = {posixpath.dirname(posixpath.normpath(item.remote)) or "." for item in job.inputs}
    return sorted(folders | {posixpath.normpath(job.output_folder)})


def root_setting(model: str, local: bool) -> str:
    if local:
        return "COSMOS_PREVIEW_DIR (in a pool file: the local host's remote_dir)"
    name = ROOT_SETTINGS.get(model, "REMOTE_DIR")
    return f"{name} (in a pool file: the host's {'model_dirs' if model in ROOT_SETTINGS else 'remote_dir'})"


def overlap_error(
    where: str, setting: str, target: str, folder: str, project_root: Path, hint: str
) -> HostNotReadyError:
    """One line naming the host and its model root, the project folder it reaches, the setting and the fix."""
    return HostNotReadyError(
        f"{where} reaches the project's own {folder} folder ({project_root / folder}): a run would write {target}/ "
        f"there, over the project's files (the prompt file, its cosmos_assets block). Fix: set {setting} to a folder "
        f"of its own, outside the project's inputs/, outputs/, notes/ and art/ ({hint})."
    )


def is_inside(path: Path, folder: Path) -> bool:
    """``path`` (resolved) is ``folder`` or below it, by name or by the same directory (bind mounts, hard aliases)."""
    if path.is_relative_to(folder):
        return True
    return any(ancestor.is_dir() and os.path.samefile(ancestor, folder) for ancestor in (path, *path.parents))


def local_overlap(model_root: Path, job: InferenceJob) -> tuple[str, str] | None:
    """(staged folder, project folder) of the first place under a local model root that is one of the project's
    folders (the same folder, one inside the other, through a symlink or a bind mount); None when there is none."""
    if job.project_root is None:
        return None
    folders = {name: folder.resolve() for name, folder in project_folders(job.project_root).items()}
    for target in staged_folders(job):
        landing = (model_root / target).resolve()  # symlinks of the parts that exist are followed
        for name, folder in folders.items():
            if is_inside(landing, folder):
                return target, name
    return None


@contextmanager
def overlap_markers(project_root: Path) -> Iterator[dict[str, str]]:
    """A uniquely named hidden file in each project folder (marker name -> folder), removed afterwards.

    A host that sees one of them under its model root shares that folder with the project (NFS). The name is new
    each time, so no NFS client has a cached answer for it: a lookup on the host asks the server.
    """
    token = uuid.uuid4().hex
    made: dict[str, str] = {}
    paths: list[Path] = []
    try:
        for index, (name, folder) in enumerate(project_folders(project_root).items()):
            marker = folder / f"{MARKER_PREFIX}{token}-{index}"
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except OSError:
                continue  # a folder we cannot write: a run of ours could not write there either
            paths.append(marker)
            made[marker.name] = name
        yield made
    finally:
        for marker in paths:
            marker.unlink(missing_ok=True)


def _overlap_script() -> str:
    """sh -c script: args root nmarkers marker... target...; prints "target marker" for each target whose physical
    folder (the nearest existing one, symlinks resolved by ``cd -P``) or any of its parents holds a marker."""
    return (
        'root=$1; n=$2; shift 2; markers=""\n'
        'while [ "$n" -gt 0 ]; do markers="$markers $1"; shift; n=$((n - 1)); done\n'
        "for t do\n"
        '  p="$root/$t"\n'
        '  while [ ! -d "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done\n'
        '  p=$(cd -P -- "$p" 2>/dev/null && pwd -P) || continue\n'
        "  while :; do\n"
        '    for m in $markers; do [ -e "$p/$m" ] && { printf "%s %s\\n" "$t" "$m"; break 2; }; done\n'
        '    [ "$p" = / ] && break; p=$(dirname -- "$p")\n'
        "  done\n"
        "done\n"
    )


def check_not_the_project(link: SshLink, facts: HostFacts, job: InferenceJob) -> None:
    """REMOTE_DIR does not reach the project's own folders through a shared mount (NFS): markers written in each
    project folder here must not be visible from any folder the run writes on the host."""
    if job.project_root is None:
        return
    targets = staged_folders(job)
    with overlap_markers(job.project_root) as markers:
        if not markers:
            return
        code, out, err = link.exec(
            ["sh", "-c", _overlap_script(), "sh", facts.remote_dir, str(len(markers)), *markers, *targets]
        )
    if code != 0:
        raise HostNotReadyError(
            f"could not check {facts.remote_dir} on {link.label} against the project folder ({err.strip()[-300:]})"
        )
    for line in out.splitlines():
        target, _, marker = line.rpartition(" ")
        if marker in markers:
            where = f"{link.label}: the model root {facts.remote_dir}, a folder shared with this computer,"
            raise overlap_error(
                where,
                root_setting(job.invocation.model, False),
                target,
                markers[marker],
                job.project_root,
                f"the {job.invocation.model} checkout on the host",
            )


def _stages(job: InferenceJob, path: str) -> bool:
    return any(posixpath.normpath(item.remote) == posixpath.normpath(path) for item in job.inputs)


def check_checkout(link: SshLink, facts: HostFacts, job: InferenceJob) -> None:
    """The job's entry point is under REMOTE_DIR (unless the job brings that file itself)."""
    entry = job.invocation.entry_point
    if _stages(job, entry):
        return
    code, _, _ = link.exec(["test", "-f", remote_child(facts.remote_dir, entry)])
    if code != 0:
        raise HostNotReadyError(
            f"{facts.remote_dir} on {link.label} is not a {job.invocation.model} checkout (no {entry}). Fix: on the "
            f"host, git clone the {job.invocation.model} repository into {shlex.quote(facts.remote_dir)} "
            "(or set REMOTE_DIR to where it is)."
        )


def check_docker(link: SshLink) -> None:
    code, out, err = link.exec(["docker", "version", "--format", "{{.Server.Version}}"])
    if code != 0:
        raise HostNotReadyError(
            f"docker is not reachable on {link.label} ({(err or out).strip()[-400:]}). Fix: install Docker and the "
            "NVIDIA Container Toolkit, start the daemon, and let the SSH user use it "
            "(sudo usermod -aG docker $USER, then log in again)."
        )


def ensure_image(docker: DockerCli, facts: HostFacts, image: str, log: LogLine) -> None:
    """The image is on the host, or is built there from REMOTE_DIR/Dockerfile with the build log streamed."""
    link = docker.link
    if docker.image_present(image):
        return
    dockerfile = remote_child(facts.remote_dir, "Dockerfile")
    if link.exec(["test", "-f", dockerfile])[0] != 0:
        raise HostNotReadyError(
            f"image {image} is not on {link.label} and there is no {dockerfile} to build it from. "
            "Fix: clone the model's repository into REMOTE_DIR (it has the Dockerfile), or docker pull/load the image, "
            "or set DOCKER_IMAGE to an image the host has."
        )
    build = ["docker", "build", "-f", "Dockerfile", ".", "-t", image]  # the seed's command
    log(f"{TAG} image {image} missing: building it on the host in {facts.remote_dir}: {shlex.join(build)}")
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=BUILD_TAIL_LINES)

    def build_line(line: str) -> None:
        tail.append(line)
        log(f"{BUILD_TAG} {line}")

    try:
        code = link.stream(in_dir(facts.remote_dir, build), build_line)
    except LinkDropped as error:
        raise HostNotReadyError(
            f"the SSH link dropped during the image build on {link.label} ({error}); run again to restart it"
        ) from error
    if code != 0 or not docker.image_present(image):
        raise HostNotReadyError(
            f"docker build of {image} failed on {link.label} (exit {code}). Fix the Dockerfile in "
            f"{facts.remote_dir} or build it by hand there. Last lines:\n" + "\n".join(tail)
        )
    log(f"{TAG} built {image} in {time.monotonic() - started:.1f}s")


def check_gpus(link: SshLink, job: InferenceJob, docker_gpus: str, log: LogLine) -> None:
    """Enough GPUs for the job (``nvidia-smi -L``); skipped for a job that needs none (the preview backend)."""
    if not job.invocation.needs_gpu:
        log(f"{TAG} {job.invocation.model} needs no GPU: no GPU check, the container gets none")
        return
    needed = job.invocation.num_gpus
    gpus = parse_gpus(docker_gpus)
    if gpus is None:
        log(f"{TAG} COSMOS_DOCKER_GPUS=none: the container gets no GPUs (a test host; the model needs them)")
        return
    code, out, err = link.exec(["nvidia-smi", "-L"])
    found = [line for line in out.splitlines() if line.startswith("GPU ")]
    if code == 127:
        raise HostNotReadyError(
            f"nvidia-smi is not installed on {link.label}: install the NVIDIA driver and Container Toolkit, "
            "or set COSMOS_DOCKER_GPUS=none on a host without GPUs (testing only)."
        )
    usable = len(found) if gpus == "all" else min(len(found), len(gpus))
    if usable < needed:
        detail = (out or err).strip().splitlines()[:1]
        raise HostNotReadyError(
            f"{link.label} has {usable} usable GPU(s) (nvidia-smi -L: {detail[0] if detail else 'no output'}; "
            f"COSMOS_DOCKER_GPUS={docker_gpus}) but the run needs {needed}. Fix: set NUM_GPU / num_gpus to "
            f"at most {usable}, or use an instance with more GPUs."
        )


def check_gpu_memory(link: SshLink, job: InferenceJob, docker_gpus: str, log: LogLine) -> None:
    """Each GPU the run uses has the memory its model needs (``nvidia-smi --query-gpu``), by documented figures."""
    needed = job.invocation.gpu_memory_gb
    gpus = parse_gpus(docker_gpus)
    if needed <= 0 or not job.invocation.needs_gpu or gpus is None:
        return
    code, out, _ = link.exec(["nvidia-smi", "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader"])
    sizes: dict[str, float] = {}
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 3 and fields[2].split()[0].isdigit():
            sizes[fields[0]] = int(fields[2].split()[0]) * 1.048576 / 1000  # MiB -> GB
    if code != 0 or not sizes:
        log(
            f"{TAG} warning: could not read GPU memory on {link.label}; {job.invocation.model} needs ~{needed:g} GB per GPU"
        )
        return
    used = list(sizes.items()) if gpus == "all" else [(d, sizes[d]) for d in gpus if d in sizes]
    small = [
        f"GPU {index} {size:.0f} GB ({size / 1.073741824:.1f} GiB)"
        for index, size in used[: job.invocation.num_gpus]
        if size < needed
    ]
    if small:
        figure = job.invocation.gpu_memory_source or f"about {needed:g} GB on each GPU"
        raise HostNotReadyError(
            f"{job.invocation.model} needs {figure} but {link.label} has {', '.join(small)}. "
            "Fix: use bigger GPUs, more of them where the model shards its weights (docs/models.md), or another model."
        )


def check_checkpoints(link: SshLink, facts: HostFacts, job: InferenceJob) -> None:
    """Every checkpoint the job lists exists under the checkpoint folder."""
    if not job.invocation.checkpoints:
        return
    wanted = [remote_child(facts.checkpoint_dir, rel) for rel in job.invocation.checkpoints]
    script = 'for p do [ -e "$p" ] || printf "%s\\n" "$p"; done'
    code, out, err = link.exec(["sh", "-c", script, "sh", *wanted])
    if code != 0:
        raise HostNotReadyError(f"could not check checkpoints on {link.label}: {err.strip()}")
    missing = out.splitlines()
    if missing:
        raise HostNotReadyError(
            f"{len(missing)} checkpoint file(s) this spec needs are missing on {link.label} under "
            f"{facts.checkpoint_dir}:\n  " + "\n  ".join(missing) + "\nFix: download them in REMOTE_DIR with "
            "a Hugging Face token that accepted the models' terms (HF_TOKEN=... python scripts/"
            "download_checkpoints.py --output_dir checkpoints/); that script can exit 0 after failing, so "
            "check the files, or set CHECKPOINT_DIR_REMOTE."
        )


def check_disk(link: SshLink, facts: HostFacts, min_free_gb: float) -> None:
    code, out, err = link.exec(["df", "-Pk", "--", facts.remote_dir])
    lines = out.strip().splitlines()
    if code != 0 or len(lines) < 2:
        raise HostNotReadyError(f"df of {facts.remote_dir} failed on {link.label}: {err.strip()}")
    free_gb = int(lines[-1].split()[3]) * 1024 / 1e9
    if free_gb < min_free_gb:
        raise HostNotReadyError(
            f"only {free_gb:.1f} GB free on {link.label} under {facts.remote_dir}; outputs need at least "
            f"{min_free_gb:g} GB (COSMOS_MIN_FREE_GB). Fix: delete old runs under outputs/ or unused images "
            "(docker image prune)."
        )


def cache_mounts(facts: HostFacts, job: InferenceJob) -> dict[str, str]:
    """The job's download caches as host path -> container path (host folders under the checkpoint folder)."""
    return {remote_child(facts.checkpoint_dir, rel): container for rel, container in job.invocation.cache_dirs.items()}


def check_caches(link: SshLink, facts: HostFacts, job: InferenceJob, log: LogLine) -> None:
    """Each download cache folder exists and the container's uid can write it; enough free disk for a first download.

    Checkpoints of Cosmos-Transfer2.5 and Cosmos 3 are downloaded by the model into these caches at first use,
    so the preflight checks the folders and the disk, not individual files.
    """
    mounts = cache_mounts(facts, job)
    if not mounts:
        return
    folders = sorted(mounts)
    code, out, err = link.exec(["sh", "-c", _cache_check_script(), "sh", str(facts.uid), str(facts.gid), *folders])
    if code != 0:
        raise HostNotReadyError(
            f"could not create the cache folders {', '.join(folders)} on {link.label} ({err.strip()[-300:]}). "
            f"Fix: create them on the host, owned by {facts.uid}:{facts.gid}, or set CHECKPOINT_DIR_REMOTE."
        )
    unwritable = out.split()
    if unwritable:
        raise HostNotReadyError(
            f"the container user {facts.uid}:{facts.gid} cannot write the cache folder(s) {', '.join(unwritable)} on "
            f"{link.label}. Fix: on the host, sudo chown -R {facts.uid}:{facts.gid} {' '.join(unwritable)}"
        )
    needed = job.invocation.cache_free_gb
    if needed <= 0:
        return
    code, out, _ = link.exec(["df", "-Pk", "--", folders[0]])
    lines = out.strip().splitlines()
    if code != 0 or len(lines) < 2:
        return
    free_gb = int(lines[-1].split()[3]) * 1024 / 1e9
    if free_gb < needed:
        empty = link.exec(["sh", "-c", 'for d do [ -z "$(ls -A -- "$d")" ] || exit 1; done', "sh", *folders])[0] == 0
        message = (
            f"only {free_gb:.0f} GB free for the {job.invocation.model} download caches under "
            f"{facts.checkpoint_dir} on {link.label}; a first download needs about {needed:g} GB"
        )
        if empty:
            raise HostNotReadyError(message + ". Fix: free disk there, or set CHECKPOINT_DIR_REMOTE to a bigger disk.")
        log(f"{TAG} warning: {message} (the caches already hold files, so the checkpoints may be there)")


def _cache_check_script() -> str:
    """sh -c script: args uid gid dir...; creates each dir, chowns it to uid:gid when it cannot be written, prints failures."""
    return (
        "uid=$1; gid=$2; shift 2\n"
        "for d do\n"
        '  mkdir -p -- "$d" || exit 3\n'
        '  stat -c "%u %g %a" -- "$d" | {\n'
        "    read o g m; ok=0\n"
        '    [ "$uid" = 0 ] && ok=1\n'
        '    [ "$o" = "$uid" ] && [ $(( 0$m & 0200 )) -ne 0 ] && ok=1\n'
        '    [ "$g" = "$gid" ] && [ $(( 0$m & 0020 )) -ne 0 ] && ok=1\n'
        "    [ $(( 0$m & 0002 )) -ne 0 ] && ok=1\n"
        '    [ $ok = 1 ] || chown "$uid:$gid" -- "$d" 2>/dev/null || printf "%s\\n" "$d"\n'
        "  }\n"
        "done\n"
    )
