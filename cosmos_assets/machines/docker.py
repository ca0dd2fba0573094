"""The docker container a run happens in: its ``docker run`` argv, its name, its log, and its lifecycle on a host.

The host's own ``docker`` CLI runs over the verified :class:`~cosmos_assets.machines.ssh_link.SshLink`, so the
command we record is the command that ran, behind the same host-key check as the file transfers.

- The container is started detached (``docker run -d``) under a name derived from the run, so a dropped SSH
  link does not stop it; if a container of that name already exists (a retry of the same run) we attach to it.
  Before it starts, a model container of ours still running on the engine makes us wait
  (:mod:`~cosmos_assets.machines.busy_host`).
- Secrets never enter an argv: ``docker run`` gets ``-e NAME`` and the value reaches the docker client's
  environment through the exec channel's stdin (``read -r``), so it shows in no process list, log or record.
- Logs are followed with ``docker logs --follow --timestamps``; after a drop we reconnect and follow again
  with ``--since <last timestamp>``, skipping the lines already delivered
  (:class:`~cosmos_assets.machines.docker_logs.LogFollower`).
- Who ended a container is told apart: the engine going away under it (``docker`` cannot reach its daemon: stopped
  or restarting, whose shutdown stops our container) is :class:`DockerWentAwayError`, retryable; a container removed
  while the engine stayed up is :class:`ContainerRemovedError` (someone ran ``docker rm -f``), never retried.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cosmos_assets.machines.docker_engine import (
    ContainerRemovedError,
    DockerUnreachableError,
    DockerWentAwayError,
    docker_down,
    one_line,
    wait_for_engine,
)
from cosmos_assets.machines.docker_logs import LogFollower
from cosmos_assets.machines.job import HostNotReadyError, LogLine
from cosmos_assets.machines.job import HostLinkLostError, HostUnreachableError, LinkDropped
from cosmos_assets.machines.ssh_link import TAG, SshLink
from cosmos_assets.redaction import is_secret_name

CONTAINER_ROOT = "/workspace"  # REMOTE_DIR (the model's code) is mounted here; PYTHONPATH and working dir
CONTAINER_CHECKPOINTS = "/workspace/checkpoints"
LABEL_PREFIX = "cosmos-assets"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_DEVICE = re.compile(r"^[A-Za-z0-9-]+$")


def _host_path(value: str, what: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{what} {value!r} must be an absolute path on the GPU host (docker -v needs one; expand ~ first)")
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
        "-v", f"{settings.remote_dir}:{CONTAINER_ROOT}",
        "-v", f"{settings.checkpoint_dir_host}:{CONTAINER_CHECKPOINTS}",
        *(arg for host in sorted(settings.cache_mounts) for arg in ("-v", f"{host}:{settings.cache_mounts[host]}")),
        "-w", settings.workdir,
        "-e", f"PYTHONPATH={CONTAINER_ROOT}",
    ]  # fmt: skip
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


# --------------------------------------------------------------------------- lifecycle on a host


@dataclass(frozen=True)
class ContainerState:
    status: str
    exit_code: int


class DockerCli:
    """The host's ``docker`` CLI over an SSH link: images, and one run's container from start to removal."""

    def __init__(self, link: SshLink) -> None:
        self.link = link

    @property
    def label(self) -> str:
        return self.link.label

    def image_present(self, image: str) -> bool:
        """Whether the engine has ``image``; :class:`DockerUnreachableError` when it does not answer (never "missing")."""
        return self._inspect_image(image)[0] == 0

    def image_id(self, image: str) -> str | None:
        """``image``'s ID on the engine (``sha256:...``: a rebuilt tag is a new ID); None when it is not there."""
        code, out = self._inspect_image(image)
        return out.strip() if code == 0 and re.fullmatch(r"sha256:[0-9a-f]{64}", out.strip()) else None

    def _inspect_image(self, image: str) -> tuple[int, str]:
        code, out, err = self.link.exec(["docker", "image", "inspect", "--format", "{{.Id}}", image])
        if code != 0 and docker_down(err):
            raise DockerUnreachableError(f"docker is not reachable on {self.label} ({one_line(err)}). A later "
                                         "attempt retries: the daemon may be restarting.")  # fmt: skip
        return code, out

    def state(self, name: str) -> ContainerState | None:
        """The container's status and exit code; None when there is no such container. Raises
        :class:`DockerUnreachableError` when the docker daemon does not answer (so no answer is never "gone")."""
        code, out, err = self.link.exec(["docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name])
        if code != 0:
            if docker_down(err):
                raise DockerUnreachableError(f"docker is not reachable on {self.label} ({one_line(err)}). A later "
                                             "attempt retries: the daemon may be restarting.")  # fmt: skip
            return None
        status, exit_code = out.split()
        return ContainerState(status=status, exit_code=int(exit_code))

    def start(self, settings: DockerRunSettings, command: Sequence[str], log: LogLine) -> bool:
        """Start the container detached; if one of that name exists (a retry of this run), attach. True if attached."""
        name = settings.container_name
        if self.state(name) is not None:
            log(f"{TAG} container {name} already exists (an earlier attempt of this run): attaching to it, "
                "not starting another")  # fmt: skip
            return True
        secrets = secret_env(settings)
        names = sorted(secrets)
        broken = [n for n in names if "\n" in secrets[n] or "\r" in secrets[n]]
        if broken:
            raise HostNotReadyError(f"secret {broken[0]} holds a line break; remove it")
        argv = secrets_from_stdin(names, command) if names else list(command)
        code, out, err = self.link.exec(argv, stdin_lines=[secrets[n] for n in names])
        if code != 0:
            if self.state(name) is not None:  # lost a race with an earlier attempt: attach to it
                return True
            hint = ""
            if "gpu" in err.lower():
                hint = (" Fix: install the NVIDIA Container Toolkit (nvidia-ctk runtime configure --runtime=docker; "
                        "restart docker), or COSMOS_DOCKER_GPUS=none on a test host without GPUs.")  # fmt: skip
            raise HostNotReadyError(f"docker run failed on {self.label} (exit {code}): {err.strip()[-600:]}{hint}")
        log(f"{TAG} started container {name} ({out.strip()[:12]}), detached: it keeps running if the SSH link drops")
        return False

    def follow_until_exit(self, name: str, follower: LogFollower, log: LogLine) -> int:
        """Stream the container's log until it exits, re-attaching after link drops; its exit code.

        Raises :class:`DockerWentAwayError` when the engine stopped answering meanwhile and the container did not
        outlive it (or the engine is not back within ENGINE_WAIT_S), :class:`ContainerRemovedError` when the
        container was removed while the engine stayed up. A container that finished (exit 0) while the engine was
        away did its work: its 0 is returned and its outputs are collected."""
        failures = 0
        engine_went_away = False  # the engine stopped answering under us and the container is not seen running since
        while True:
            delivered = follower.delivered
            try:
                since = follower.since()
                self.link.stream(["docker", "logs", "--follow", "--timestamps", *(["--since", since] if since else []), name],
                                 follower.feed)  # fmt: skip
                try:
                    state = self.state(name)
                except DockerUnreachableError as down:
                    engine_went_away = True  # kept across a link drop while waiting for the engine
                    state = wait_for_engine(lambda: self.state(name), self.label, name, down, log)
                if engine_went_away and (state is None or (state.status in ("exited", "dead") and state.exit_code != 0)):
                    ended = "removed it" if state is None else f"ended it (exit code {state.exit_code})"
                    raise DockerWentAwayError(
                        f"docker on {self.label} went away while container {name} ran (the engine was stopped or "
                        f"restarted, and that {ended}); the work was not at fault: a later attempt runs it again"
                    )
                if state is None:
                    raise ContainerRemovedError(
                        f"container {name} was removed from {self.label} while it ran, with the docker engine up "
                        f"(someone or something ran `docker rm -f {name}`); not retried: materialize again to run it"
                    )
                if state.status in ("exited", "dead"):
                    return state.exit_code
                engine_went_away = False  # it outlived the engine's restart (live-restore): follow on
                follower.resume()  # `docker logs` ended early while the container runs: follow again
                time.sleep(1.0)
            except (LinkDropped, HostUnreachableError) as error:
                if follower.delivered > delivered:
                    failures = 0  # the link carried lines since the last drop: a new incident
                failures += 1
                if failures > self.link.reconnect_attempts:
                    raise HostLinkLostError(
                        f"lost the SSH link to {self.label} while following {name} and {self.link.reconnect_attempts} "
                        f"reconnects failed ({error})"
                    ) from error
                if self.link.wait_and_reconnect(failures, f"the run of {name}", error, log):
                    log(f"{TAG} re-attaching to {name}'s log from where it stopped")
                follower.resume()

    def remove(self, name: str) -> bool:
        """docker rm --force; False when there was no such container."""
        code, _, err = self.link.exec(["docker", "rm", "--force", name])
        if code != 0 and "No such container" not in err:
            raise RuntimeError(f"docker rm {name} failed on {self.label}: {err.strip()}")
        return code == 0

    def stop(self, name: str, log: LogLine) -> None:
        """Best effort (we are already failing): stop and remove the container, reconnecting once if needed."""
        last: BaseException | None = None
        for attempt in (1, 2):
            try:
                if attempt == 2:
                    self.link.reconnect()
                if self.remove(name):
                    log(f"{TAG} stopped and removed container {name}")
                return
            except BaseException as error:  # noqa: BLE001 - the original error is what the caller raises
                last = error
        log(f"{TAG} could not stop container {name} ({last}); stop it by hand: cosmos-assets ssh, then docker rm -f {name}")


def container_labels(prompt: str, stage: str, run_id: str, dagster_run_id: str | None) -> Mapping[str, str]:
    """The labels that find a run's container later (``docker ps --filter label=...``)."""
    return {
        f"{LABEL_PREFIX}.prompt": prompt,
        f"{LABEL_PREFIX}.stage": stage,
        f"{LABEL_PREFIX}.run-id": run_id,
        f"{LABEL_PREFIX}.dagster-run-id": dagster_run_id or "",
    }
