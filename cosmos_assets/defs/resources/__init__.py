"""Where runs happen, as Dagster resources. ``COSMOS_HOSTS_FILE`` names a pool of GPU hosts (docs/hosts.md); without
it, one setting, ``COSMOS_HOST``, picks the deployment: ``preview`` (default) or ``ssh`` (a pool of one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cosmos_assets.defs.resources.host_pool import GpuHostPool
from cosmos_assets.defs.resources.hosts import GpuHost, LocalPreviewHost, SshGpuHost

if TYPE_CHECKING:
    from cosmos_assets.machines.ssh_target import SshTarget
    from cosmos_assets.settings import Settings

__all__ = [
    "GpuHost",
    "LocalPreviewHost",
    "SshGpuHost",
    "gpu_host_from_settings",
    "ssh_target_from_settings",
]


def gpu_host_from_settings(settings: Settings) -> GpuHost:
    """The host resource the settings pick: the pool of COSMOS_HOSTS_FILE, else COSMOS_HOST, running the model they
    name (COSMOS_MODEL)."""
    if settings.hosts_file is not None:
        return GpuHostPool.from_file(settings.hosts_file, settings.model, settings.serve_defaults())
    if settings.host == "preview":
        remote_dir = settings.preview_dir or str(settings.root / ".preview_host" / "cosmos-transfer1")
        return LocalPreviewHost(remote_dir=remote_dir, model=settings.model_name)
    return SshGpuHost.from_settings(settings)


def ssh_target_from_settings(settings: Settings) -> SshTarget:
    """The SSH target of REMOTE_HOST and friends, whatever COSMOS_HOST is (``cosmos-assets ssh``)."""
    return SshGpuHost.from_settings(settings).ssh_target()
