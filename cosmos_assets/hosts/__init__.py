"""GPU hosts. One setting, ``COSMOS_HOST``, picks the deployment: ``preview`` (default) or ``ssh``."""

from __future__ import annotations

import os

from cosmos_assets.config import ProjectLayout
from cosmos_assets.hosts.base import GpuHost

HOST_ENV = "COSMOS_HOST"
PREVIEW_DIR_ENV = "COSMOS_PREVIEW_DIR"


def gpu_host_from_env(layout: ProjectLayout) -> GpuHost:
    kind = os.environ.get(HOST_ENV, "preview").strip().lower()
    if kind == "preview":
        from cosmos_assets.hosts.local import LocalPreviewHost

        remote_dir = os.environ.get(PREVIEW_DIR_ENV) or str(layout.root / ".preview_host" / "cosmos-transfer1")
        return LocalPreviewHost(remote_dir=remote_dir)
    if kind == "ssh":
        from cosmos_assets.hosts.ssh import SshGpuHost

        return SshGpuHost.from_env()
    raise ValueError(f"{HOST_ENV}={kind!r} is not a host kind: use 'preview' (no GPU, pipeline preview) or 'ssh' (a real GPU host)")
