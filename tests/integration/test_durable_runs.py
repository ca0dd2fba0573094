"""Runs that outlive the orchestrator (issue 10), tried as a user would: `dagster asset materialize` in a subprocess,
SIGKILLed mid-generation, then the same command again.

Every wait is bounded; nothing asserts on speed. The subprocesses get their own process group, always killed at the
end. Against the real sshd and dockerd (fixtures in tests/conftest.py) where a GPU host is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.sensors.dead_runs import WORKER_TAG
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.ssh_link import HostLinkLostError
from cosmos_assets.media import probe_video
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.worker import Worker
from tests.project_factory import make_project

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROMPT = "tiny_prompt"
WAIT_SECONDS = 300


def wait_for(what: str, condition: Callable[[], bool], seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"waited {seconds:.0f}s for {what}")


class Cli:
    """`dagster asset materialize` subprocesses of one project, as a user types them."""

    def __init__(self, layout: ProjectLayout, env: dict[str, str]) -> None:
        self.layout = layout
        self.env = env
        self.processes: list[subprocess.Popen] = []

    def materialize(self, name: str) -> subprocess.Popen:
        log = open(self.layout.root / f"{name}.log", "wb")
        argv = [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "cosmos_assets.definitions",
            "--select",
            "generated_videos",
            "--partition",
            PROMPT,
        ]
        process = subprocess.Popen(
            argv, cwd=self.layout.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def output(self, name: str) -> str:
        return (self.layout.root / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)


@pytest.fixture()
def project(tmp_path: Path) -> ProjectLayout:
    layout = make_project(tmp_path / "project", prompt=PROMPT)
    home = layout.root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return layout


def instance_of(layout: ProjectLayout) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(layout.root / "dagster_home")))


def base_env(layout: ProjectLayout, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(layout.root / "dagster_home"),
        "COSMOS_PROJECT_ROOT": str(layout.root),
        **extra,
    }


def running_record_with_steps(layout: ProjectLayout, dagster_run_id: str | None = None) -> bool:
    records = [
        r
        for r in RunStore(layout.runs_dir).all()
        if r.state == "running" and dagster_run_id in (None, r.dagster_run_id)
    ]
    if not records:
        return False
    log = layout.staging_dir / records[0].run_id / "run.log"
    return log.exists() and "step 3/" in log.read_text(errors="replace")


@pytest.fixture()
def cli(project: ProjectLayout) -> Iterator[Cli]:
    with instance_of(project) as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [PROMPT])
    runner = Cli(project, base_env(project, COSMOS_HOST="preview", COSMOS_PREVIEW_STEP_SECONDS="0.3"))
    try:
        yield runner
    finally:
        runner.stop_all()


def test_a_sigkilled_materialize_does_not_hold_the_gpu_pool_and_the_same_command_completes(
    project: ProjectLayout, cli: Cli
) -> None:
    first = cli.materialize("first")
    wait_for(
        "the first generation to be running", lambda: running_record_with_steps(project) or first.poll() is not None
    )
    assert first.poll() is None, cli.output("first")
    os.kill(first.pid, signal.SIGKILL)  # the orchestrating process only, as `kill -9` of the CLI would
    first.wait(timeout=30)

    second = cli.materialize("second")
    try:
        second.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the second materialize never finished:\n{cli.output('second')[-4000:]}") from None
    assert second.returncode == 0, cli.output("second")[-4000:]

    with instance_of(project) as instance:
        runs = sorted(instance.get_runs(), key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)
        assert [r.status for r in runs] == [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS]
        assert WORKER_TAG in runs[0].tags and WORKER_TAG in runs[1].tags
        failure = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "is gone" in failure[-1].message and "pool slots freed" in failure[-1].message
        held = instance.event_log_storage.get_concurrency_info("gpu_host").claimed_slots
        assert held == []
    assert "Step blocked by limit" not in cli.output("second") or "is gone" in cli.output("second")
    assert probe_video(project.output_dir(PROMPT) / "output.mp4").frames == 8


# --------------------------------------------------------------------------- adoption on the real sshd and dockerd

ORCHESTRATOR = """
import json, sys
import dagster as dg
from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.resources import SshGpuHost
from cosmos_assets.defs.resources.project import ProjectResource

args = json.loads(sys.argv[1])
with dg.DagsterInstance.get() as instance:
    result = dg.materialize(ALL_ASSETS, selection=["generated_videos"], partition_key=args["prompt"], instance=instance,
                            raise_on_error=False, resources={"project": ProjectResource(root=args["root"]),
                                                             "gpu_host": SshGpuHost(**args["host"])})
sys.exit(0 if result.success else 1)
"""


@pytest.fixture()
def preview_host(sshd, test_image: str) -> Iterator[dict[str, object]]:
    """SshGpuHost fields for a host with only a Dockerfile, running the preview backend slowly in docker."""
    from tests.integration.test_ssh_host import dockerfile_only_host

    base, remote_dir = dockerfile_only_host("cosmos-durable-")
    yield dict(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        ssh_key=str(sshd.key_path),
        known_hosts=str(sshd.known_hosts),
        ssh_config=str(base / "no-ssh-config"),
        remote_dir=str(remote_dir),
        docker_image=f"cosmos-durable:{uuid.uuid4().hex[:8]}",
        min_free_gb=0.1,
        reconnect_attempts=2,
        model="preview",
        container_env={"COSMOS_PREVIEW_STEP_SECONDS": "0.25"},
    )
    shutil.rmtree(base, ignore_errors=True)


def _container(docker_client, prompt: str):
    from tests.integration.test_ssh_host import our_containers

    found = our_containers(docker_client, prompt)
    return found[0] if found else None


@pytest.mark.parametrize("when", ["while the container runs", "after the container exited"])
def test_a_sigkilled_orchestrator_is_adopted_one_container_in_all_and_the_first_runs_outputs(
    when: str, project: ProjectLayout, preview_host: dict[str, object], docker_client
) -> None:
    from tests.integration.test_ssh_host import container_starts

    with instance_of(project) as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [PROMPT])
    started = time.time()
    args = json.dumps({"prompt": PROMPT, "root": str(project.root), "host": preview_host})
    first = subprocess.Popen(
        [sys.executable, "-c", ORCHESTRATOR, args],
        cwd=REPO,
        env=base_env(project),
        stdout=open(project.root / "first.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def mid_generation() -> bool:
            container = _container(docker_client, PROMPT)
            return first.poll() is not None or (container is not None and b"step 4/" in container.logs())

        wait_for("the first run's container to be generating", mid_generation)
        assert first.poll() is None, (project.root / "first.log").read_text()[-3000:]
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        (left,) = [r for r in RunStore(project.runs_dir).all()]
        assert left.state == "running" and not left.is_final  # nothing marked it: the process died mid-step
        container = _container(docker_client, PROMPT)
        assert container is not None and container.status == "running"  # a crash does not stop the GPU job
        if when == "after the container exited":
            wait_for("the orphaned container to finish", lambda: _container(docker_client, PROMPT).status == "exited")
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    with instance_of(project) as instance:
        from cosmos_assets.defs.assets import ALL_ASSETS
        from cosmos_assets.defs.resources import SshGpuHost
        from cosmos_assets.defs.resources.project import ProjectResource

        host = SshGpuHost(**preview_host)
        result = dg.materialize(
            ALL_ASSETS,
            selection=["generated_videos"],
            partition_key=PROMPT,
            instance=instance,
            raise_on_error=False,
            resources={"project": ProjectResource(root=str(project.root)), "gpu_host": host},
        )
        host.close()
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        first_run = [r for r in instance.get_runs() if r.run_id != result.run_id][0]
        assert first_run.status == dg.DagsterRunStatus.FAILURE  # its dead worker was found before the pool wait

    assert len(container_starts(docker_client, started, PROMPT, "generate")) == 1
    assert _container(docker_client, PROMPT) is None  # collected and removed
    record = RunStore(project.runs_dir).load(left.run_id)
    assert record.state == "succeeded" and record.adopted_by == [result.run_id]
    used = json.loads((project.output_dir(PROMPT) / "spec_used.json").read_text())
    assert used["run_id"] == left.run_id  # the first run's outputs, not a second generation
    run_log = (project.output_dir(PROMPT) / "run.log").read_text()
    assert "adopting earlier run" in run_log and "already exists" in run_log
    steps = [line for line in run_log.splitlines() if "generate chunk 1/1 step " in line]
    assert len(set(steps)) == 35
    assert probe_video(project.output_dir(PROMPT) / "output.mp4").frames == 8


def _ssh_machine(fields: dict[str, object], down: threading.Event | None = None):
    """The SshHost of these fields; with ``down`` set, every (re)connect fails as if the network were gone."""
    from cosmos_assets.defs.resources import SshGpuHost
    from cosmos_assets.machines.ssh_connect import connect
    from cosmos_assets.machines.ssh_host import SshHost
    from cosmos_assets.machines.ssh_link import SshLink

    resource = SshGpuHost(**fields)
    target, settings = resource.ssh_target(), resource.host_settings()

    def gate(t):
        if down is not None and down.is_set():
            raise OSError("Network is unreachable (test: the link is down)")
        return connect(t)

    link = SshLink(target, resource.label, settings.reconnect_attempts, sleep=lambda s: None, connect_fn=gate)
    return SshHost(target, settings, link=link)


def test_a_link_down_past_the_reconnect_budget_leaves_the_container_for_the_next_attempt(
    project: ProjectLayout, preview_host: dict[str, object], docker_client, sshd
) -> None:
    from cosmos_assets.models.registry import backend_named
    from cosmos_assets.runs.runner import run_generation
    from tests.integration.test_ssh_host import container_starts

    down = threading.Event()
    machine = _ssh_machine(preview_host, down)
    started = time.time()

    def cut_at_step_4(line: str) -> None:
        if "step 4/" in line and not down.is_set():
            down.set()
            sshd.kill_sessions()

    with pytest.raises(HostLinkLostError):
        run_generation(project, machine, backend_named("preview"), PROMPT, log=cut_at_step_4)
    machine.close()
    (left,) = RunStore(project.runs_dir).all()
    assert (left.state, left.cause, left.detached) == ("failed", "link_lost", True)
    assert _container(docker_client, PROMPT) is not None  # never killed what we could not see

    down.clear()  # the network is back: the next attempt collects the same container
    again = _ssh_machine(preview_host)
    lines: list[str] = []
    result = run_generation(project, again, backend_named("preview"), PROMPT, log=lines.append)
    again.close()
    assert result.record.run_id == left.run_id and result.record.state == "succeeded" and not result.record.detached
    assert len(container_starts(docker_client, started, PROMPT, "generate")) == 1
    assert any("adopting earlier run" in line for line in lines)
    assert probe_video(result.video).frames == 8
    history = [(h.run_id, h.status, h.cause) for h in read_history(project.history_log)]
    assert history == [(left.run_id, "failed", "link_lost"), (left.run_id, "success", None)]


def test_a_full_local_disk_under_the_run_log_never_stops_the_container(
    project: ProjectLayout, preview_host: dict[str, object], docker_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cosmos_assets.models.registry import backend_named
    from cosmos_assets.runs import run_log, runner
    from tests.runs.test_durable import _FullDisk

    monkeypatch.setattr(run_log, "open", _FullDisk, raising=False)
    machine = _ssh_machine(preview_host)
    lines: list[str] = []
    result = runner.run_generation(project, machine, backend_named("preview"), PROMPT, log=lines.append)
    machine.close()
    assert result.record.state == "succeeded" and result.record.exit_code == 0
    assert any("cannot write the local run log" in line for line in lines)
    assert not any("stopped and removed container" in line for line in lines)
    assert probe_video(result.video).frames == 8


# --------------------------------------------------------------------------- through the daemon (UI-launched runs)


def _daemon_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return sorted(
        instance.get_runs(filters=dg.RunsFilter(job_name="generate_job")),
        key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp,
    )


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


@pytest.mark.daemon
def test_daemon_runs_a_killed_worker_frees_the_queue_and_terminate_stops_the_model(project: ProjectLayout) -> None:
    """Runs the UI would queue: the daemon launches them. Run A's worker is SIGKILLed mid-generation; run B, queued
    behind A by the gpu_host tag limit, starts once the dead_run_sensor has failed A. Terminating B (the run
    launcher's terminate, as the UI's Terminate does) interrupts its step, which kills the model."""
    env = base_env(project, COSMOS_HOST="preview", COSMOS_PREVIEW_STEP_SECONDS="0.5", COSMOS_SENSOR_INTERVAL="2")
    with instance_of(project) as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [PROMPT])
    log_path = project.root / "daemon.log"
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "cosmos_assets.definitions"],
        cwd=project.root,
        env=env,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    launch = [
        str(Path(sys.executable).with_name("dagster")),
        "job",
        "launch",
        "-m",
        "cosmos_assets.definitions",
        "-j",
        "generate_job",
        "--tags",
        json.dumps({"dagster/partition": PROMPT}),
    ]
    try:
        with instance_of(project) as instance:
            subprocess.run(launch, cwd=project.root, env=env, check=True, capture_output=True, timeout=120)
            wait_for("run A to be generating", lambda: running_record_with_steps(project))
            (run_a,) = _daemon_runs(instance)
            worker = Worker.from_text(instance.get_run_by_id(run_a.run_id).tags[WORKER_TAG])
            os.kill(worker.pid, signal.SIGKILL)  # the run worker process the daemon launched

            subprocess.run(launch, cwd=project.root, env=env, check=True, capture_output=True, timeout=120)
            wait_for(
                "the dead run A to be failed", lambda: _status(instance, run_a.run_id) == dg.DagsterRunStatus.FAILURE
            )
            run_b = _daemon_runs(instance)[1]
            wait_for("run B to be generating", lambda: running_record_with_steps(project, run_b.run_id))
            instance.run_launcher.terminate(run_b.run_id)
            wait_for("run B to be canceled", lambda: _status(instance, run_b.run_id) == dg.DagsterRunStatus.CANCELED)
            wait_for(
                "B's history line", lambda: any(h.status == "cancelled" for h in read_history(project.history_log))
            )
            history = read_history(project.history_log)
            assert [h.dagster_run_id for h in history if h.status == "cancelled"] == [run_b.run_id]
            # Who failed A: the dead_run_sensor, or Dagster's code server, which notices a run process it started
            # has died (DagsterApiServer._check_for_orphaned_runs) while it lives itself. Either way its slots are freed.
            assert instance.event_log_storage.get_concurrency_info("gpu_host").claimed_slots == []
    except BaseException:
        print(f"---- dagster-daemon log ----\n{log_path.read_text(errors='replace')[-6000:]}")
        raise
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)


def test_a_silent_model_on_the_ssh_host_is_stopped_and_fails_as_stalled(
    project: ProjectLayout, preview_host: dict[str, object], docker_client
) -> None:
    from cosmos_assets.models.registry import backend_named
    from cosmos_assets.runs.runner import InferenceFailed, run_generation

    quiet = {**preview_host, "container_env": {"COSMOS_PREVIEW_STEP_SECONDS": "600"}}  # quiet after its first lines
    machine = _ssh_machine(quiet)
    with pytest.raises(InferenceFailed) as caught:
        run_generation(project, machine, backend_named("preview"), PROMPT, silence_minutes=0.05)
    machine.close()
    assert caught.value.cause == "stalled" and "COSMOS_MODEL_SILENCE_MINUTES" in str(caught.value)
    assert _container(docker_client, PROMPT) is None  # stopped and removed
    (record,) = RunStore(project.runs_dir).all()
    assert (record.state, record.cause, record.detached) == ("failed", "stalled", False)
    assert "stopped and removed container" in caught.value.log_path.read_text()


def test_terminating_a_materialize_run_from_outside_stops_its_container(
    project: ProjectLayout, preview_host: dict[str, object], docker_client
) -> None:
    """A run started in-process (as `dagster asset materialize` does) has no code server an interrupt could come from:
    the UI's Terminate only marks it CANCELING. The runner notices and stops the container; the run ends CANCELED."""
    from tests.integration.test_ssh_host import container_starts

    with instance_of(project) as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [PROMPT])
    started = time.time()
    args = json.dumps({"prompt": PROMPT, "root": str(project.root), "host": preview_host})
    orchestrator = subprocess.Popen(
        [sys.executable, "-c", ORCHESTRATOR, args],
        cwd=REPO,
        env=base_env(project),
        stdout=open(project.root / "run.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            "the container to be generating",
            lambda: (
                orchestrator.poll() is not None
                or (
                    _container(docker_client, PROMPT) is not None
                    and b"step 4/" in _container(docker_client, PROMPT).logs()
                )
            ),
        )
        assert orchestrator.poll() is None, (project.root / "run.log").read_text()[-3000:]
        with instance_of(project) as instance:
            (run,) = instance.get_runs()
            instance.run_launcher.terminate(run.run_id)  # what the UI's Terminate calls
            orchestrator.wait(timeout=WAIT_SECONDS)
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
            retries = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
            assert retries == []  # terminate is never retried
    finally:
        try:
            os.killpg(orchestrator.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert _container(docker_client, PROMPT) is None
    assert len(container_starts(docker_client, started, PROMPT, "generate")) == 1
    (record,) = RunStore(project.runs_dir).all()
    assert (record.state, record.cause) == ("cancelled", "cancelled")
