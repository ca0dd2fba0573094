"""Out of memory: recognised from the model's log and exit, explained with its fix, and retried once with the model's
offload flags when ``COSMOS_OOM_RETRY_OFFLOAD`` asks for it.

Two kinds, one cause (``out_of_memory``, never retried by the step's RetryPolicy: the same run fails the same way):

- **GPU memory**: torch says so in the log (``torch.OutOfMemoryError: CUDA out of memory``, ``CUDA error: out of
  memory``, ``CUBLAS_STATUS_ALLOC_FAILED``), whatever the exit code (torchrun exits 1 for a rank that died of it).
  Fix: the model's offload flags (each backend's ``offload_flags``), more GPUs per run, a shorter clip. The opt-in
  retry is a new run (its own run id ``<failed run id>_offload``, record, container and remote folder) whose
  command adds the flags the failed one lacked; its record names the run it retries and the flags it added.
- **Host memory**: the kernel's OOM killer ended the container (docker reports ``OOMKilled``), or the model died of
  SIGKILL (exit 137) with no word from torch and nobody could say whether docker saw an OOM kill (a cautious
  message). Offloading moves weights *into* host memory, so it is never retried with it; the fix is a shorter clip
  or a host with more memory.

Not memory: exit 137 while docker says ``OOMKilled`` false and the kernel log names no OOM kill of the container
(docker flags the kills inside the container's memory limit; a host-wide kill on a cgroup v1 host shows only in the
kernel log, whose ``oom-kill:`` line names the container's cgroup). Then someone or something else sent SIGKILL (``docker kill``, a ``docker stop`` past its
grace period, a host agent): cause ``killed`` (:func:`killed_from_outside`), never retried by the RetryPolicy. A
kill from outside is nearly always someone stopping the job on purpose (to free the GPU, or a runaway run); starting
it again by itself would undo that, and a real fault (the engine restarting) has its own retryable cause.

Plain Python (no Dagster).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cosmos_assets.machines.job import Invocation
from cosmos_assets.models.base import ModelBackend
from cosmos_assets.runs.plan import StagePlan

GPU_OOM_MARKERS: tuple[str, ...] = ("CUDA out of memory", "OutOfMemoryError", "CUDA error: out of memory",
                                    "CUBLAS_STATUS_ALLOC_FAILED")  # fmt: skip
SIGKILL_EXIT = 137  # 128 + 9: what a container killed by the kernel's OOM killer exits with
RETRY_SUFFIX = "_offload"
_NO_GUARDRAILS = ("--no-guardrails", "--disable-guardrails")


@dataclass(frozen=True)
class MemoryFailure:
    """A run that died of memory: on the GPU (torch said so) or on the host (killed by the kernel)."""

    kind: Literal["gpu", "host"]
    evidence: str  # the log line or the exit status that shows it


def memory_failure(
    exit_code: int | None, log_lines: Iterable[str], oom_killed: bool | None = None, kernel_oom: bool = False
) -> MemoryFailure | None:
    """Whether a run that exited ``exit_code`` (with this log, docker's ``OOMKilled``, and whether the kernel log
    names the container in an OOM kill) ran out of memory."""
    if exit_code in (None, 0):
        return None
    lines = list(log_lines)
    for line in reversed(lines):
        if any(marker in line for marker in GPU_OOM_MARKERS):
            return MemoryFailure("gpu", line.strip()[:240])
    if oom_killed:
        return MemoryFailure("host", f"exit code {exit_code}, docker reports the container OOMKilled")
    if kernel_oom:
        return MemoryFailure(
            "host",
            f"exit code {exit_code}, and the kernel log shows its OOM killer ended the "
            "container (a host-wide OOM kill, which docker does not flag)",
        )
    if exit_code == SIGKILL_EXIT and oom_killed is None:
        return MemoryFailure(
            "host",
            "exit code 137 (SIGKILL) with no error from the model, which is how the kernel's "
            "OOM killer ends a process (docker did not say OOMKilled: it may also have been "
            "killed by hand)",
        )
    return None


def killed_from_outside(
    exit_code: int | None, oom_killed: bool | None, container: str | None, kernel_oom: bool = False
) -> str | None:
    """Why a run ended, when its container died of SIGKILL that was not the kernel's OOM killer (docker says
    ``OOMKilled`` false and the kernel log does not name it); None otherwise. ``container``: its name."""
    if exit_code != SIGKILL_EXIT or oom_killed is not False or kernel_oom:
        return None
    which = f"container {container}" if container else "its container"
    return (
        f"{which} was killed from outside: exit code 137 (SIGKILL) while docker says it was not OOMKilled, so "
        "someone or something sent it SIGKILL (`docker kill`, a `docker stop` past its grace period, a host agent); "
        "the model did not fail by itself. Not retried, as a kill is usually meant: materialize again to run it"
    )


def offload_flags(backend: ModelBackend) -> tuple[str, ...]:
    """The flags that move parts of ``backend``'s model to CPU memory (none for a model that has none)."""
    return tuple(getattr(backend, "offload_flags", ()))


def missing_offload_flags(backend: ModelBackend, invocation: Invocation) -> list[str]:
    """The offload flags ``invocation`` does not pass yet (guardrail offload is moot when guardrails are off)."""
    argv = set(invocation.argv)
    flags = [flag for flag in offload_flags(backend) if flag not in argv]
    if argv & set(_NO_GUARDRAILS):
        flags = [flag for flag in flags if "guardrail" not in flag]
    return flags


def fix_text(memory: MemoryFailure, backend: ModelBackend, invocation: Invocation, retry_on: bool) -> str:
    """One line: what ran out and what to change."""
    if memory.kind == "host":
        return (
            f"the host ran out of memory (RAM), not the GPU: {memory.evidence}. Fix: a shorter clip (fewer frames in "
            "the control videos), fewer jobs on the host at once, or a host with more memory; offload flags move "
            "weights into host memory and would make it worse"
        )
    missing = missing_offload_flags(backend, invocation)
    if missing:
        offload = f"offload to CPU memory with {' '.join(missing)}" + (
            " (COSMOS_OOM_RETRY_OFFLOAD is on: retried once with them)"
            if retry_on
            else " (COSMOS_OOM_RETRY_OFFLOAD=1 retries once with them)"
        )
    elif offload_flags(backend):
        offload = f"it already offloads ({' '.join(offload_flags(backend))})"
    else:
        offload = f"{backend.name} has no flag to offload its model to CPU memory"
    advice = getattr(backend, "memory_advice", "")
    return (
        f"out of GPU memory ({memory.evidence}). Fix: {offload}; more GPUs per run (run config num_gpus or "
        f"NUM_GPU; this run had {invocation.num_gpus}); or a shorter clip (fewer frames in the control videos)"
        + (f"; {advice}" if advice else "")
    )


def with_offload(invocation: Invocation, flags: list[str]) -> Invocation:
    """``invocation`` with ``flags`` added to its command; a setting of the same name (``offload_guardrail_models``)
    is switched on so the record says what ran."""
    settings = dict(invocation.settings)
    for flag in flags:
        key = flag.lstrip("-").replace("-", "_")
        if key in settings:
            settings[key] = True
    # one-shot: the resident service (machines/model_service.py) runs without the offload flags
    return invocation.model_copy(update={"argv": (*invocation.argv, *flags), "settings": settings, "served": None})


def offload_plan(plan: StagePlan, flags: list[str]) -> StagePlan:
    """The same stage planned again (under its new run id) with ``flags`` added to its invocation."""
    invocation = with_offload(plan.job.invocation, flags)
    job = plan.job.model_copy(update={"invocation": invocation})
    return dataclasses.replace(plan, job=job, request=dataclasses.replace(plan.request, invocation=invocation))


def retry_run_id(failed_run_id: str) -> str:
    return failed_run_id + RETRY_SUFFIX
