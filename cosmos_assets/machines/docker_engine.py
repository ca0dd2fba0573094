"""The docker engine on a host answering or not, and who ended a run's container: the errors that tell apart the
engine going away (stopped, restarting: retryable) from a container removed while the engine stayed up (someone's
``docker rm -f``: never retried), the bounded wait for an engine that went away under a running container, and the
kernel's own word that its OOM killer ended a container (when docker's ``OOMKilled`` says no: a host-wide OOM kill
on a cgroup v1 host is not flagged by docker).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cosmos_assets.machines.job import HostNotReadyError, LogLine
from cosmos_assets.machines.ssh_link import TAG

if TYPE_CHECKING:
    from cosmos_assets.machines.docker import ContainerState

# what the docker CLI says when its daemon is stopped or restarting (not when the user may not use it)
DOCKER_DOWN_SIGNS = ("Cannot connect to the Docker daemon", "Is the docker daemon running", "connection refused")
ENGINE_WAIT_S = 120.0  # how long a run waits for a docker engine that went away under it to answer again
ENGINE_POLL_S = 2.0


def docker_down(stderr: str) -> bool:
    """Whether the docker CLI's error says its daemon cannot be reached (stopped, restarting)."""
    return any(sign in stderr for sign in DOCKER_DOWN_SIGNS)


class DockerUnreachableError(HostNotReadyError):
    """The host answers but its docker daemon does not (stopped, restarting): a later attempt may find it back."""

    cause = "docker_unreachable"


class DockerWentAwayError(RuntimeError):
    """The docker engine stopped answering while our container ran (stopped or restarted, which stops containers):
    nothing is wrong with the work, so a later attempt runs it again (retryable, like ``docker_unreachable``)."""

    cause = "docker_unreachable"


class ContainerRemovedError(RuntimeError):
    """Our container was removed while it ran and the engine stayed up: someone or something removed it on purpose.
    Not retried (the same cause as a ``docker kill``: runs/oom.py, :func:`~cosmos_assets.runs.oom.killed_from_outside`)."""

    cause = "killed"


def one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def wait_for_engine(
    state: Callable[[], ContainerState | None], label: str, name: str, down: DockerUnreachableError, log: LogLine
) -> ContainerState | None:
    """Wait (up to ENGINE_WAIT_S) for the engine of ``label`` that stopped answering while container ``name`` ran;
    the container's ``state()`` then. A link drop meanwhile goes to the caller, which reconnects and asks again."""
    log(
        f"{TAG} docker on {label} stopped answering while {name} ran ({one_line(str(down), 160)}); "
        f"waiting up to {ENGINE_WAIT_S:.0f}s for the engine to come back"
    )
    deadline = time.monotonic() + ENGINE_WAIT_S
    while True:
        time.sleep(ENGINE_POLL_S)
        try:
            found = state()
        except DockerUnreachableError as again:
            if time.monotonic() < deadline:
                continue
            raise DockerWentAwayError(
                f"docker on {label} went away while container {name} ran and did not answer again within "
                f"{ENGINE_WAIT_S:.0f}s ({one_line(str(again), 160)}); the engine stops its containers when it "
                "stops: a later attempt runs the work again"
            ) from None
        status = "gone" if found is None else f"{found.status}, exit code {found.exit_code}"
        log(f"{TAG} docker on {label} answers again; container {name}: {status}")
        return found


NO_KERNEL_LOG = "__cosmos_assets_no_kernel_log__"
# The pipeline's status is tail's (always 0), so a log neither tool may read says so in its output instead.
KERNEL_LOG = f"{{ dmesg || journalctl -k -q --no-pager -n 5000 || echo {NO_KERNEL_LOG}; }} 2>/dev/null | tail -n 5000"


def kernel_log_read(kernel_log: str) -> bool:
    """Whether :data:`KERNEL_LOG` could read the kernel's log at all (``dmesg_restrict`` and no journal access leave
    nothing to read): only a log that was read can say no OOM kill happened."""
    return bool(kernel_log.strip()) and NO_KERNEL_LOG not in kernel_log


def kernel_oom_kill(kernel_log: str, container_id: str) -> bool:
    """Whether the kernel log says its OOM killer ended a process of the container ``container_id`` (its full id:
    the ``oom-kill:`` line names the killed task's memory cgroup, ``/docker/<id>`` or ``docker-<id>.scope``)."""
    if len(container_id) < 12:
        return False
    return any(container_id in line and "oom-kill" in line.lower() for line in kernel_log.splitlines())
