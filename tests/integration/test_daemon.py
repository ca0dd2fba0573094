"""The real ``dagster-daemon``: a render folder renamed into the renders root becomes control videos, no command typed,
and a prompt written for that shot beforehand is observed (``prompt_inputs``) and validated (``prompt_job``) once
the videos exist: the sensors start the job objects they were given, and the daemon records the tick's observation.

Notifications through the same daemon: a guardrail-blocked run started by ``dagster asset materialize`` (no
code-location origin) reaches a webhook on 127.0.0.1, another project's failed run does not; with a malformed URL
nothing is posted and its secret is in no tick, event log, compute log or file under the project.

A temporary DAGSTER_HOME with the repo's dagster.yaml (queued run coordinator: the daemon dequeues the run too),
sensors on with a 2 s interval and a 1 s settle time. The wait is bounded; the daemon's process group is always
stopped, and its log is printed when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media import MODALITIES, encode_control_videos, probe_video, scan_render_folder
from cosmos_assets.media.sample_render import make_sample_render
from cosmos_assets.prompts.files import new_prompt_spec, write_spec

REPO = Path(__file__).resolve().parents[2]
SHOT = "daemon_shot"
PROMPT = "daemon_prompt"
DEADLINE_SECONDS = 240
FRAMES, WIDTH, HEIGHT = 12, 128, 64


class Daemon:
    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = log_path

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture()
def project(tmp_path: Path) -> ProjectLayout:
    layout = ProjectLayout(root=tmp_path / "project")
    layout.ensure_working_folders()
    home = layout.root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    # The storage made before the daemon starts: its code server and it would otherwise create the SQLite schema at
    # the same moment, and under load both stamp it ("alembic_version has more than one head"; the location is lost).
    dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))).dispose()
    return layout


@pytest.fixture()
def daemon(project: ProjectLayout) -> Iterator[Daemon]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(project.root / "dagster_home"),
        "COSMOS_PROJECT_ROOT": str(project.root),
        "COSMOS_HOST": "preview",
        "COSMOS_SENSORS": "on",
        "COSMOS_SENSOR_INTERVAL": "2",
        "COSMOS_RENDER_SETTLE_SECONDS": "1",
        "COSMOS_AUTO_GENERATE": "off",
    }
    with _running_daemon(project, env) as running:
        yield running


@contextlib.contextmanager
def _running_daemon(project: ProjectLayout, env: dict[str, str]) -> Iterator[Daemon]:
    log_path = project.root / "daemon.log"
    executable = Path(sys.executable).with_name("dagster-daemon")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(executable), "run", "-m", "cosmos_assets.definitions"],
            cwd=project.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the code server and run workers stop with it
        )
    running = Daemon(process, log_path)
    try:
        yield running
    finally:
        running.stop()


def _shot_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "render_sensor"})))


def _prompt_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "prompt_sensor"})))


@pytest.mark.integration
@pytest.mark.daemon
def test_daemon_turns_a_new_render_folder_into_control_videos(
    project: ProjectLayout, daemon: Daemon, tmp_path: Path
) -> None:
    try:
        _drop_render_and_wait(project, daemon, tmp_path)
    except BaseException:
        print(f"---- dagster-daemon log ({daemon.log_path}) ----\n{daemon.log_tail()}")
        raise


def _drop_render_and_wait(project: ProjectLayout, daemon: Daemon, tmp_path: Path) -> None:
    write_spec(new_prompt_spec(SHOT, "a daemon at work"), project.prompt_file(PROMPT))  # before its videos exist
    staging = tmp_path / "renderer_scratch" / SHOT
    make_sample_render(staging, frames=FRAMES, width=WIDTH, height=HEIGHT)
    os.rename(staging, project.render_dir(SHOT))  # the renderer finishes the folder elsewhere and moves it in

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(project.root / "dagster_home")))
    videos = [project.shot_videos_dir(SHOT) / f"{m}.mp4" for m in MODALITIES]
    started = time.monotonic()
    runs: list[dg.DagsterRun] = []
    while time.monotonic() - started < DEADLINE_SECONDS:
        assert daemon.process.poll() is None, f"dagster-daemon exited with {daemon.process.returncode}"
        runs = _shot_runs(instance)
        if any(run.status == dg.DagsterRunStatus.FAILURE for run in runs):
            break
        if any(run.status == dg.DagsterRunStatus.SUCCESS for run in runs) and all(v.exists() for v in videos):
            break
        time.sleep(2)
    elapsed = time.monotonic() - started
    print(f"render folder -> control videos through the daemon in {elapsed:.1f} s")

    statuses = [(run.tags.get("dagster/partition"), run.status.value) for run in runs]
    assert statuses == [(SHOT, "SUCCESS")], f"after {elapsed:.0f} s the render sensor's runs are {statuses}"
    assert instance.has_dynamic_partition("shots", SHOT)
    for video in videos:
        info = probe_video(video)
        assert (info.frames, info.width, info.height) == (FRAMES, WIDTH, HEIGHT)
    materialization = instance.get_latest_materialization_event(dg.AssetKey("control_videos"))
    assert materialization is not None and materialization.dagster_event.partition == SHOT

    prompt_runs: list[dg.DagsterRun] = []
    while time.monotonic() - started < DEADLINE_SECONDS:
        assert daemon.process.poll() is None, f"dagster-daemon exited with {daemon.process.returncode}"
        prompt_runs = _prompt_runs(instance)
        if any(run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) for run in prompt_runs):
            break
        time.sleep(2)
    prompt_statuses = [(run.job_name, run.tags.get("dagster/partition"), run.status.value) for run in prompt_runs]
    assert prompt_statuses == [("prompt_job", PROMPT, "SUCCESS")], f"the prompt sensor's runs are {prompt_statuses}"
    assert "gpu_host" not in prompt_runs[0].tags  # auto-generate off: prompt_job, not the GPU job
    observations = instance.fetch_observations(dg.AssetKey("prompt_inputs"), limit=5).records
    assert [r.partition_key for r in observations] == [PROMPT]  # recorded by the daemon from the tick, before the run
    spec = instance.fetch_materializations(dg.AssetKey("prompt_specs"), limit=1).records
    assert [r.partition_key for r in spec] == [PROMPT]
    assert observations[0].asset_observation.data_version == spec[0].asset_materialization.tags["dagster/data_version"]
    assert observations[0].storage_id < spec[0].storage_id


# Notifications through the real daemon, for a run started from the README's own command line.
NOTIFY_DEADLINE_SECONDS = 180
BLOCKED_PROMPT = "blocked_prompt"
TOKEN = "T000/B000/" + uuid.uuid4().hex  # a Slack webhook URL's secret part
FOREIGN_DEFINITIONS = """
import dagster as dg


@dg.op
def broken() -> None:
    raise Exception("another project's failure")


@dg.job
def their_job() -> None:
    broken()


defs = dg.Definitions(jobs=[their_job])
"""


class Receiver:
    """A webhook on 127.0.0.1 recording every POST (path, JSON body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


def _notify_env(project: ProjectLayout, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(project.root / "dagster_home"),
        "COSMOS_PROJECT_ROOT": str(project.root),
        "COSMOS_HOST": "preview",
        "COSMOS_SENSORS": "off",
        "COSMOS_SENSOR_INTERVAL": "2",
        "COSMOS_WEBHOOK_URL": url,
    }


def _blocked_prompt(project: ProjectLayout, instance: dg.DagsterInstance) -> None:
    """A shot's control videos and a prompt the preview model's guardrail blocks, registered as a partition."""
    staging = project.root / "renderer_scratch" / SHOT
    make_sample_render(staging, frames=FRAMES, width=WIDTH, height=HEIGHT)
    encode_control_videos(scan_render_folder(staging), project.shot_videos_dir(SHOT))
    write_spec(new_prompt_spec(SHOT, "GUARDRAIL_TEST_BLOCK a street at dusk"), project.prompt_file(BLOCKED_PROMPT))
    instance.add_dynamic_partitions("prompts", [BLOCKED_PROMPT])


def _sensor_state(instance: dg.DagsterInstance, name: str):
    return next(
        (s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.name == name), None
    )


def _wait(what: str, daemon: Daemon, check, deadline: float = NOTIFY_DEADLINE_SECONDS):
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        assert daemon.process.poll() is None, f"dagster-daemon exited with {daemon.process.returncode}"
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what}: not within {deadline} s")


def _cursor_set(instance: dg.DagsterInstance) -> bool:
    state = _sensor_state(instance, "notify_failed_runs")  # a run-status sensor starts at the events of its first tick
    return state is not None and state.instigator_data is not None and state.instigator_data.cursor is not None


def _materialize_cli(project: ProjectLayout, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The README's command line, as an artist types it."""
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.run(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "cosmos_assets.definitions",
            "--select",
            "prompt_inputs,prompt_specs,generated_videos",
            "--partition",
            BLOCKED_PROMPT,
        ],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _only_run(instance: dg.DagsterInstance, job_name: str) -> dg.DagsterRun:
    (run,) = instance.get_runs(filters=dg.RunsFilter(job_name=job_name))
    return run


@pytest.mark.integration
@pytest.mark.daemon
def test_a_guardrail_block_started_by_dagster_asset_materialize_is_posted_and_another_projects_failure_is_not(
    project: ProjectLayout, receiver: Receiver
) -> None:
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(project.root / "dagster_home")))
    _blocked_prompt(project, instance)
    env = _notify_env(project, receiver.url)
    with _running_daemon(project, env) as daemon:
        try:
            _wait("the failure sensor's first tick", daemon, lambda: _cursor_set(instance))
            foreign = project.root.parent / "their_pipeline" / "definitions.py"
            foreign.parent.mkdir()
            foreign.write_text(FOREIGN_DEFINITIONS)
            theirs = subprocess.run(
                [
                    str(Path(sys.executable).with_name("dagster")),
                    "job",
                    "execute",
                    "-f",
                    str(foreign),
                    "-j",
                    "their_job",
                ],
                cwd=foreign.parent,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert theirs.returncode != 0 and _only_run(instance, "their_job").status == dg.DagsterRunStatus.FAILURE
            ours = _materialize_cli(project, env)
            assert ours.returncode != 0, ours.stderr[-3000:]
            run = _only_run(instance, "__ASSET_JOB")
            assert (
                run.status == dg.DagsterRunStatus.FAILURE and run.remote_job_origin is None
            )  # no code-location origin
            posts = _wait(
                "the guardrail block's post",
                daemon,
                lambda: [b for _, b in receiver.posts if b["run_id"] == run.run_id],
            )
        except BaseException:
            print(f"---- dagster-daemon log ({daemon.log_path}) ----\n{daemon.log_tail()}")
            raise
    (body,) = posts
    assert body["event"] == "guardrail_blocked" and body["partition"] == BLOCKED_PROMPT, body
    assert body["text"].startswith(f":warning: __ASSET_JOB blocked by the guardrail for {BLOCKED_PROMPT}")
    assert [path for path, _ in receiver.posts] == [
        f"/services/{TOKEN}"
    ]  # their_job's failure, processed first, was not posted
    assert all(b["run_id"] != _only_run(instance, "their_job").run_id for _, b in receiver.posts)


@pytest.mark.integration
@pytest.mark.daemon
def test_a_malformed_webhook_url_is_in_no_tick_event_log_or_compute_log(
    project: ProjectLayout, receiver: Receiver
) -> None:
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(project.root / "dagster_home")))
    _blocked_prompt(project, instance)
    env = _notify_env(project, f"{receiver.url}  # the lighting team's channel")  # an inline comment in an env file
    with _running_daemon(project, env) as daemon:
        try:
            _wait("the failure sensor's first tick", daemon, lambda: _cursor_set(instance))
            ours = _materialize_cli(project, env)
            assert ours.returncode != 0, ours.stderr[-3000:]
            state = _sensor_state(instance, "notify_failed_runs")
            ticks = _wait(
                "the tick that saw the failed run",
                daemon,
                lambda: [
                    t
                    for t in instance.get_ticks(state.instigator_origin_id, state.selector_id)
                    if t.status == TickStatus.FAILURE or "COSMOS_WEBHOOK_URL" in (t.skip_reason or "")
                ],
            )
        except BaseException:
            print(f"---- dagster-daemon log ({daemon.log_path}) ----\n{daemon.log_tail()}")
            raise
    all_ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    assert not [t for t in all_ticks if t.status == TickStatus.FAILURE], [t.error for t in all_ticks if t.error]
    assert (
        ticks[0].status == TickStatus.SKIPPED and "inline '# comment'" in ticks[0].skip_reason and receiver.posts == []
    )
    secret = TOKEN.split("/")[-1].encode()
    holding = [str(p) for p in project.root.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert holding == [], f"the webhook URL's secret is stored in {holding}"  # Dagster's storage, compute logs, records
    assert TOKEN not in ours.stdout + ours.stderr
