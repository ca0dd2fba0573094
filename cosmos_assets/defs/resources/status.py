"""``cosmos-assets hosts``: each host of the pool with its state (reachable, GPUs, free disk, image, runs in flight).

Each host is asked over its own verified link, all at once (an unreachable host costs its connect timeout, not the
others'); what runs there comes from Dagster's slot of that host (:mod:`cosmos_assets.defs.resources.slots`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel

from cosmos_assets.redaction import first_line

from cosmos_assets.defs.resources.hosts import GpuHost, LocalPreviewHost, SshGpuHost
from cosmos_assets.machines.docker_engine import DockerUnreachableError
from cosmos_assets.machines.job import HostNotReadyError


class HostStatus(BaseModel):
    name: str
    target: str
    reachable: bool
    problem: str | None = None
    gpus: int | None = None
    free_gb: float | None = None
    image: str | None = None
    image_present: bool | None = None
    models: list[str]
    price_per_gpu_hour: float | None = None
    runs_in_flight: list[str] | None = None
    waiting: int | None = None


def probe(host: GpuHost) -> HostStatus:
    """What ``host`` says of itself now; never raises for a host that cannot be reached or asked."""
    common = {"name": host.label, "models": host.models or [host.model], "price_per_gpu_hour": host.price_per_gpu_hour}
    if isinstance(host, LocalPreviewHost):
        folder = Path(host.remote_dir)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return HostStatus(target="this machine", reachable=True, gpus=0, free_gb=shutil.disk_usage(folder).free / 1e9,
                          **common)  # fmt: skip
    assert isinstance(host, SshGpuHost)
    target = f"{host.user + '@' if host.user else ''}{host.host}{':' + str(host.port) if host.port else ''}"
    machine = host.machine()
    try:
        facts = machine.facts()  # type: ignore[attr-defined]
        link = machine.link  # type: ignore[attr-defined]
        code, out, _ = link.exec(["nvidia-smi", "-L"])
        gpus = sum(1 for line in out.splitlines() if line.startswith("GPU ")) if code == 0 else 0
        code, out, _ = link.exec(["df", "-Pk", "--", facts.remote_dir])
        lines = out.strip().splitlines()
        free = int(lines[-1].split()[3]) * 1024 / 1e9 if code == 0 and len(lines) >= 2 else None
        try:
            present: bool | None = machine.docker.image_present(host.docker_image)  # type: ignore[attr-defined]
            docker_problem = None
        except DockerUnreachableError as error:  # the host answers, its docker does not: reachable, image unknown
            present, docker_problem = None, f"docker is not answering: {first_line(error)}"
    except (HostNotReadyError, OSError, RuntimeError) as error:
        return HostStatus(target=target, reachable=False, problem=first_line(error), image=host.docker_image, **common)
    finally:
        host.close()
    return HostStatus(target=target, reachable=True, gpus=gpus, free_gb=free, image=host.docker_image,
                      image_present=present, problem=docker_problem, **common)  # fmt: skip


def probe_all(hosts: Sequence[GpuHost]) -> list[HostStatus]:
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(hosts)))) as pool:
        return list(pool.map(probe, hosts))


def table(statuses: Sequence[HostStatus]) -> str:
    """One line a host, under a header; each host's problem (unreachable, docker not answering) after the table."""
    header = f"{'NAME':<16} {'TARGET':<28} {'STATE':<11} {'GPUS':>4} {'FREE_GB':>8} {'IMAGE':<8} {'MODELS':<36} {'PRICE/GPU_H':>11} {'WAITING':>7} {'IN_FLIGHT':>9}"
    rows = [header]
    for s in statuses:
        image = "-" if s.image_present is None else ("present" if s.image_present else "missing")
        flight = "?" if s.runs_in_flight is None else str(len(s.runs_in_flight))
        rows.append(
            f"{s.name:<16} {s.target:<28} {'reachable' if s.reachable else 'UNREACHABLE':<11} "
            f"{'-' if s.gpus is None else s.gpus:>4} {'-' if s.free_gb is None else f'{s.free_gb:.1f}':>8} {image:<8} "
            f"{','.join(s.models):<36} {'-' if s.price_per_gpu_hour is None else f'{s.price_per_gpu_hour:g}':>11} "
            f"{'?' if s.waiting is None else s.waiting:>7} {flight:>9}"
        )  # fmt: skip
    rows += [f"{s.name}: {s.problem}" for s in statuses if s.problem]
    return "\n".join(rows) + "\n"
