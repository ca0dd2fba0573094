"""Where runs happen, as thin Dagster resources over :mod:`cosmos_assets.machines`.

A resource holds the configuration Dagster shows and checks; :meth:`GpuHost.machine` builds the Dagster-free
:class:`~cosmos_assets.machines.base.Machine` from it once per resource instance. ``model`` names the model
backend the runner picks for this host (the resource only stores it).
"""

from __future__ import annotations

import os
import posixpath
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from cosmos_assets.defs.resources.placement import left_behind_hosts, run_on_free_host
from cosmos_assets.defs.sensors.dead_runs import before_gpu_steps
from cosmos_assets.machines.base import Machine
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.options import RunOptions
from cosmos_assets.settings import (
    KEY_PASSPHRASE_ENV,
    RESOURCE_VARIABLES,
    Settings,
    default_checkpoint_dir,
    settings_error,
)

if TYPE_CHECKING:  # the SSH modules load paramiko: only when an SSH host is used
    from cosmos_assets.machines.ssh_host_settings import SshHostSettings
    from cosmos_assets.machines.ssh_target import SshTarget

T = TypeVar("T")
RunOptionsT = TypeVar("RunOptionsT", RunOptions, dict[str, Any])
HF_TOKEN_ENV = "HF_TOKEN"


class GpuHost(dg.ConfigurableResource):
    """A place runs happen (a GPU host, or this computer for the preview). Subclasses are the deployments."""

    model: str = Field(description="Model backend the runner uses on this host ('preview', 'cosmos-transfer1', ...).")
    models: list[str] = Field(
        default_factory=list,
        description="Model backends this host has; a pool sends a run only to a host with its "
        "model. Empty: any (a single host).",
    )
    price_per_gpu_hour: float | None = Field(
        default=None, ge=0, description="What a GPU hour costs on this host; unset: COSMOS_GPU_PRICE_PER_HOUR."
    )

    _machine: Machine | None = PrivateAttr(default=None)
    _model_machines: dict[str, Machine] = PrivateAttr(default_factory=dict)

    @abstractmethod
    def build_machine(self) -> Machine:
        """A new machine from this configuration (no connection is made yet)."""

    @property
    @abstractmethod
    def label(self) -> str:
        """Short name for run tags, metadata and the run history."""

    @property
    @abstractmethod
    def target(self) -> str:
        """Where it is, as ``cosmos-assets hosts`` shows it (``this machine``, ``user@host:port``)."""

    def machine(self) -> Machine:
        """The machine of this resource instance, built on first use and kept."""
        if self._machine is None:
            self._machine = self.build_machine()
        return self._machine

    def machine_for(self, model: str) -> Machine:
        """The machine that runs ``model`` here (each newer model has its own checkout and image on an SSH host)."""
        return self.machine()

    def has_model(self, model: str) -> bool:
        return not self.models or model in self.models

    def queue_tags(self) -> dict[str, str]:
        """Run tags of the GPU jobs: ``gpu_host=<label>``, which dagster.yaml limits to one queued run at a time."""
        return {"gpu_host": self.label}

    def members(self) -> list[GpuHost]:
        """The hosts runs may go to: this one (a pool lists its hosts)."""
        return [self]

    def probe(self, model: str) -> None:
        """Raise :class:`HostNotReadyError` now if the host cannot be reached (quick: no reconnect backoff)."""

    def stop_model_service(self, why: str) -> list[str]:
        """Stop this host's resident model services (docs/serving.md); the names stopped. None here (no docker)."""
        return []

    def priced(self, run_options: RunOptionsT) -> RunOptionsT:
        """The runner's options (a :class:`~cosmos_assets.runs.options.RunOptions`, or their dict) with this host's
        price of a GPU hour, if it has its own."""
        if self.price_per_gpu_hour is None:
            return run_options
        if isinstance(run_options, dict):
            return {**run_options, "gpu_price_per_hour": self.price_per_gpu_hour}  # type: ignore[return-value]
        return run_options.replace(gpu_price_per_hour=self.price_per_gpu_hour)

    def on_free_host(
        self,
        context: dg.AssetExecutionContext,
        model: str,
        work: Callable[[GpuHost], T],
        left_behind: tuple[Path, str, str] | None = None,
    ) -> T:
        """``work(host)`` on a free host that has ``model``, holding that host's Dagster pool slot meanwhile
        (docs/hosts.md); a host that is unreachable or refuses the job in its preflight is skipped for another.
        ``left_behind`` (runs folder, prompt, stage): a host holding an unfinished run of that work goes first."""
        members = self.members()
        prefer = left_behind_hosts(*left_behind) if left_behind is not None and len(members) > 1 else []
        return run_on_free_host(context, members, model, work, prefer)

    def close(self) -> None:
        if self._machine is not None:
            self._machine.close()
        for machine in self._model_machines.values():
            machine.close()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Runs before any step of the run waits for the gpu_host pool: a dead run must not hold it (defs/sensors/dead_runs.py).
        before_gpu_steps(context)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()


class LocalPreviewHost(GpuHost):
    """This computer: the model root is a local folder, the model a plain process (the preview backend)."""

    model: str = Field(default="preview", description="Model backend run here; the preview needs no GPU.")
    remote_dir: str = Field(description="Folder standing in for a host's model root (REMOTE_DIR).")
    name: str = Field(default="local", description="Host name shown in tags, metadata and the run history.")

    @property
    def label(self) -> str:
        return f"preview@{self.name}"

    @property
    def target(self) -> str:
        return "this machine"

    def build_machine(self) -> Machine:
        from cosmos_assets.machines.local import LocalMachine  # loads paramiko (machines/preflight.py): on use

        return LocalMachine(Path(self.remote_dir), label=self.label)


class SshGpuHost(GpuHost):
    """A host reached over SSH running the model in docker (the seed's scripts, as a resource)."""

    model: str = Field(default="cosmos-transfer1", description="Model backend run here ('preview' for a dry run).")
    host: str = Field(description="REMOTE_HOST: address or an alias from ~/.ssh/config.")
    user: str | None = Field(default=None, description="REMOTE_USER; default from ~/.ssh/config, else the local user.")
    port: int | None = Field(default=None, description="REMOTE_PORT; default from ~/.ssh/config, else 22.")
    ssh_key: str | None = Field(default=None, description="SSH_KEY: private key file; default from ~/.ssh/config.")
    key_passphrase_env: str = Field(
        default=KEY_PASSPHRASE_ENV, description="Name of the environment variable holding the key's passphrase."
    )
    known_hosts: str | None = Field(default=None, description="known_hosts file; default ~/.ssh/known_hosts.")
    ssh_config: str | None = Field(default=None, description="ssh config file; default ~/.ssh/config.")
    trust_on_first_use: bool = Field(default=False, description="Record an unknown host key instead of refusing.")
    remote_dir: str = Field(default="~/cosmos-transfer1", description="REMOTE_DIR: the model's code on the host.")
    checkpoint_dir: str | None = Field(
        default=None, description="CHECKPOINT_DIR_REMOTE; default REMOTE_DIR/../checkpoints."
    )
    docker_image: str = Field(description="DOCKER_IMAGE; built from REMOTE_DIR/Dockerfile when missing.")
    docker_gpus: str = Field(default="all", description="'all', 'none' (no NVIDIA runtime) or device ids '0,1'.")
    container_user: str | None = Field(
        default=None,
        description="uid:gid for the container; default the remote user's, or REMOTE_DIR's owner for root.",
    )
    container_env: dict[str, str] = Field(default_factory=dict, description="Extra non-secret container variables.")
    hf_token: str | None = Field(default=None, description="Hugging Face token (use dg.EnvVar('HF_TOKEN')).")
    min_free_gb: float = Field(default=20.0, description="Preflight: free space needed on REMOTE_DIR's disk.")
    reconnect_attempts: int = Field(
        default=6,
        description="Reconnects tried in a row (with backoff) when the link drops; once data flows again the count starts over.",
    )
    busy_wait_minutes: float = Field(
        default=60.0,
        ge=0,
        description="How long a run waits for a model container of "
        "ours already running on the host (whoever started it) before it is refused.",
    )
    name: str | None = Field(default=None, description="Host name in tags and metadata; default ssh@REMOTE_HOST.")
    model_dirs: dict[str, str] = Field(
        default_factory=dict,
        description="Checkout of each newer model (cosmos-transfer2.5, cosmos3); default beside "
        "REMOTE_DIR: <its parent>/cosmos-transfer2.5, <its parent>/cosmos-framework.",
    )
    model_images: dict[str, str] = Field(
        default_factory=dict,
        description="Docker image of each newer model; default cosmos-transfer2.5:latest, "
        "cosmos-framework:latest (built from the checkout's Dockerfile when missing).",
    )
    serve: str = Field(
        default="auto",
        description="COSMOS_SERVE: auto, always or never run Cosmos 3 through the "
        "host's resident model service (docs/serving.md).",
    )
    serve_idle_minutes: float = Field(
        default=15.0, description="COSMOS_SERVE_IDLE_MINUTES: the service stops after this long without a request."
    )
    serve_load_minutes: float = Field(default=60.0, description="COSMOS_SERVE_LOAD_MINUTES: longest model load.")

    @model_validator(mode="after")
    def _check_settings(self) -> SshGpuHost:
        # An EnvVar field holds the variable's name until Dagster resolves it: check the values once they are there.
        if not any(isinstance(value, dg.EnvVar) for name, value in self if name != "hf_token"):
            self.ssh_target()
            self.host_settings()
        return self

    @classmethod
    def from_settings(cls, settings: Settings) -> SshGpuHost:
        """The SSH host of the deployment settings; HF_TOKEN stays an EnvVar (its value is read only by the run)."""
        if not settings.remote_host:
            raise ValueError(
                "COSMOS_HOST=ssh needs REMOTE_HOST (the GPU host's address or ~/.ssh/config alias); see docs/gpu-host.md"
            )
        try:
            return cls._from_settings(settings)
        except ValidationError as error:  # name the variable, not this resource's field
            raise settings_error(error, names=RESOURCE_VARIABLES) from None

    @classmethod
    def _from_settings(cls, settings: Settings) -> SshGpuHost:
        return cls(
            model=settings.model_name,
            host=settings.remote_host,
            user=settings.remote_user,
            port=settings.remote_port,
            ssh_key=settings.ssh_key,
            known_hosts=settings.known_hosts,
            trust_on_first_use=settings.trust_on_first_use,
            remote_dir=settings.remote_dir,
            checkpoint_dir=settings.checkpoint_dir,
            docker_image=settings.image,
            docker_gpus=settings.docker_gpus,
            container_user=settings.container_user,
            min_free_gb=settings.min_free_gb,
            busy_wait_minutes=settings.host_busy_wait_minutes,
            hf_token=dg.EnvVar(HF_TOKEN_ENV) if os.environ.get(HF_TOKEN_ENV) else None,
            model_dirs=settings.model_places()[0],
            model_images=settings.model_places()[1],
            **settings.serve_defaults(),
        )

    @property
    def label(self) -> str:
        return self.name or f"ssh@{self.host}"

    @property
    def target(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"

    # The one mapping from this resource's fields to the machine's models.
    def ssh_target(self) -> SshTarget:
        from cosmos_assets.machines.ssh_target import SshTarget

        return SshTarget(
            host=self.host,
            port=self.port,
            user=self.user,
            key_file=Path(self.ssh_key).expanduser() if self.ssh_key else None,
            key_passphrase_env=self.key_passphrase_env,
            known_hosts=Path(self.known_hosts).expanduser() if self.known_hosts else None,
            ssh_config=Path(self.ssh_config).expanduser() if self.ssh_config else None,
            trust_on_first_use=self.trust_on_first_use,
        )

    def model_place(self, model: str) -> tuple[str, str]:
        """(checkout, image) of ``model``: REMOTE_DIR and DOCKER_IMAGE for Transfer1 and the preview (the upscaler's
        home), the model's own for the newer ones."""
        repo = backend_named(model).checkout
        if repo is None:
            return self.remote_dir, self.docker_image
        default_dir = posixpath.join(posixpath.dirname(self.remote_dir.rstrip("/")) or ".", repo)
        return self.model_dirs.get(model, default_dir), self.model_images.get(model, f"{repo}:latest")

    def machine_for(self, model: str) -> Machine:
        if backend_named(model).checkout is None:
            return self.machine()
        if model not in self._model_machines:
            from cosmos_assets.machines.ssh_host import SshHost

            self._model_machines[model] = SshHost(self.ssh_target(), self.host_settings(model), self._secrets())
        return self._model_machines[model]

    def host_settings(self, model: str | None = None) -> SshHostSettings:
        from cosmos_assets.machines.ssh_host_settings import SshHostSettings

        remote_dir, image = self.model_place(model) if model else (self.remote_dir, self.docker_image)
        # One checkpoint folder (and so one download cache) for every model: Transfer1's default REMOTE_DIR/../checkpoints.
        checkpoint_dir = self.checkpoint_dir or (default_checkpoint_dir(self.remote_dir) if model else None)
        return SshHostSettings(
            remote_dir=remote_dir,
            checkpoint_dir=checkpoint_dir,
            docker_image=image,
            docker_gpus=self.docker_gpus,
            container_user=self.container_user,
            container_env=self.container_env,
            min_free_gb=self.min_free_gb,
            reconnect_attempts=self.reconnect_attempts,
            name=self.label,
            serve=self.serve,
            serve_idle_minutes=self.serve_idle_minutes,
            serve_load_minutes=self.serve_load_minutes,
            busy_wait_minutes=self.busy_wait_minutes,
        )

    def _secrets(self) -> dict[str, str]:
        token = self.hf_token.get_value() if isinstance(self.hf_token, dg.EnvVar) else self.hf_token
        return {HF_TOKEN_ENV: token} if token else {}

    def build_machine(self) -> Machine:
        from cosmos_assets.machines.ssh_host import SshHost

        return SshHost(self.ssh_target(), self.host_settings(), self._secrets())

    def probe(self, model: str) -> None:
        machine = self.machine_for(model)
        check = getattr(machine, "check_reachable", None)
        if callable(check):
            check()  # the link answers now, or one fresh connection (HostUnreachableError at once); no cached answer

    def stop_model_service(self, why: str) -> list[str]:
        machine = self.machine_for("cosmos3") if self.has_model("cosmos3") else self.machine()
        return machine.stop_service(lambda line: None, why)  # type: ignore[attr-defined]

    def openssh_argv(self, command: Sequence[str] = ()) -> list[str]:
        """The OpenSSH client argv for a shell (or ``command``) on the host, reaching it as we do (``cosmos-assets ssh``)."""
        return self.ssh_target().openssh_argv(command)
