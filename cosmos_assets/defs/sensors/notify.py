"""Notifications: a run that fails, is guardrail-blocked, or finishes a batch (a backfill) posts to a webhook.

Off unless ``COSMOS_WEBHOOK_URL`` is set. The body is Slack-compatible JSON (``text``, plus our own fields, which
Slack ignores). The URL is a secret (a Slack webhook URL is its own credential): it is read from the environment in
one place (:func:`webhook_from_env`, once, when the sensors are built), its shape checked there, and it is never in
the settings, a sensor's config, a cursor, a log line, a tick's reason, a payload or an error: a failed post says why
without it (nor its path or query). A post has a total deadline, however slowly the server answers. Two Dagster
run-status sensors do the work (the daemon runs them; they start running). The failure sensor watches every run of
the instance and keeps this project's: those started by ``dagster asset materialize`` carry no code-location origin,
so a sensor that watched its own location only never saw them (:func:`is_this_projects_run`).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import dagster as dg
from pydantic import BaseModel, Field

from cosmos_assets.defs.resources.placement import HOST_TAG
from cosmos_assets.redaction import url_secret_parts, without_secrets

WEBHOOK_ENV = "COSMOS_WEBHOOK_URL"
BACKFILL_TAG = "dagster/backfill"
POST_TIMEOUT_S = 10.0  # the whole post: connect, send, and the answer
_ANSWER_LIMIT = 64 * 1024  # bytes of the answer read (Slack answers "ok")
Event = Literal["run_failed", "guardrail_blocked", "batch_finished"]
_FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
PACKAGE = __name__.split(".")[0]
DEFINITIONS_MODULE = f"{PACKAGE}.definitions"  # the code location every run of this project is loaded from


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
    """The post did not go through, or the URL is malformed; the message never holds the URL or any part of it."""


def check_webhook_url(url: str) -> None:
    """:class:`WebhookError` naming ``COSMOS_WEBHOOK_URL`` (never its value) unless ``url`` is a plain http(s) URL."""
    if any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        raise WebhookError(
            f"{WEBHOOK_ENV} holds a space, tab or control character (an inline '# comment' or a stray "
            "tab in the env file?): set it to the bare URL"
        )
    if not url.isascii():
        raise WebhookError(f"{WEBHOOK_ENV} holds a non-ASCII character: percent-encode it")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        raise WebhookError(
            f"{WEBHOOK_ENV} is not a URL (a bad port or [IPv6] host?): set it to the webhook's URL"
        ) from None
    if parts.scheme not in ("https", "http"):
        raise WebhookError(f"{WEBHOOK_ENV} is not an http(s) URL: set it to the https:// URL of the webhook")
    if not parts.hostname:
        raise WebhookError(f"{WEBHOOK_ENV} names no host: set it to the https:// URL of the webhook")


class WebhookTarget:
    """The webhook of this process, read once: its URL, or why it cannot be used. Shows neither."""

    __slots__ = ("_url", "problem")

    def __init__(self, url: str | None, problem: str | None) -> None:
        self._url, self.problem = url, problem

    def __repr__(self) -> str:
        return f"WebhookTarget({'malformed' if self.problem else 'set'})"

    def send(self, payload: WebhookPayload, timeout: float = POST_TIMEOUT_S) -> None:
        """Post ``payload``; :class:`WebhookError` when the URL is malformed or the post fails."""
        if self._url is None:
            raise WebhookError(self.problem or f"{WEBHOOK_ENV} is not set")
        post(self._url, payload, timeout)


def webhook_from_env(env: Mapping[str, str] | None = None) -> WebhookTarget | None:
    """The one place ``COSMOS_WEBHOOK_URL`` is read: None when unset (notifications off), else the target, whose
    ``problem`` says (without the value) why a malformed URL is refused."""
    url = (os.environ if env is None else env).get(WEBHOOK_ENV, "").strip()
    if not url:
        return None
    try:
        check_webhook_url(url)
    except WebhookError as error:
        return WebhookTarget(None, str(error))
    return WebhookTarget(url, None)


def post(url: str, payload: WebhookPayload, timeout: float = POST_TIMEOUT_S) -> None:
    """POST ``payload`` as JSON to ``url`` within ``timeout`` seconds in all; :class:`WebhookError` (without the URL)
    unless it answers 2xx in time.

    The request runs on a daemon thread: a socket timeout bounds each read, not the post, so a server that trickles
    its answer would hold a plain ``urlopen`` for as long as it likes. At the deadline the connection is shut down,
    which ends the thread's read, and the post has failed."""
    check_webhook_url(url)
    body = json.dumps(payload.model_dump(exclude_none=True)).encode()
    connections: list[http.client.HTTPConnection] = []
    outcome: list[WebhookError | None] = []
    worker = threading.Thread(
        target=_exchange, args=(url, body, timeout, connections, outcome), daemon=True, name="webhook-post"
    )
    worker.start()
    worker.join(timeout)
    if not outcome:
        _cut(connections)
        raise WebhookError(f"the webhook did not answer within {timeout:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def _exchange(url: str, body: bytes, timeout: float, connections: list, outcome: list) -> None:
    try:
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        with _recording_opener(connections).open(request, timeout=timeout) as answer:
            answer.read(_ANSWER_LIMIT)
    except BaseException as error:  # noqa: BLE001 - every failure becomes a WebhookError built without the URL
        outcome.append(_webhook_error(error, url))
    else:
        outcome.append(None)


def _webhook_error(error: BaseException, url: str) -> WebhookError:
    """Why a post failed, in words that never hold the URL: the exception's own text only where it is the
    network's (a reason, an errno), scrubbed of every part of the URL all the same."""
    if isinstance(error, urllib.error.HTTPError):
        return WebhookError(f"the webhook answered HTTP {error.code}")
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, (OSError, str)) and not isinstance(reason, http.client.HTTPException):
        kind = "" if isinstance(reason, str) else f"{type(reason).__name__}: "
        detail = without_secrets(str(reason), url_secret_parts(url))
        return WebhookError(f"the webhook could not be reached ({kind}{detail})")
    return WebhookError(f"the webhook could not be posted to ({type(reason).__name__})")


def _recording_opener(connections: list) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment honoured, no redirect followed), keeping each connection it
    opens so that :func:`_cut` can end it."""

    def recording(connection_class: type) -> Callable[..., http.client.HTTPConnection]:
        def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
            connection = connection_class(*args, **kwargs)
            connections.append(connection)
            return connection

        return make

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(recording(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(
                recording(http.client.HTTPSConnection), req, context=self._context, check_hostname=self._check_hostname
            )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # urllib would repeat the POST as a GET, elsewhere: the webhook got nothing, say so (HTTP 30x)

    return urllib.request.build_opener(Http, Https, NoRedirect)


def _cut(connections: list[http.client.HTTPConnection]) -> None:
    for connection in connections:
        sock = connection.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # wakes a read blocked in the worker (TLS too)
            except OSError:
                pass


def is_this_projects_run(run: dg.DagsterRun) -> bool:
    """Whether ``run`` ran this project's definitions, however it was started.

    Every run launched from a code location (the daemon, the UI, a backfill) and every run of
    ``dagster asset materialize -m cosmos_assets.definitions`` (or ``-f .../cosmos_assets/definitions.py``, or the
    pyproject's module) records the code it loaded in ``job_code_origin``; a run executed in process records none
    and no location either, and counts as ours, as Dagster's own run-status filter counts it."""
    origin = run.job_code_origin
    if origin is None:
        return run.remote_job_origin is None
    pointer = origin.repository_origin.code_pointer
    module = getattr(pointer, "module", None)
    if isinstance(module, str):
        return module == DEFINITIONS_MODULE
    python_file = getattr(pointer, "python_file", None)
    if isinstance(python_file, str):
        return Path(python_file).parts[-2:] == (PACKAGE, "definitions.py")
    return False


def _cause(event: dg.DagsterEvent) -> str | None:
    data = event.step_failure_data
    metadata = data.user_failure_data.metadata if data is not None and data.user_failure_data is not None else {}
    cause = metadata.get("cause")
    return str(cause.value) if cause is not None else None


def failure_payload(run: dg.DagsterRun, step_failures: list[dg.DagsterEvent], message: str | None) -> WebhookPayload:
    """The payload of a failed run: guardrail_blocked when a step says the guardrail blocked it."""
    causes = [_cause(event) for event in step_failures]
    blocked = "guardrail_blocked" in causes
    first = next(
        (
            e.step_failure_data.error.message.splitlines()[0]
            for e in step_failures
            if e.step_failure_data is not None and e.step_failure_data.error is not None
        ),
        None,
    )
    partition = run.tags.get("dagster/partition")
    host = run.tags.get(HOST_TAG)
    what = "blocked by the guardrail" if blocked else "failed"
    text = (
        f":warning: {run.job_name} {what}"
        + (f" for {partition}" if partition else "")
        + (f" on {host}" if host else "")
    )
    error = first or message
    return WebhookPayload(
        text=text + (f": {error}" if error else ""),
        event="guardrail_blocked" if blocked else "run_failed",
        run_id=run.run_id,
        job=run.job_name,
        partition=partition,
        host=host,
        error=error,
    )


def batch_payload(instance: dg.DagsterInstance, run: dg.DagsterRun) -> WebhookPayload | None:
    """The payload when ``run`` is the last of its backfill to finish, else None (so a batch is posted once)."""
    batch = run.tags.get(BACKFILL_TAG)
    if not batch:
        return None
    records = instance.get_run_records(filters=dg.RunsFilter(tags={BACKFILL_TAG: batch}))
    if any(r.dagster_run.status not in _FINISHED for r in records):
        return None
    backfill = instance.get_backfill(batch)
    if (
        backfill is not None
        and backfill.status == dg.BulkActionStatus.REQUESTED
        and not _all_launched(backfill, records)
    ):
        return None
    last = max(records, key=lambda r: (r.end_time or 0.0, r.dagster_run.run_id))
    if last.dagster_run.run_id != run.run_id:
        return None
    ok = sum(1 for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS)
    failed = len(records) - ok
    return WebhookPayload(
        text=f":checkered_flag: batch {batch} finished: {ok} succeeded, {failed} failed",
        event="batch_finished",
        run_id=run.run_id,
        job=run.job_name,
        batch=batch,
        succeeded=ok,
        failed=failed,
    )


def _all_launched(backfill: Any, records: list) -> bool:
    try:
        return len(records) >= backfill.get_num_partitions()
    except Exception:  # noqa: BLE001 - an asset backfill without a count: wait for Dagster to mark it completed
        return False


def _send(target: WebhookTarget, payload: WebhookPayload, log: Callable[[str], None]) -> dg.SkipReason | None:
    try:
        target.send(payload)
    except WebhookError as error:
        log(f"webhook post of {payload.event} for run {payload.run_id} failed: {error}")
        return dg.SkipReason(f"not posted: {error}")
    log(f"posted {payload.event} for run {payload.run_id} to the webhook")
    return None


def build_notification_sensors(
    interval_seconds: int = 30, env: Mapping[str, str] | None = None
) -> list[dg.SensorDefinition]:
    """The two sensors, or none when ``COSMOS_WEBHOOK_URL`` is unset (notifications are off).

    A malformed URL still builds them: each tick then says why nothing is posted, in one line without the URL."""
    target = webhook_from_env(env)
    if target is None:
        return []

    @dg.run_failure_sensor(
        name="notify_failed_runs",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        monitor_all_code_locations=True,
        description=f"Posts this project's failed and guardrail-blocked runs, however they were "
        f"started, to the webhook in {WEBHOOK_ENV}.",
    )
    def notify_failed_runs(context: dg.RunFailureSensorContext):
        if not is_this_projects_run(context.dagster_run):
            return dg.SkipReason(f"run {context.dagster_run.run_id} is another project's")
        payload = failure_payload(
            context.dagster_run, list(context.get_step_failure_events()), context.failure_event.message
        )
        skipped = _send(target, payload, context.log.info)
        batch = batch_payload(context.instance, context.dagster_run)  # a batch can end on a failed run
        return _send(target, batch, context.log.info) if batch is not None else skipped

    @dg.run_status_sensor(
        name="notify_finished_batches",
        run_status=dg.DagsterRunStatus.SUCCESS,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Posts a finished backfill (a batch) to the webhook in {WEBHOOK_ENV}.",
    )
    def notify_finished_batches(context: dg.RunStatusSensorContext):
        payload = batch_payload(context.instance, context.dagster_run)
        return (
            _send(target, payload, context.log.info) if payload is not None else dg.SkipReason("not the end of a batch")
        )

    return [notify_failed_runs, notify_finished_batches]
