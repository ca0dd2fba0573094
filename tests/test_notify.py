"""Notifications, over real HTTP: a webhook server on 127.0.0.1 records each POST; the run-status sensors are driven
with Dagster's own testing helpers on runs that really failed or succeeded in a real (SQLite) instance."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.defs.sensors.notify import (
    WEBHOOK_ENV,
    WebhookError,
    WebhookPayload,
    build_notification_sensors,
    is_this_projects_run,
    post,
    webhook_from_env,
)
from cosmos_assets.redaction import is_secret_name, redacted, redacted_message, url_secret_parts, without_secrets

TOKEN = "T000/B000/" + uuid.uuid4().hex  # a Slack webhook URL's secret part


class Hook:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
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
    raise dg.Failure(
        description="generate for p1 failed on gpu-a: the guardrail blocked the prompt",
        metadata={"cause": "guardrail_blocked", "guardrail_blocked": True},
        allow_retries=False,
    )


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


def failure_context(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult):
    event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return dg.build_run_status_sensor_context(
        sensor_name="notify_failed_runs", dagster_event=event, dagster_instance=instance, dagster_run=result.dagster_run
    ).for_run_failure()


def test_off_unless_the_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    assert build_notification_sensors() == []


def test_a_guardrail_block_and_a_failure_are_posted_slack_compatible_without_the_url(
    hook: Hook, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = blocked_job.execute_in_process(
        instance=instance, raise_on_error=False, tags={"dagster/partition": "p1", "cosmos/host": "gpu-a"}
    )
    broken = broken_job.execute_in_process(instance=instance, raise_on_error=False)
    for result in (blocked, broken):
        assert sensors()["notify_failed_runs"](failure_context(instance, result)) is None  # posted, nothing skipped
    (path1, first), (path2, second) = hook.posts
    assert path1 == path2 == f"/services/{TOKEN}"
    assert WebhookPayload.model_validate(first).event == "guardrail_blocked"
    assert first["text"].startswith(":warning: blocked_job blocked by the guardrail for p1 on gpu-a: ")
    assert (
        "the guardrail blocked the prompt" in first["text"] and first["host"] == "gpu-a" and first["partition"] == "p1"
    )
    assert (
        second["event"] == "run_failed"
        and "only 3.1 GB free on gpu-b" in second["text"]
        and second["run_id"] == broken.run_id
    )
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and all(TOKEN not in json.dumps(body) for _, body in hook.posts)


def test_a_batch_is_posted_once_when_its_last_run_finishes(hook: Hook, instance: dg.DagsterInstance) -> None:
    batch = "bf" + uuid.uuid4().hex[:6]
    first = fine_job.execute_in_process(instance=instance, tags={"dagster/backfill": batch})
    last = broken_job.execute_in_process(instance=instance, raise_on_error=False, tags={"dagster/backfill": batch})
    success = next(e for e in first.all_events if e.event_type_value == "PIPELINE_SUCCESS")
    context = dg.build_run_status_sensor_context(
        sensor_name="notify_finished_batches",
        dagster_event=success,
        dagster_instance=instance,
        dagster_run=first.dagster_run,
    )
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


PAYLOAD = WebhookPayload(text="x", event="run_failed", run_id="r", job="j")
MALFORMED = {
    "an inline comment": f"http://127.0.0.1:9/services/{TOKEN}  # the studio's channel",
    "a stray tab": f"http://127.0.0.1:9/services/{TOKEN}\tx",
    "a control character": f"http://127.0.0.1:9/services/{TOKEN}\x07",
    "a line break inside": f"http://127.0.0.1:9/services/{TOKEN}\nX-Evil: 1",
    "a non-ASCII character": f"http://127.0.0.1:9/services/{TOKEN}é",
    "a bad port": f"http://127.0.0.1:99999/services/{TOKEN}",
    "a broken IPv6 host": f"http://[::1/services/{TOKEN}",
    "no host": f"http:///services/{TOKEN}",
    "another scheme": f"ftp://127.0.0.1/services/{TOKEN}",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_url_is_refused_in_one_line_naming_the_variable_never_the_value(case: str) -> None:
    url = MALFORMED[case]
    with pytest.raises(WebhookError) as caught:  # before: http.client.InvalidURL with the secret path in it
        post(url, PAYLOAD)
    message = str(caught.value)
    assert message.startswith(WEBHOOK_ENV) and "\n" not in message
    assert TOKEN not in message and "127.0.0.1" not in message and "services" not in message
    target = webhook_from_env({WEBHOOK_ENV: url})
    assert target is not None and target.problem == message and TOKEN not in repr(target)


def test_a_malformed_url_builds_the_sensors_whose_ticks_say_why_without_it(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, MALFORMED["an inline comment"])
    built = {s.name: s for s in build_notification_sensors(30)}
    result = broken_job.execute_in_process(instance=instance, raise_on_error=False)
    skipped = built["notify_failed_runs"](failure_context(instance, result))
    assert isinstance(skipped, dg.SkipReason)
    assert WEBHOOK_ENV in skipped.skip_message and "inline '# comment'" in skipped.skip_message
    assert TOKEN not in skipped.skip_message


def test_the_url_is_read_once_when_the_sensors_are_built(
    hook: Hook, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = {s.name: s for s in build_notification_sensors(30)}
    monkeypatch.setenv(WEBHOOK_ENV, "http://127.0.0.1:1/elsewhere")  # read at build time only
    result = broken_job.execute_in_process(instance=instance, raise_on_error=False)
    assert built["notify_failed_runs"](failure_context(instance, result)) is None
    assert [path for path, _ in hook.posts] == [f"/services/{TOKEN}"]


class OneShotServer:
    """A TCP server on 127.0.0.1 that answers one connection with ``answer(conn)``; it stops by itself."""

    def __init__(self, answer) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/services/{TOKEN}"
        self.peer_closed = threading.Event()
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn, self.listener:
            conn.settimeout(30)
            conn.recv(65536)  # the request (small: headers and a JSON body)
            try:
                self.answer(conn)
            except OSError:  # the client went away
                self.peer_closed.set()


def trickle(conn: socket.socket) -> None:
    """The status line one byte at a time, each well inside any per-read timeout, for 30 s at most."""
    stop = time.monotonic() + 30
    for byte in b"HTTP/1.1 200 OK\r\n" * 1000:
        if time.monotonic() > stop:
            return
        conn.sendall(bytes([byte]))
        time.sleep(0.05)


def test_a_trickling_server_cannot_hold_a_post_past_its_deadline() -> None:
    server = OneShotServer(trickle)
    with pytest.raises(WebhookError, match=r"the webhook did not answer within 0.5 s") as caught:
        post(server.url, PAYLOAD, timeout=0.5)
    assert TOKEN not in str(caught.value)
    assert server.peer_closed.wait(25), "the post's connection was left open after its deadline"


@pytest.mark.parametrize(
    "answer, expected",
    [
        (lambda conn: conn.sendall(b"SMTP ready\r\n\r\n"), r"could not be posted to \(BadStatusLine\)"),
        (lambda conn: None, r"could not be posted to \(RemoteDisconnected\)|could not be reached"),
        (
            lambda conn: conn.sendall(
                b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/x\r\nContent-Length: 0\r\n\r\n"
            ),
            r"the webhook answered HTTP 302",
        ),  # a redirect is not followed: urllib would repeat the POST as a GET
    ],
)
def test_every_failure_of_the_exchange_is_a_webhook_error_without_the_url(answer, expected: str) -> None:
    server = OneShotServer(answer)
    with pytest.raises(WebhookError, match=expected) as caught:
        post(server.url, PAYLOAD, timeout=10)
    assert TOKEN not in str(caught.value) and caught.value.__cause__ is None


def test_the_webhook_variable_is_a_secret_name() -> None:
    url = f"https://hooks.slack.com/services/{TOKEN}"
    assert is_secret_name(WEBHOOK_ENV)
    assert redacted({WEBHOOK_ENV: url}) == {WEBHOOK_ENV: "***"}
    assert TOKEN not in redacted_message(f"launching with {WEBHOOK_ENV}={url}")


def _run_from(pointer: object, *, remote: bool = False) -> dg.DagsterRun:
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    code = JobPythonOrigin("__ASSET_JOB", RepositoryPythonOrigin("python", pointer)) if pointer is not None else None
    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="elsewhere"), location_name="elsewhere")
    where = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "__ASSET_JOB") if remote else None
    return dg.DagsterRun(job_name="__ASSET_JOB", run_id=uuid.uuid4().hex, job_code_origin=code, remote_job_origin=where)


def test_runs_of_this_project_are_told_from_another_projects_however_they_were_started() -> None:
    from dagster._core.code_pointer import FileCodePointer, ModuleCodePointer

    cli = ModuleCodePointer("cosmos_assets.definitions", "defs", "/studio/project")  # dagster asset materialize -m
    assert is_this_projects_run(_run_from(cli))
    assert is_this_projects_run(_run_from(cli, remote=True))  # launched by the daemon or the UI
    assert is_this_projects_run(_run_from(FileCodePointer("/src/cosmos_assets/definitions.py", "defs")))
    assert not is_this_projects_run(_run_from(ModuleCodePointer("their_pipeline.definitions", "defs")))
    assert not is_this_projects_run(_run_from(FileCodePointer("/src/their_pipeline/definitions.py", "defs")))
    assert not is_this_projects_run(_run_from(None, remote=True))
    assert is_this_projects_run(_run_from(None))  # executed in process: no origin at all, as Dagster itself counts it


def test_every_part_of_a_webhook_url_that_can_hold_its_secret_is_scrubbed_from_a_message() -> None:
    url = f"https://user:pw@hooks.example.com/services/{TOKEN}%2Fx?key=abc123#frag"
    parts = url_secret_parts(url)
    assert "/" not in parts and "hooks.example.com" not in parts  # the host is not the secret; a lone / is no part
    for text in (url, f"/services/{TOKEN}%2Fx", f"/services/{TOKEN}/x", "key=abc123", "user:pw"):
        scrubbed = without_secrets(f"error at {text} (errno 5)", parts)
        assert TOKEN not in scrubbed and "abc123" not in scrubbed and "pw" not in scrubbed, scrubbed
    assert without_secrets("no secret here", parts) == "no secret here"
    assert url_secret_parts("http://[::1/x") == ["http://[::1/x"]  # not even a URL: the whole text is the secret
