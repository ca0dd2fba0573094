"""Notifications, over real HTTP: a webhook server on 127.0.0.1 records each POST; the run-status sensors are driven
with Dagster's own testing helpers on runs that really failed or succeeded in a real (SQLite) instance."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.notify import WEBHOOK_ENV, WebhookError, WebhookPayload, build_notification_sensors, post

TOKEN = "T000/B000/" + uuid.uuid4().hex  # a Slack webhook URL's secret part


class Hook:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append((self.path, json.loads(body)))
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    server = Hook()
    monkeypatch.setenv(WEBHOOK_ENV, server.url)
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("home"))) as inst:
        yield inst


@dg.op
def blocked_op() -> None:
    raise dg.Failure(description="generate for p1 failed on gpu-a: the guardrail blocked the prompt",
                     metadata={"cause": "guardrail_blocked", "guardrail_blocked": True}, allow_retries=False)  # fmt: skip


@dg.op
def broken_op() -> None:
    raise dg.Failure(description="only 3.1 GB free on gpu-b", metadata={"cause": "host_not_ready"}, allow_retries=False)


@dg.op
def fine_op() -> None:
    pass


@dg.job
def blocked_job() -> None:
    blocked_op()


@dg.job
def broken_job() -> None:
    broken_op()


@dg.job
def fine_job() -> None:
    fine_op()


def sensors() -> dict[str, dg.SensorDefinition]:
    return {s.name: s for s in build_notification_sensors(30)}


def failure_context(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult):  # noqa: ANN201
    event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return dg.build_run_status_sensor_context(sensor_name="notify_failed_runs", dagster_event=event,
                                              dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()  # fmt: skip


def test_off_unless_the_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    assert build_notification_sensors() == []


def test_a_guardrail_block_and_a_failure_are_posted_slack_compatible_without_the_url(
    hook: Hook, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = blocked_job.execute_in_process(instance=instance, raise_on_error=False,
                                             tags={"dagster/partition": "p1", "cosmos/host": "gpu-a"})  # fmt: skip
    broken = broken_job.execute_in_process(instance=instance, raise_on_error=False)
    for result in (blocked, broken):
        assert sensors()["notify_failed_runs"](failure_context(instance, result)) is None  # posted, nothing skipped
    (path1, first), (path2, second) = hook.posts
    assert path1 == path2 == f"/services/{TOKEN}"
    assert WebhookPayload.model_validate(first).event == "guardrail_blocked"
    assert first["text"].startswith(":warning: blocked_job blocked by the guardrail for p1 on gpu-a: ")
    assert "the guardrail blocked the prompt" in first["text"] and first["host"] == "gpu-a" and first["partition"] == "p1"
    assert second["event"] == "run_failed" and "only 3.1 GB free on gpu-b" in second["text"] and second["run_id"] == broken.run_id
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and all(TOKEN not in json.dumps(body) for _, body in hook.posts)


def test_a_batch_is_posted_once_when_its_last_run_finishes(hook: Hook, instance: dg.DagsterInstance) -> None:
    batch = "bf" + uuid.uuid4().hex[:6]
    first = fine_job.execute_in_process(instance=instance, tags={"dagster/backfill": batch})
    last = broken_job.execute_in_process(instance=instance, raise_on_error=False, tags={"dagster/backfill": batch})
    success = next(e for e in first.all_events if e.event_type_value == "PIPELINE_SUCCESS")
    context = dg.build_run_status_sensor_context(sensor_name="notify_finished_batches", dagster_event=success,
                                                 dagster_instance=instance, dagster_run=first.dagster_run)  # fmt: skip
    skipped = sensors()["notify_finished_batches"](context)
    assert isinstance(skipped, dg.SkipReason) and hook.posts == []  # not the last of its batch
    assert sensors()["notify_failed_runs"](failure_context(instance, last)) is None
    events = [body["event"] for _, body in hook.posts]
    assert events == ["run_failed", "batch_finished"]
    done = hook.posts[1][1]
    assert (done["batch"], done["succeeded"], done["failed"]) == (batch, 1, 1)
    assert done["text"] == f":checkered_flag: batch {batch} finished: 1 succeeded, 1 failed"


def test_a_failed_post_says_why_without_the_url(hook: Hook) -> None:
    hook.status = 404
    payload = WebhookPayload(text="x", event="run_failed", run_id="r", job="j")
    with pytest.raises(WebhookError, match="the webhook answered HTTP 404") as caught:
        post(hook.url, payload)
    assert TOKEN not in str(caught.value)
    with pytest.raises(WebhookError, match="could not be reached") as caught:
        post(f"http://127.0.0.1:1/{TOKEN}", payload, timeout=5)
    assert TOKEN not in str(caught.value)
    with pytest.raises(WebhookError, match="is not an http"):
        post(f"file:///{TOKEN}", payload)


def test_definitions_get_the_sensors_only_with_a_url(hook: Hook, tmp_path: Path) -> None:
    from cosmos_assets.definitions import build_definitions
    from cosmos_assets.settings import Settings

    names = {s.name for s in build_definitions(Settings(project_root=tmp_path)).sensors}
    assert {"notify_failed_runs", "notify_finished_batches"} <= names
