"""A run's ``docker run``: its settings (image, mounts, GPUs, user, environment, labels), each checked before it reaches
an argv; the argv itself (secrets as ``-e NAME`` only, their values through stdin); the container's name and labels.
Plain argv building: :mod:`cosmos_assets.machines.docker` runs it on a host."""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cosmos_assets.redaction import is_secret_name

CONTAINER_ROOT = "/workspace"  # REMOTE_DIR (the model's code) is mounted here; PYTHONPATH and working dir
CONTAINER_CHECKPOINTS = "/workspace/checkpoints"
LABEL_PREFIX = "cosmos-assets"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_DEVICE = re.compile(r"^[A-Za-z0-9-]+$")


def _host_path(value: str, what: str) -> str:
    if not value.startswith("/"):
        raise ValueError(
            f"{what} {value!r} must be an absolute path on the GPU host (docker -v needs one; expand ~ first)"
        )
    if ":" in value or "," in value:
        raise ValueError(f"{what} {value!r} contains ':' or ',', which docker -v reads as separators")
    # The seed's default checkpoint folder is REMOTE_DIR/../checkpoints: give docker the clean path.
    return posixpath.normpath(value)


def parse_gpus(value: str) -> Literal["all"] | tuple[str, ...] | None:
    """COSMOS_DOCKER_GPUS: ``all``, ``none`` (no GPU request, for hosts without the NVIDIA runtime) or ``0,1``."""
    text = value.strip().lower()
    if text == "all":
        return "all"
    if text == "none":
        return None
    devices = tuple(d.strip() for d in value.split(",") if d.strip())
    if not devices or not all(_DEVICE.match(d) for d in devices):
        raise ValueError(f"docker_gpus {value!r}: use 'all', 'none' or device ids like '0,1'")
    return devices


class DockerRunSettings(BaseModel):
    """How the model's container is started on the host. ``env`` may hold secrets: it is never shown or logged."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    image: str
    container_name: str
    remote_dir: str  # host path of the model's code, mounted at /workspace
    checkpoint_dir_host: str  # host path mounted at /workspace/checkpoints
    uid: int | None = None
    gid: int | None = None
    gpus: Literal["all"] | tuple[int | str, ...] | None = "all"
    ipc: str | None = "host"
    shm_size: str | None = None
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    labels: dict[str, str] = Field(default_factory=dict)  # docker --label, to find a run's containers later
    detach: bool = True
    workdir: str = CONTAINER_ROOT
    cache_mounts: dict[str, str] = Field(default_factory=dict)  # host path -> container path (model download caches)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not v or v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError(f"image {v!r} must be an image reference like nvcr.io/me/cosmos-transfer1:latest")
        return v

    @field_validator("container_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _CONTAINER_NAME.match(v):
            raise ValueError(f"container_name {v!r} must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (use container_name_for)")
        return v

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir(cls, v: str) -> str:
        return _host_path(v, "remote_dir")

    @field_validator("checkpoint_dir_host")
    @classmethod
    def _checkpoint_dir(cls, v: str) -> str:
        return _host_path(v, "checkpoint_dir_host")

    @field_validator("cache_mounts")
    @classmethod
    def _cache_mounts(cls, v: dict[str, str]) -> dict[str, str]:
        return {_host_path(host, "cache folder"): container for host, container in v.items()}

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        if isinstance(v, tuple):
            if not v:
                raise ValueError("gpus: give 'all', None, or at least one device id")
            for device in v:
                if not _DEVICE.match(str(device)):
                    raise ValueError(f"gpus: device {device!r} must be an index or a GPU UUID")
        return v

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\d+[bkmgBKMG]?$", v):
            raise ValueError(f"shm_size {v!r} must look like 16g or 512m")
        return v

    @field_validator("ipc")
    @classmethod
    def _ipc(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9:_.-]+$", v):
            raise ValueError(f"ipc {v!r} must be a docker ipc mode such as host")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"env name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
            if name == "PYTHONPATH":
                raise ValueError("env PYTHONPATH is always /workspace (the model imports its code from it)")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not re.match(r"^[a-z0-9][a-z0-9._-]*$", name):
                raise ValueError(f"label name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
            if "\n" in value or "\r" in value:
                raise ValueError(f"label {name}: value must be one line")
        return v

    @model_validator(mode="after")
    def _user(self) -> DockerRunSettings:
        if self.gid is not None and self.uid is None:
            raise ValueError("gid without uid: give uid too (docker -u uid:gid)")
        return self


def _gpus_arg(gpus: Literal["all"] | tuple[int | str, ...]) -> str:
    if gpus == "all":
        return "all"
    # docker parses --gpus as CSV: a device list needs literal double quotes around it.
    return '"device=' + ",".join(str(d) for d in gpus) + '"'


def secret_env(settings: DockerRunSettings) -> dict[str, str]:
    """Secret variables to set in the docker client's environment; the argv names them with ``-e NAME`` only."""
    return {name: value for name, value in settings.env.items() if is_secret_name(name)}


def docker_run_argv(settings: DockerRunSettings, inner_argv: Sequence[str]) -> list[str]:
    """``docker run ...`` argv that runs ``inner_argv`` in the container."""
    argv = ["docker", "run"]
    if settings.detach:
        argv.append("-d")
    argv += ["--name", settings.container_name]
    for name in sorted(settings.labels):
        argv += ["--label", f"{name}={settings.labels[name]}"]
    if settings.gpus is not None:
        argv += ["--gpus", _gpus_arg(settings.gpus)]
    if settings.ipc is not None:
        argv.append(f"--ipc={settings.ipc}")
    if settings.shm_size is not None:
        argv.append(f"--shm-size={settings.shm_size}")
    if settings.uid is not None:
        argv += ["-u", f"{settings.uid}:{settings.gid}" if settings.gid is not None else str(settings.uid)]
    argv += [
        "-v",
        f"{settings.remote_dir}:{CONTAINER_ROOT}",
        "-v",
        f"{settings.checkpoint_dir_host}:{CONTAINER_CHECKPOINTS}",
        *(arg for host in sorted(settings.cache_mounts) for arg in ("-v", f"{host}:{settings.cache_mounts[host]}")),
        "-w",
        settings.workdir,
        "-e",
        f"PYTHONPATH={CONTAINER_ROOT}",
    ]
    for name in sorted(settings.env):
        argv += ["-e", name if is_secret_name(name) else f"{name}={settings.env[name]}"]
    argv.append(settings.image)
    argv += list(inner_argv)
    return argv


def secrets_from_stdin(names: Sequence[str], argv: Sequence[str]) -> list[str]:
    """argv run with each named variable read from one stdin line and exported (values stay off argv)."""
    reads = "".join(f"IFS= read -r {name} && export {name} && " for name in names)
    return ["sh", "-c", reads + 'exec "$@"', "sh", *argv]


def in_dir(directory: str, argv: Sequence[str]) -> list[str]:
    """argv run from ``directory`` on the host (both passed as arguments, never pasted into the script)."""
    return ["sh", "-c", 'cd -- "$1" && shift && exec "$@"', "sh", directory, *argv]


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-_.")
    return slug[:limit].rstrip("-_.") or "x"


def container_name_for(run_id: str, partition_key: str, stage: str) -> str:
    """Deterministic, short, valid docker container name for one stage of one run of one partition."""
    digest = hashlib.sha256(f"{run_id}\0{partition_key}\0{stage}".encode()).hexdigest()[:10]
    # The digest keeps names unique when slugs collide or are cut; the readable parts are for `docker ps`.
    return f"cosmos-{_slug(stage, 12)}-{_slug(partition_key, 32)}-{_slug(run_id, 8)}-{digest}"


def container_labels(prompt: str, stage: str, run_id: str, dagster_run_id: str | None) -> Mapping[str, str]:
    """The labels that find a run's container later (``docker ps --filter label=...``)."""
    return {
        f"{LABEL_PREFIX}.prompt": prompt,
        f"{LABEL_PREFIX}.stage": stage,
        f"{LABEL_PREFIX}.run-id": run_id,
        f"{LABEL_PREFIX}.dagster-run-id": dagster_run_id or "",
    }
