"""GPU utilisation sampled on the machine while a run holds it: ``nvidia-smi --query-gpu`` every few seconds.

:class:`GpuSampler` runs a daemon thread beside the run; each tick calls the machine's ``read`` (which runs
:data:`QUERY` there and returns its output, or None when it cannot) and keeps the parsed rows. Sampling never fails
a run: any error of a read is counted and the next tick tries again. :meth:`GpuSampler.summary` gives the
:class:`GpuUsage` that goes into the run record and the asset metadata (mean and max utilisation over all GPUs and
samples, peak memory used on any one GPU). Plain Python (no Dagster).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

from pydantic import BaseModel, Field

QUERY: tuple[str, ...] = ("nvidia-smi", "--query-gpu=utilization.gpu,memory.used,memory.total",
                          "--format=csv,noheader,nounits")  # fmt: skip
INTERVAL_SECONDS = 10.0
QUERY_TIMEOUT_SECONDS = 15.0


class GpuReading(BaseModel):
    """One GPU at one sample: utilisation % and memory in MiB."""

    utilization: float
    memory_used_mib: float
    memory_total_mib: float


def parse_query(text: str) -> list[GpuReading]:
    """The rows of :data:`QUERY`'s output (``42, 1234, 81559`` per GPU); rows it cannot read (``[N/A]``) are left out."""
    rows: list[GpuReading] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3:
            continue
        try:
            util, used, total = (float(f) for f in fields)
        except ValueError:
            continue
        if 0 <= util <= 100 and 0 <= used <= total:
            rows.append(GpuReading(utilization=util, memory_used_mib=used, memory_total_mib=total))
    return rows


class GpuUsage(BaseModel):
    """What the GPUs did during one run, from ``samples`` reads of nvidia-smi on its machine."""

    samples: int = Field(description="successful reads of nvidia-smi during the run")
    failed_reads: int = Field(default=0, description="reads that gave nothing (nvidia-smi missing, link busy or down)")
    interval_seconds: float
    gpus: int = Field(default=0, description="GPUs nvidia-smi listed (the whole machine, not only the run's)")
    mean_utilization: float | None = Field(default=None, description="mean utilisation %, all GPUs and samples")
    max_utilization: float | None = None
    peak_memory_mib: float | None = Field(default=None, description="most memory used on one GPU at one sample")
    memory_total_mib: float | None = None

    def metadata(self) -> dict[str, float | int | str]:
        """Flat keys for the asset metadata."""
        if not self.samples:
            return {
                "gpu_util_samples": 0,
                "gpu_util": f"(not sampled: {self.failed_reads} read(s) of nvidia-smi gave nothing)",
            }
        return {
            "gpu_util_mean_percent": round(self.mean_utilization or 0.0, 1),
            "gpu_util_max_percent": round(self.max_utilization or 0.0, 1),
            "gpu_memory_peak_mib": round(self.peak_memory_mib or 0.0),
            "gpu_memory_total_mib": round(self.memory_total_mib or 0.0),
            "gpu_util_samples": self.samples,
        }


def summarise(samples: list[list[GpuReading]], failed_reads: int, interval: float) -> GpuUsage:
    readings = [r for sample in samples for r in sample]
    if not readings:
        return GpuUsage(samples=0, failed_reads=failed_reads, interval_seconds=interval)
    return GpuUsage(
        samples=len(samples),
        failed_reads=failed_reads,
        interval_seconds=interval,
        gpus=max(len(sample) for sample in samples),
        mean_utilization=sum(r.utilization for r in readings) / len(readings),
        max_utilization=max(r.utilization for r in readings),
        peak_memory_mib=max(r.memory_used_mib for r in readings),
        memory_total_mib=max(r.memory_total_mib for r in readings),
    )


class GpuSampler:
    """Reads the GPUs every ``interval`` seconds on a daemon thread between ``__enter__`` and ``__exit__``.

    ``read`` returns :data:`QUERY`'s output on the machine, or None when it cannot run it there. The first read is
    taken at once, so a short run still gets one sample.
    """

    def __init__(self, read: Callable[[], str | None], interval: float = INTERVAL_SECONDS) -> None:
        self._read = read
        self.interval = interval
        self._samples: list[list[GpuReading]] = []
        self._failed = 0
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> None:
        try:
            text = self._read()
            rows = parse_query(text) if text else []
        except Exception:  # noqa: BLE001 - sampling never fails the run
            rows = []
        with self._lock:
            if rows:
                self._samples.append(rows)
            else:
                self._failed += 1

    def _loop(self) -> None:
        self.sample_once()
        while not self._done.wait(self.interval):
            self.sample_once()

    def __enter__(self) -> GpuSampler:
        self._thread = threading.Thread(target=self._loop, name="cosmos-gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        if self._thread is not None:
            # a read stuck on a dead link must not hold the run: a daemon thread, left to its own timeout
            self._thread.join(timeout=2.0)

    def summary(self) -> GpuUsage:
        with self._lock:
            return summarise(list(self._samples), self._failed, self.interval)
