"""How a GPU step ends in Dagster: its retry policy (only for causes a later attempt can fix), the termination and
the end of a run as the runner asks them, and every failure as the ``dg.Failure`` that says whether to retry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from cosmos_assets.defs.resources.placement import is_terminating
from cosmos_assets.runs.causes import failure_cause, retryable
from cosmos_assets.runs.stage import InferenceFailed, RunTerminated, StageResult

GPU_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
"""Retries of a GPU step (30 s, then 60 s): only for causes a later attempt can fix (``runs.causes.RETRYABLE``: a
lost link, an unreachable host, docker that went away); every other failure is a ``Failure(allow_retries=False)``. A retry adopts what the failed attempt left."""


def terminating(context: dg.AssetExecutionContext) -> Callable[[], bool]:
    """Whether this run was terminated from outside: asked by the runner while the model runs, so a run no interrupt
    reaches (started by `dagster asset materialize`, terminated in the UI) still stops its GPU job."""
    instance, run_id = context.instance, context.run.run_id
    return lambda: is_terminating(instance, run_id)


def run_has_ended(context: dg.AssetExecutionContext) -> Callable[[str], bool]:
    """Whether a Dagster run has ended: a left-behind GPU job whose run was failed by Dagster (its run worker
    container died, seen by run monitoring) is followed by nobody, wherever its worker was (runs/adopt.py)."""
    instance = context.instance

    def ended(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    return ended


def terminated(error: BaseException) -> dg.Failure:
    """A terminated step (UI Terminate, Ctrl-C): its GPU job is already stopped. Dagster 1.13.27 turns an interrupt
    of a step that has a RetryPolicy into a retry (``op_execution_error_boundary``), which would start it again:
    this Failure is never retried, and Dagster still ends a CANCELING run as canceled."""
    return dg.Failure(
        description="terminated: the GPU job was stopped and its container removed",
        metadata={"cause": "cancelled", "retryable": False},
        allow_retries=False,
    )


def failure_from(error: Exception) -> dg.Failure:
    """The step's failure, with its cause; retried (by GPU_RETRY) only when the cause is retryable."""
    cause = failure_cause(error)
    metadata: dict[str, Any] = {"cause": cause, "retryable": retryable(cause)}
    if isinstance(error, InferenceFailed):
        metadata |= {
            "log_tail": dg.MetadataValue.md("```\n" + "\n".join(error.log_tail[-30:]) + "\n```"),
            "log": dg.MetadataValue.path(str(error.log_path)),
            "guardrail_blocked": error.guardrail_blocked,
        }
    return dg.Failure(
        description=str(error).splitlines()[0] if str(error) else type(error).__name__,
        metadata=metadata,
        allow_retries=retryable(cause),
    )


def gpu_step(run: Callable[[], StageResult]) -> StageResult:
    """Run a GPU stage; a termination and every failure become the Dagster Failure that says whether to retry."""
    try:
        return run()
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt, RunTerminated) as error:
        raise terminated(error) from error  # the runner stopped the GPU job; Dagster would retry a bare interrupt
    except Exception as error:
        raise failure_from(error) from error
