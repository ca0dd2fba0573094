"""The pool of GPU hosts as one Dagster resource (``gpu_host``): the hosts of ``COSMOS_HOSTS_FILE``.

A GPU step holds a place in the asset pool ``gpu_host`` (sized here to the number of hosts) and then the slot of one
free host that has its model (:mod:`cosmos_assets.defs.resources.placement`); so N hosts run N generations at once and never
two on one host. docs/hosts.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from cosmos_assets.defs.resources import slots
from cosmos_assets.defs.resources.hosts import GpuHost, LocalPreviewHost, SshGpuHost
from cosmos_assets.machines.base import Machine
from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.machines.pool_file import HostEntry, HostPoolFile, entry_error, load_host_pool

DEFAULT_IMAGE = "cosmos-transfer1:latest"
POOL_TAG = "cosmos/gpu_pool"


def member_from_entry(
    entry: HostEntry, hosts_file: Path | str = "COSMOS_HOSTS_FILE", serve: dict[str, Any] | None = None
) -> GpuHost:
    """The host resource of one pool-file entry (its HF token stays an EnvVar: read only by the run); what the
    resource refuses is a :class:`PoolFileError` naming the file, the host and the field. ``serve``: the deployment's
    model service settings (Settings.serve_defaults), the entry's own ``serve`` wins."""
    try:
        return _member(entry, serve or {})
    except ValidationError as error:
        raise entry_error(hosts_file, entry, error) from None


def _member(entry: HostEntry, serve: dict[str, Any]) -> GpuHost:
    if entry.is_local:
        return LocalPreviewHost(
            remote_dir=entry.remote_dir,
            name=entry.name,
            model="preview",
            models=["preview"],
            price_per_gpu_hour=entry.price_per_gpu_hour,
        )
    user, host, port = entry.ssh_parts()
    token = entry.hf_token_env
    return SshGpuHost(
        model=entry.models[0],
        models=entry.models,
        host=host,
        user=user,
        port=port,
        ssh_key=entry.ssh_key,
        known_hosts=entry.known_hosts,
        ssh_config=entry.ssh_config,
        trust_on_first_use=entry.trust_on_first_use,
        remote_dir=entry.remote_dir,
        checkpoint_dir=entry.checkpoints,
        docker_image=entry.image or DEFAULT_IMAGE,
        docker_gpus=entry.gpus,
        container_user=entry.container_user,
        container_env=entry.container_env,
        hf_token=dg.EnvVar(token) if token and os.environ.get(token) else None,
        min_free_gb=entry.min_free_gb,
        reconnect_attempts=entry.reconnect_attempts,
        busy_wait_minutes=entry.busy_wait_minutes,
        name=entry.name,
        model_dirs=entry.model_dirs,
        model_images=entry.model_images,
        price_per_gpu_hour=entry.price_per_gpu_hour,
        **{**serve, **({"serve": entry.serve} if entry.serve else {})},
    )


class GpuHostPool(GpuHost):
    """Every enabled host of the pool file; a GPU step runs on the first free one that has its model."""

    hosts_file: str = Field(description="COSMOS_HOSTS_FILE: the pool file (YAML or TOML; docs/hosts.md).")
    model: str = Field(default="cosmos-transfer1", description="Model when neither the run nor the prompt names one.")
    name: str = Field(default="pool", description="The pool's name in run tags.")
    serve_defaults: dict[str, Any] = Field(
        default_factory=dict, description="COSMOS_SERVE and its timings, for the hosts whose entry does not set serve."
    )

    _pool: HostPoolFile | None = PrivateAttr(default=None)
    _members: list[GpuHost] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_file(self) -> GpuHostPool:
        if not isinstance(self.hosts_file, dg.EnvVar):
            self.members()  # a bad file fails here, naming file, host and field
        return self

    @classmethod
    def from_file(cls, path: Path, model: str | None = None, serve: dict[str, Any] | None = None) -> GpuHostPool:
        pool = load_host_pool(path)
        for entry in pool.enabled:  # here, not only in the validator below, whose errors pydantic would wrap
            member_from_entry(entry, path, serve)
        return cls(hosts_file=str(path), model=pool.model_or_default(model), name=path.stem, serve_defaults=serve or {})

    def pool_file(self) -> HostPoolFile:
        if self._pool is None:
            self._pool = load_host_pool(Path(self.hosts_file))
        return self._pool

    def members(self) -> list[GpuHost]:
        if self._members is None:
            self._members = [
                member_from_entry(entry, self.hosts_file, self.serve_defaults) for entry in self.pool_file().enabled
            ]
        return self._members

    @property
    def label(self) -> str:
        return f"pool:{self.name}"

    @property
    def target(self) -> str:
        return f"the hosts of {self.hosts_file}"

    def queue_tags(self) -> dict[str, str]:
        # No gpu_host run tag: its queue limit of one per value would run one pool run at a time. Steps wait in the
        # gpu_host pool (one slot per host) and then for a host's own slot.
        return {POOL_TAG: self.name}

    def has_model(self, model: str) -> bool:
        return any(member.has_model(model) for member in self.members())

    def _first_with(self, model: str) -> GpuHost:
        for member in self.members():
            if member.has_model(model):
                return member
        raise HostNotReadyError(f"no host in {self.hosts_file} has the model {model}; add it to a host's models")

    def build_machine(self) -> Machine:
        return self._first_with(self.model).machine()

    def machine_for(self, model: str) -> Machine:
        """A machine that has ``model`` (the first in file order): for ``cosmos-assets command``, not for runs."""
        return self._first_with(model).machine_for(model)

    def close(self) -> None:
        for member in self._members or []:
            member.close()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        super().setup_for_execution(context)
        if slots.supported(context.instance):
            assert context.instance is not None
            log = context.log.info if context.log else print
            slots.ensure_limits(context.instance, [m.label for m in self.members()], len(self.members()), log)
