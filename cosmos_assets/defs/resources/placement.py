"""Which host a GPU step runs on: the first free one that has its model and answers; one that does not is skipped.

The step already holds a place in the asset pool ``gpu_host`` (one per host). Here it waits, by run priority, for the
slot of a host that has the model (:mod:`cosmos_assets.defs.resources.slots`), checks the host answers now (only when there is
another to go to: the open link's round trip or a fresh connection, never an answer cached earlier), and runs the
work there. A host that cannot be reached, or whose preflight refuses the job before anything ran on it
(:class:`HostNotReadyError`), is given back and skipped for the rest of this step with one log line; the work goes to
another host. A failure after the job started on a host is the step's failure.

A host holding a left-behind run of the work goes first, to adopt it; when it does not answer it is skipped like any
other (a left-behind run never pins its work there), and once another host has done the work it is no longer
preferred (docs/hosts.md, "Failover").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import dagster as dg

from cosmos_assets.defs.resources import slots
from cosmos_assets.machines.job import HostNotReadyError, HostUnreachableError
from cosmos_assets.redaction import first_line
from cosmos_assets.runs.adopt import newer_success_in_index, superseded_by
from cosmos_assets.runs.record_index import UNFINISHED
from cosmos_assets.runs.record_store import RunStore

if TYPE_CHECKING:
    from sqlite3 import Connection

    from cosmos_assets.runs.record import RunRecord


class PlacedHost(Protocol):
    """What placement needs of a host (the resources' ``GpuHost`` is one): its name, its models, and a check that
    it answers now."""

    @property
    def label(self) -> str: ...

    @property
    def models(self) -> Sequence[str]: ...

    def has_model(self, model: str) -> bool: ...

    def probe(self, model: str) -> None: ...

    def stop_model_service(self, why: str) -> list[str]: ...


T = TypeVar("T")
H = TypeVar("H", bound=PlacedHost)
HOST_TAG = "cosmos/host"
"""Run tag naming the host the run's latest GPU step was placed on (the runs list shows it)."""


def _next_second() -> None:
    """Run ids are stamped to the second: an attempt on the next host must not reuse the skipped one's id."""
    time.sleep(1.0 - (time.time() % 1.0) + 0.01)


def left_behind_hosts(runs_dir: Path, prompt: str, stage: str) -> list[str]:
    """Hosts holding an unfinished or detached run of this prompt and stage (newest first): the next attempt goes
    there first, so it can adopt that run's container or outputs (runs/adopt.py) instead of running it again. A run
    whose work a newer run has since done elsewhere (``superseded_by``) is no reason to go back, nor is a reproduction
    (never adopted as the prompt's run)."""

    store = RunStore(runs_dir)

    def indexed(conn: Connection) -> list[str]:
        found = store.index.run_ids(
            conn,
            f"prompt = ? AND stage = ? AND {UNFINISHED} AND reproduces IS NULL",
            (prompt, stage),
            order="created_us DESC, name DESC",
        )
        left = [store.index.load(conn, run_id) for run_id in found]
        return [r.host for r in left if newer_success_in_index(store, conn, r) is None]

    def scanned(records: list[RunRecord]) -> list[str]:
        return [
            r.host
            for r in reversed(records)
            if r.prompt == prompt
            and r.stage == stage
            and (not r.is_final or r.detached)
            and r.reproduces is None
            and superseded_by(records, r) is None
        ]

    return list(dict.fromkeys(store.lookup(indexed, scanned)))


def run_on_free_host(
    context: dg.AssetExecutionContext,
    hosts: Sequence[H],
    model: str,
    work: Callable[[H], T],
    prefer: Sequence[str] = (),
) -> T:
    """``work(host)`` on a free host of ``hosts`` that has ``model``, holding that host's Dagster slot meanwhile;
    hosts named in ``prefer`` are tried first (when free), then the rest in pool-file order."""
    able = [host for host in hosts if host.has_model(model)]
    able = sorted(able, key=lambda h: prefer.index(h.label) if h.label in prefer else len(prefer))
    if not able:
        names = ", ".join(f"{h.label} ({', '.join(h.models) or 'any'})" for h in hosts)
        raise HostNotReadyError(
            f"no host in the pool has the model {model} (hosts: {names}); add it to a host's "
            "models in COSMOS_HOSTS_FILE, or run another model"
        )
    instance, run = context.instance, context.run
    claims = None
    if slots.supported(instance):
        claims = slots.HostClaims(
            instance,
            run,
            str(context.op_execution_context.op_handle),
            cancelled=lambda: is_terminating(instance, run.run_id),
        )
    else:
        context.log.warning("this Dagster instance has no concurrency slots: host runs are not limited to one per host")
    skipped: dict[str, HostNotReadyError] = {}
    by_label = {host.label: host for host in able}
    while True:
        open_hosts = [h.label for h in able if h.label not in skipped]
        if claims is not None:
            gone = slots.drained(instance, open_hosts)
            for label in gone:
                context.log.warning(
                    f"host {label} skipped: drained (its Dagster pool {slots.host_pool(label)} has limit 0)"
                )
                skipped[label] = HostNotReadyError(f"{label} is drained (Dagster pool limit 0)")
                _stop_service_of_drained(by_label[label], context.log)
            open_hosts = [label for label in open_hosts if label not in gone]
        if not open_hosts:
            raise _none_left(model, skipped)
        label = claims.claim_first(open_hosts, context.log.info) if claims is not None else open_hosts[0]
        host = by_label[label]
        try:
            why = (
                "an earlier run of this work was left on it"
                if label in prefer
                else "free, has the model; tried in pool-file order"
            )
            context.log.info(f"host {label} chosen for {model} ({why})")
            if instance is not None:
                instance.add_run_tags(run.run_id, {HOST_TAG: label})
            try:
                if len(open_hosts) > 1:
                    host.probe(model)
                return work(host)
            except HostNotReadyError as error:  # unreachable, or refused before anything ran there
                if len(open_hosts) == 1 and not skipped:
                    raise  # a pool of one: its own error
                skipped[label] = error
                context.log.warning(f"host {label} skipped for this run: {first_line(error)}")
                _next_second()
        finally:
            if claims is not None:
                claims.release(label)


def _stop_service_of_drained(host: PlacedHost, log: dg.DagsterLogManager) -> None:
    """A drained host gives back the GPU memory its resident model service holds; on a thread of its own, so a
    drained host that does not answer never holds this run up (what fails is a warning)."""

    def stop() -> None:
        try:
            for name in host.stop_model_service("the host is drained"):
                log.info(f"host {host.label} is drained: its model service {name} was stopped")
        except Exception as error:  # noqa: BLE001 - best effort: the next drain or the idle stop does it
            log.warning(f"host {host.label} is drained, but its model service could not be stopped: {error}")

    threading.Thread(target=stop, name=f"drain-{host.label}", daemon=True).start()


def _none_left(model: str, skipped: dict[str, HostNotReadyError]) -> HostNotReadyError:
    if len(skipped) == 1:
        return next(iter(skipped.values()))
    reasons = "; ".join(f"{label}: {first_line(error)}" for label, error in skipped.items())
    kind = (
        HostUnreachableError
        if all(isinstance(e, HostUnreachableError) for e in skipped.values())
        else HostNotReadyError
    )
    return kind(f"no host could take this {model} run ({reasons})")


def is_terminating(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether run ``run_id`` was terminated from outside (the UI, ``dagster run delete``...): asked while it waits for
    a host and while its model runs, so a run no interrupt reaches still stops."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
