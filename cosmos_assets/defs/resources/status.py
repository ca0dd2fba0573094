"""``cosmos-assets hosts``: each host of the pool with its state (reachable, GPUs, free disk, image, runs in flight).

Each host is asked over its own verified link, all at once (an unreachable host costs its connect timeout, not the
others'); what runs there comes from Dagster's slot of that host (:mod:`cosmos_assets.defs.resources.slots`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel

from cosmos_assets.defs.resources.hosts import GpuHost


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
    """What ``host`` says of itself now (its machine's :meth:`~cosmos_assets.machines.base.Machine.describe`); never
    raises for a host that cannot be reached or asked."""
    machine = host.machine()
    try:
        state = machine.describe()
    finally:
        host.close()
    return HostStatus(
        name=host.label,
        target=host.target,
        models=host.models or [host.model],
        image=machine.image,
        price_per_gpu_hour=host.price_per_gpu_hour,
        **state.model_dump(),
    )


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
        )
    rows += [f"{s.name}: {s.problem}" for s in statuses if s.problem]
    return "\n".join(rows) + "\n"
