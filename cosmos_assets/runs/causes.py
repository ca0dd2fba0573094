"""Why a run failed, as one word, and what follows from it: is it worth retrying, is something left on the host.

The cause is a field of the run record, of the history line and of the failure metadata. Retryable causes are the
ones a later attempt can fix by itself (a lost link, an unreachable host or docker daemon, a timeout); a guardrail
block, a spec error, a host that is not ready, a model that exits non-zero, hangs or runs out of memory, and a
container killed or removed from outside (``killed``: usually on purpose; runs/oom.py) are never retried (out of GPU memory may be retried once with offload flags, by the runner: runs/oom.py). Plain Python.
"""

from __future__ import annotations

from cosmos_assets.machines.job import HostLinkLostError, HostNotReadyError, HostUnreachableError, LinkDropped
from cosmos_assets.prompts.spec import SpecError

RETRYABLE: frozenset[str] = frozenset({"link_lost", "host_unreachable", "docker_unreachable", "timeout"})


def failure_cause(error: BaseException) -> str:
    """``guardrail_blocked``, ``model_exit``, ``out_of_memory``, ``killed``, ``stalled``, ``no_output``, ``link_lost``,
    ``host_unreachable``, ``docker_unreachable``, ``timeout``, ``host_not_ready``, ``spec_error``, ``local_io``,
    ``cancelled`` or ``error``."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, str) and cause:
        return cause  # InferenceFailed and the docker errors (machines/docker_engine.py) say their own
    if not isinstance(error, Exception):
        return "cancelled"
    if isinstance(error, (HostLinkLostError, LinkDropped)):
        return "link_lost"
    if isinstance(error, HostUnreachableError):
        return "host_unreachable"
    if isinstance(error, HostNotReadyError):
        return "host_not_ready"
    if isinstance(error, SpecError):
        return "spec_error"
    if isinstance(error, (TimeoutError, ConnectionError)):
        return "timeout" if isinstance(error, TimeoutError) else "link_lost"
    if isinstance(error, OSError):
        return "local_io"
    if isinstance(error, ValueError):
        return "spec_error"
    return "error"


def retryable(cause: str) -> bool:
    return cause in RETRYABLE


def left_on_host(cause: str, phase: str) -> bool:
    """Whether a run failing with ``cause`` while in ``phase`` leaves its container or outputs for the next attempt.

    A link that stayed down while the model ran leaves the detached container running; any failure but a cancel
    while downloading leaves the outputs of a container that exited 0.
    """
    if cause == "cancelled":
        return False
    return phase == "downloading" or (phase == "running" and cause in ("link_lost", "host_unreachable", "timeout"))
