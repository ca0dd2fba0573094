"""One run per GPU host at a time, held as a Dagster concurrency slot: the pool ``gpu_host/<host>`` of limit 1.

A step holding the asset pool ``gpu_host`` (limit: the number of hosts) picks its concrete host here by claiming that
host's slot through the instance's event log storage, the same table Dagster's own op pools use: so the claim is
queued by run priority (``dagster/priority``), shown on the UI's concurrency page, counted whether the run came from
the UI, a sensor or ``dagster asset materialize``, and freed with every other slot of a dead run (defs/sensors/dead_runs.py, the
monitoring daemon). Each host is claimed under its own step key (``<step>@<host>``) so one host's claim or pending
place can be given back without touching the step's own ``gpu_host`` slot. See docs/hosts.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import dagster as dg

HOST_POOL_PREFIX = "gpu_host/"
ANY_GPU_POOL = "gpu_host"
_FIRST_WAIT_S, _MAX_WAIT_S = 0.5, 5.0


def host_pool(label: str) -> str:
    """The Dagster pool (concurrency key) of one host."""
    return HOST_POOL_PREFIX + label


def supported(instance: dg.DagsterInstance | None) -> bool:
    return instance is not None and instance.event_log_storage.supports_global_concurrency_limits


def drained(instance: dg.DagsterInstance, labels: Sequence[str]) -> set[str]:
    """Hosts whose pool limit was set to 0 (on the concurrency page or ``dagster instance concurrency set``)."""
    limits = {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()}
    return {label for label in labels if limits.get(host_pool(label)) == 0}


def _set_exactly(instance: dg.DagsterInstance, key: str, slots: int) -> bool:
    """Give ``key`` exactly ``slots`` slots; True if it had to change. Several runs starting at once may each set it
    (SQLite storage counts then inserts), so the count is read back and set again until it holds."""
    from sqlalchemy.exc import DBAPIError

    storage = instance.event_log_storage
    changed = False
    for attempt in range(8):
        info = storage.get_concurrency_info(key)
        if info.slot_count == slots and info.limit == slots and not info.using_default_limit:
            return changed
        try:
            storage.set_concurrency_slots(key, slots)
            changed = True
        except DBAPIError:  # another run inserted the same limit row first (unique key), or held the lock
            if attempt == 7:
                raise
        time.sleep(0.05 * (attempt + 1))
    return changed


def ensure_limits(
    instance: dg.DagsterInstance, labels: Sequence[str], any_gpu: int | None, log: Callable[[str], None]
) -> None:
    """Each host's pool holds one slot (0, a drained host, is left alone); ``gpu_host`` holds ``any_gpu`` slots."""
    gone = drained(instance, labels)
    for label in labels:
        if label not in gone:
            _set_exactly(instance, host_pool(label), 1)
    if any_gpu is not None and _set_exactly(instance, ANY_GPU_POOL, any_gpu):
        log(f"Dagster pool {ANY_GPU_POOL} set to {any_gpu} slot(s): one per host in the pool file")


def run_priority(run: dg.DagsterRun) -> int:
    try:
        return int(run.tags.get("dagster/priority", "0"))
    except ValueError:
        return 0


class HostClaims:
    """The host slots one step of one run claims, waits for and gives back."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run: dg.DagsterRun,
        step_key: str,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.instance = instance
        self.run_id = run.run_id
        self.step_key = step_key
        self.priority = run_priority(run)
        self.cancelled = cancelled
        self._storage = instance.event_log_storage

    def _step(self, label: str) -> str:
        return f"{self.step_key}@{label}"

    def _holds(self, label: str) -> bool:
        info = self._storage.get_concurrency_info(host_pool(label))
        return any(slot.run_id == self.run_id and slot.step_key == self._step(label) for slot in info.claimed_slots)

    def release(self, label: str) -> None:
        """Give the host back (or leave its queue); the next step waiting for it, by priority, is assigned it."""
        self._storage.free_concurrency_slot_for_step(self.run_id, self._step(label))

    def claim_first(self, labels: Sequence[str], log: Callable[[str], None]) -> str:
        """Wait in every listed host's queue at once and hold the first host assigned to this step; the others'
        places are given back. Raises :class:`dg.DagsterExecutionInterruptedError` if the run is terminated."""
        gone = drained(self.instance, labels)
        for label in labels:  # a host named for the first time (a single host): its pool gets its one slot
            if label not in gone:
                _set_exactly(self.instance, host_pool(label), 1)
        queued: set[str] = set()
        wait, waited = _FIRST_WAIT_S, False
        try:
            while True:
                for label in labels:
                    status = self._storage.claim_concurrency_slot(
                        host_pool(label), self.run_id, self._step(label), self.priority
                    )
                    queued.add(label)
                    if status.is_claimed and self._holds(label):
                        for other in queued - {label}:
                            self.release(other)
                        return label
                if not waited:
                    log(
                        f"all hosts that can take {self.step_key} are busy ({', '.join(labels)}): waiting in their "
                        f"Dagster pools at priority {self.priority}"
                    )
                    waited = True
                if self.cancelled():
                    raise dg.DagsterExecutionInterruptedError("the run was terminated while waiting for a host")
                time.sleep(wait)
                wait = min(_MAX_WAIT_S, wait * 1.5)
        except BaseException:
            for label in queued:
                self.release(label)
            raise


def runs_on(instance: dg.DagsterInstance, label: str) -> tuple[list[str], int]:
    """(run ids holding the host's slot now, steps waiting for it)."""
    info = instance.event_log_storage.get_concurrency_info(host_pool(label))
    holding = [slot.run_id for slot in info.claimed_slots]
    waiting = sum(1 for step in info.pending_steps if step.assigned_timestamp is None)
    return holding, waiting
