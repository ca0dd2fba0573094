"""Notifications: a run that fails, is guardrail-blocked, or finishes a batch (a backfill) posts to a webhook.

Off unless ``COSMOS_WEBHOOK_URL`` is set. The body is Slack-compatible JSON (``text``, plus our own fields, which
Slack ignores). The URL is a secret (a Slack webhook URL is its own credential): it is read from the environment
when a post is made, never stored in the settings, a sensor's config, a cursor, a log line or a payload; a failed
post says why without it. Two Dagster run-status sensors do the work (the daemon runs them; they start running).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, Field

WEBHOOK_ENV = "COSMOS_WEBHOOK_URL"
BACKFILL_TAG = "dagster/backfill"
POST_TIMEOUT_S = 10.0
Event = Literal["run_failed", "guardrail_blocked", "batch_finished"]
_FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


class WebhookPayload(BaseModel):
    """What is posted. ``text`` is the line Slack (and Mattermost, Teams' Slack-compatible hooks) shows."""

    text: str
    event: Event
    run_id: str
    job: str
    partition: str | None = None
    host: str | None = Field(default=None, description="the GPU host the run was placed on (cosmos/host tag)")
    error: str | None = None
    batch: str | None = Field(default=None, description="the backfill id of a batch_finished")
    succeeded: int | None = None
    failed: int | None = None


class WebhookError(RuntimeError):
    """The post did not go through; the message never holds the URL."""


def post(url: str, payload: WebhookPayload, timeout: float = POST_TIMEOUT_S) -> None:
    """POST ``payload`` as JSON to ``url``; :class:`WebhookError` (without the URL) unless it answers 2xx."""
    if not url.startswith(("https://", "http://")):
        raise WebhookError(f"{WEBHOOK_ENV} is not an http(s) URL")
    body = json.dumps(payload.model_dump(exclude_none=True)).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - http(s) checked above
            answer.read()
    except urllib.error.HTTPError as error:
        raise WebhookError(f"the webhook answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise WebhookError(f"the webhook could not be reached ({type(reason).__name__}: {reason})") from None


def _cause(event: dg.DagsterEvent) -> str | None:
    data = event.step_failure_data
    metadata = data.user_failure_data.metadata if data is not None and data.user_failure_data is not None else {}
    cause = metadata.get("cause")
    return str(cause.value) if cause is not None else None


def failure_payload(run: dg.DagsterRun, step_failures: list[dg.DagsterEvent], message: str | None) -> WebhookPayload:
    """The payload of a failed run: guardrail_blocked when a step says the guardrail blocked it."""
    causes = [_cause(event) for event in step_failures]
    blocked = "guardrail_blocked" in causes
    first = next((e.step_failure_data.error.message.splitlines()[0] for e in step_failures
                  if e.step_failure_data is not None and e.step_failure_data.error is not None), None)  # fmt: skip
    partition = run.tags.get("dagster/partition")
    host = run.tags.get("cosmos/host")
    what = "blocked by the guardrail" if blocked else "failed"
    text = f":warning: {run.job_name} {what}" + (f" for {partition}" if partition else "") + (f" on {host}" if host else "")
    error = first or message
    return WebhookPayload(text=text + (f": {error}" if error else ""), event="guardrail_blocked" if blocked else "run_failed",
                          run_id=run.run_id, job=run.job_name, partition=partition, host=host, error=error)  # fmt: skip


def batch_payload(instance: dg.DagsterInstance, run: dg.DagsterRun) -> WebhookPayload | None:
    """The payload when ``run`` is the last of its backfill to finish, else None (so a batch is posted once)."""
    batch = run.tags.get(BACKFILL_TAG)
    if not batch:
        return None
    records = instance.get_run_records(filters=dg.RunsFilter(tags={BACKFILL_TAG: batch}))
    if any(r.dagster_run.status not in _FINISHED for r in records):
        return None
    backfill = instance.get_backfill(batch)
    if backfill is not None and backfill.status == dg.BulkActionStatus.REQUESTED and not _all_launched(backfill, records):
        return None
    last = max(records, key=lambda r: (r.end_time or 0.0, r.dagster_run.run_id))
    if last.dagster_run.run_id != run.run_id:
        return None
    ok = sum(1 for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS)
    failed = len(records) - ok
    return WebhookPayload(text=f":checkered_flag: batch {batch} finished: {ok} succeeded, {failed} failed",
                          event="batch_finished", run_id=run.run_id, job=run.job_name, batch=batch,
                          succeeded=ok, failed=failed)  # fmt: skip


def _all_launched(backfill: Any, records: list) -> bool:  # noqa: ANN401 - PartitionBackfill
    try:
        return len(records) >= backfill.get_num_partitions()
    except Exception:  # noqa: BLE001 - an asset backfill without a count: wait for Dagster to mark it completed
        return False


def _send(payload: WebhookPayload, log: Callable[[str], None]) -> dg.SkipReason | None:
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return dg.SkipReason(f"{WEBHOOK_ENV} is not set: nothing posted")
    try:
        post(url, payload)
    except WebhookError as error:
        log(f"webhook post of {payload.event} for run {payload.run_id} failed: {error}")
        return dg.SkipReason(f"not posted: {error}")
    log(f"posted {payload.event} for run {payload.run_id} to the webhook")
    return None


def build_notification_sensors(interval_seconds: int = 30) -> list[dg.SensorDefinition]:
    """The two sensors, or none when ``COSMOS_WEBHOOK_URL`` is unset (notifications are off)."""
    if not os.environ.get(WEBHOOK_ENV, "").strip():
        return []

    @dg.run_failure_sensor(name="notify_failed_runs", minimum_interval_seconds=interval_seconds,
                           default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=False,
                           description=f"Posts failed and guardrail-blocked runs to the webhook in {WEBHOOK_ENV}.")  # fmt: skip
    def notify_failed_runs(context: dg.RunFailureSensorContext):  # noqa: ANN202
        payload = failure_payload(context.dagster_run, list(context.get_step_failure_events()), context.failure_event.message)
        skipped = _send(payload, context.log.info)
        batch = batch_payload(context.instance, context.dagster_run)  # a batch can end on a failed run
        return _send(batch, context.log.info) if batch is not None else skipped

    @dg.run_status_sensor(name="notify_finished_batches", run_status=dg.DagsterRunStatus.SUCCESS,
                          minimum_interval_seconds=interval_seconds, default_status=dg.DefaultSensorStatus.RUNNING,
                          description=f"Posts a finished backfill (a batch) to the webhook in {WEBHOOK_ENV}.")  # fmt: skip
    def notify_finished_batches(context: dg.RunStatusSensorContext):  # noqa: ANN202
        payload = batch_payload(context.instance, context.dagster_run)
        return _send(payload, context.log.info) if payload is not None else dg.SkipReason("not the end of a batch")

    return [notify_failed_runs, notify_finished_batches]
