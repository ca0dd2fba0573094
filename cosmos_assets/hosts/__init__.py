"""Where runs happen, as Dagster resources. One setting, ``COSMOS_HOST``, picks the deployment: ``preview`` (default) or ``ssh``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cosmos_assets.config import ProjectLayout
from cosmos_assets.hosts.resources import GpuHost, LocalPreviewHost, SshGpuHost

if TYPE_CHECKING:
    from cosmos_assets.machines.ssh_target import SshTarget
    from cosmos_assets.settings import Settings

__all__ = [
    "GpuHost", "LocalPreviewHost", "SshGpuHost", "gpu_host_from_env", "gpu_host_from_settings", "ssh_target_from_settings",
]  # fmt: skip

HOST_ENV = "COSMOS_HOST"
PREVIEW_DIR_ENV = "COSMOS_PREVIEW_DIR"


def gpu_host_from_env(layout: ProjectLayout) -> GpuHost:
    kind = os.environ.get(HOST_ENV, "preview").strip().lower()
    if kind == "preview":
        remote_dir = os.environ.get(PREVIEW_DIR_ENV) or str(layout.root / ".preview_host" / "cosmos-transfer1")
        return LocalPreviewHost(remote_dir=remote_dir)
    if kind == "ssh":
        return SshGpuHost.from_env()
    raise ValueError(
        f"{HOST_ENV}={kind!r} is not a host kind: use 'preview' (no GPU, pipeline preview) or 'ssh' (a real GPU host)"
    )


def gpu_host_from_settings(settings: Settings) -> GpuHost:
    """The host resource the settings pick (COSMOS_HOST), running the model they name (COSMOS_MODEL)."""
    if settings.host == "preview":
        remote_dir = settings.preview_dir or str(settings.root / ".preview_host" / "cosmos-transfer1")
        return LocalPreviewHost(remote_dir=remote_dir, model=settings.model_name)
    return SshGpuHost.from_settings(settings)


def ssh_target_from_settings(settings: Settings) -> SshTarget:
    """The SSH target of REMOTE_HOST and friends, whatever COSMOS_HOST is (``cosmos-assets ssh``)."""
    return SshGpuHost.from_settings(settings).ssh_target()
