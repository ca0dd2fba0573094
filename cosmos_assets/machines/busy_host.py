"""One model on a host's GPUs at a time, whoever started it.

Before a model container starts, the host's docker engine is asked for the running containers of ours (every
container we start carries the ``cosmos-assets.run-id`` label, whichever pool entry, process, Dagster run or version
of this package started it). While one holds any of the GPUs the new run would get, or runs the same prompt and
stage, the new run waits, bounded (``COSMOS_HOST_BUSY_WAIT_MINUTES``), saying in its live log which container and
which run it waits for; when the bound passes it is refused in one line (in a pool, the host is then skipped like a
preflight refusal). The check is per engine, not per pool entry: pool entries served by one engine are one host, so
their ``host`` labels do not keep them apart (they did, and two entries on one engine could run one prompt twice at
once). Only GPUs do: each container is labelled with the devices it was given (``cosmos-assets.gpus``: ``all`` or
``0,1``), so two entries that split one machine's GPUs (``gpus: "0"`` and ``gpus: "1"``) still run side by side.

A container that needs no GPU (the preview backend's dry run of a host: ``cosmos-assets.gpus=none``) is waited for
only by a run of its own prompt and stage, and waits only for those; a container without the label (started before it
existed) holds ``all``. Runs on this computer (``LocalMachine``: the preview as a plain process) are not GPU runs and
are not checked.

Left open: two processes that ask in the same instant, both see the engine free, and both start (each pool entry's
Dagster pool serializes its own steps, so this takes two pool entries on one engine starting within the same second).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cosmos_assets.machines.docker_engine import DockerUnreachableError, docker_down, one_line
from cosmos_assets.machines.docker_run import LABEL_PREFIX
from cosmos_assets.machines.job import HostNotReadyError, LogLine
from cosmos_assets.machines.ssh_link import TAG, SshLink

GPU_LABEL = f"{LABEL_PREFIX}.gpus"
_FIELDS = ("run-id", "prompt", "stage", "dagster-run-id", "host", "gpus")
POLL_SECONDS = 5.0
SAY_AGAIN_SECONDS = 60.0


@dataclass(frozen=True)
class OurContainer:
    """A running container of ours on the engine, as its labels describe it."""

    name: str
    run_id: str
    prompt: str
    stage: str
    dagster_run_id: str
    host: str
    gpus: str  # "all", "none" or device ids "0,1"

    def holds_any_of(self, gpus: str) -> bool:
        """Whether it holds any of ``gpus`` (the devices a new run would get)."""
        if "none" in (self.gpus, gpus):
            return False
        if "all" in (self.gpus, gpus):
            return True
        return bool(set(self.gpus.split(",")) & set(gpus.split(",")))

    def runs(self, prompt: str, stage: str) -> bool:
        """Whether it runs ``stage`` of any of ``prompt`` (a batch's label is ``a+b+c``, as is its container's)."""
        return self.stage == stage and bool(set(prompt.split("+")) & set(self.prompt.split("+")))

    def describe(self) -> str:
        dagster = f", Dagster run {self.dagster_run_id}" if self.dagster_run_id else ""
        started_for = f", started for {self.host}" if self.host else ""
        return f"container {self.name} ({self.stage} of {self.prompt}, run {self.run_id}{dagster}{started_for})"


def gpus_held(needs_gpu: bool, devices: Literal["all"] | tuple[int | str, ...] | None) -> str:
    """The GPUs a container holds, as labelled: ``none`` for a job that needs none (the preview's dry run), the
    devices it is given, and ``all`` for a GPU job on a host whose GPUs are not named (``COSMOS_DOCKER_GPUS=none``, a
    test host: the model would still want them)."""
    if not needs_gpu:
        return "none"
    return "all" if devices is None or devices == "all" else ",".join(str(d) for d in devices)


def running_ours(link: SshLink, log: LogLine) -> list[OurContainer]:
    """Every running container of ours on the host's engine, whoever started it."""
    template = "\t".join(["{{.Names}}", *(f'{{{{.Label "{LABEL_PREFIX}.{name}"}}}}' for name in _FIELDS)])
    argv = ["docker", "ps", "--filter", f"label={LABEL_PREFIX}.run-id", "--format", template]
    code, out, err = link.with_reconnect("listing containers", lambda: link.exec(argv), log)
    if code != 0:
        if docker_down(err):
            raise DockerUnreachableError(
                f"docker is not reachable on {link.label} ({one_line(err)}). A later attempt "
                "retries: the daemon may be restarting."
            )
        raise HostNotReadyError(
            f"`docker ps` failed on {link.label} ({err.strip() or f'exit {code}'}), so it cannot be checked that no "
            "model of ours is running there; fix docker on the host and run again."
        )
    found = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 1 + len(_FIELDS) and parts[0]:
            name, run_id, prompt, stage, dagster_run_id, host, gpus = parts
            found.append(OurContainer(name, run_id, prompt, stage, dagster_run_id, host, gpus or "all"))
    return found


def wait_until_free(
    link: SshLink,
    name: str,
    log: LogLine,
    wait_seconds: float,
    *,
    gpus: str,
    prompt: str,
    stage: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Return once no container of ours but ``name`` on the engine holds any of ``gpus`` (what ``name`` will hold) or
    runs ``prompt``'s ``stage``; raise :class:`HostNotReadyError` naming the one still running after ``wait_seconds``
    (0: refuse at once). Says whom it waits for at once, then every minute (the run's log stays alive for the stall
    watchdog)."""
    started = clock()
    said: dict[str, float] = {}
    while True:
        busy = [
            c for c in running_ours(link, log) if c.name != name and (c.holds_any_of(gpus) or c.runs(prompt, stage))
        ]
        if not busy:
            if said:
                log(f"{TAG} {link.label} is free now (waited {clock() - started:.0f}s): starting {name}")
            return
        waited, first = clock() - started, busy[0]
        if waited >= wait_seconds:
            raise HostNotReadyError(
                f"{first.describe()} is still running on {link.label}'s docker engine after waiting {waited:.0f}s "
                f"(COSMOS_HOST_BUSY_WAIT_MINUTES): one model on a host's GPUs at a time. Wait for it, or stop it "
                f"(`cosmos-assets ssh`, then `docker rm -f {first.name}`), and run again."
            )
        if first.name not in said or clock() - said[first.name] >= SAY_AGAIN_SECONDS:
            others = f" (and {len(busy) - 1} more)" if len(busy) > 1 else ""
            log(
                f"{TAG} waiting for {first.describe()}{others} to end on {link.label} before starting {name}: one model "
                f"on a host's GPUs at a time, whoever started it (waited {waited:.0f}s of at most {wait_seconds:.0f}s)"
            )
            said[first.name] = clock()
        sleep(max(0.0, min(poll_seconds, wait_seconds - waited)))
