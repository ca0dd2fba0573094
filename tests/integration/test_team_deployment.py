"""The team deployment (deploy/dagster.yaml, docs/team.md) for real: PostgreSQL storage, the run queue, a container
per run (DockerRunLauncher against the private dockerd), run monitoring and run retries, with the real dagster-daemon.

What differs from deploy/dagster.yaml is written out in :func:`deployment_yaml` and checked there: the run workers'
mounts and user (this checkout and its venv at the same paths instead of a pip-installed image; root instead of the
artists' uid) and a short monitoring interval. Networking: the private engine has no bridge, so run workers use the
host's network (COSMOS_RUN_NETWORK=host) to reach PostgreSQL and the test sshd on 127.0.0.1.

The GPU host is the test sshd + private dockerd running the preview model slowly in docker. A run worker container is
`docker kill`ed mid-generation: Dagster's run monitoring (or the dead_run_sensor) fails the run, run retries start it
again, and the retried run's GPU step adopts the model container the dead run left: one model container in all.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import docker
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef

from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.sensors.dead_runs import WORKER_RUN_TAG, WORKER_TAG
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media import probe_video
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.worker import Worker
from tests.infra.postgres import PostgresServer, start_postgres
from tests.infra.sshd import InfraError
from tests.project_factory import make_project

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMPT = "team_prompt"
WAIT_SECONDS = 300
HOST_PID_NAMESPACE = "4026531836"
CONTAINER_ID_TAG = "docker/container_id"  # dagster_docker's DOCKER_CONTAINER_ID_TAG


def wait_for(what: str, condition: Callable[[], bool], seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"waited {seconds:.0f}s for {what}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    base = Path(tempfile.mkdtemp(prefix="cosmos-pg-", dir="/tmp"))
    base.chmod(0o755)  # the server runs as the postgres user
    try:
        server = start_postgres(base / "pg")
    except (InfraError, OSError) as exc:
        pytest.fail(f"the private PostgreSQL server could not be started: {exc}", pytrace=False)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def worker_image(docker_client: docker.DockerClient, test_image: str) -> str:
    """The run workers' image: the offline test base with this venv's `dagster` first on PATH (the code itself is
    mounted, :func:`worker_mounts`); built offline, as deploy/Dockerfile's `pip install .` cannot be here."""
    tag = f"cosmos-team-worker:{uuid.uuid4().hex[:8]}"
    dockerfile = (
        f"FROM {test_image}\nENV PATH={sys.prefix}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    )
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


def worker_mounts(*paths: Path) -> list[str]:
    """This checkout (its venv inside) and the venv's base interpreter, read-only at the same paths, plus ``paths``
    read-write: the test's stand-in for deploy/Dockerfile's `pip install .`. Debian's own python3 (/usr) is already
    in the image."""
    mounts = [f"{REPO}:{REPO}:ro"]
    if not Path(sys.base_prefix).resolve().is_relative_to("/usr"):
        mounts.append(f"{sys.base_prefix}:{sys.base_prefix}:ro")
    return mounts + [f"{p}:{p}" for p in paths]


def deployment_yaml(mounts: list[str]) -> dict:
    """deploy/dagster.yaml with only the test's differences (asserted here, so nothing else drifts)."""
    deployed = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config = copy.deepcopy(deployed)
    config["run_launcher"]["config"]["container_kwargs"] = {"user": "0:0", "volumes": mounts}
    config["run_monitoring"]["poll_interval_seconds"] = 2
    unchanged = ("storage", "run_coordinator", "concurrency", "run_retries")
    assert {k: config[k] for k in unchanged} == {k: deployed[k] for k in unchanged}
    assert {k: v for k, v in config["run_launcher"]["config"].items() if k != "container_kwargs"} == {
        k: v for k, v in deployed["run_launcher"]["config"].items() if k != "container_kwargs"
    }
    assert {k: v for k, v in config["run_monitoring"].items() if k != "poll_interval_seconds"} == {
        k: v for k, v in deployed["run_monitoring"].items() if k != "poll_interval_seconds"
    }
    return config


@pytest.fixture()
def gpu_host(sshd, test_image: str) -> Iterator[dict[str, str]]:
    """REMOTE_* settings of a host whose model image (built by the preflight) runs the preview 0.3 s per step."""
    from tests.integration.test_ssh_host import dockerfile_only_host

    base, remote_dir = dockerfile_only_host(
        "cosmos-team-", f"FROM {test_image}\nENV COSMOS_PREVIEW_STEP_SECONDS=0.3\nWORKDIR /workspace\n"
    )
    yield {
        "COSMOS_HOST": "ssh",
        "COSMOS_MODEL": "preview",
        "REMOTE_HOST": sshd.host,
        "REMOTE_PORT": str(sshd.port),
        "REMOTE_USER": sshd.user,
        "SSH_KEY": str(sshd.key_path),
        "COSMOS_KNOWN_HOSTS": str(sshd.known_hosts),
        "REMOTE_DIR": str(remote_dir),
        "DOCKER_IMAGE": f"cosmos-team-model:{uuid.uuid4().hex[:8]}",
        "COSMOS_MIN_FREE_GB": "0.1",
    }
    shutil.rmtree(base, ignore_errors=True)


def deployment_env(
    deploy: dict, layout: ProjectLayout, postgres: PostgresServer, docker_host: str, image: str, host: dict[str, str]
) -> dict[str, str]:
    """The daemon's environment, as compose.yaml gives it: every variable the launcher passes on is set (empty when
    unused), DOCKER_HOST names the engine run workers start in."""
    names = deploy["run_launcher"]["config"]["env_vars"]
    env = {**os.environ, **{name: "" for name in names if "=" not in name}}
    env.update(postgres.env)
    env.update(host)
    env.update(
        {
            "DAGSTER_HOME": str(layout.root / "dagster_home"),
            "COSMOS_PROJECT_ROOT": str(layout.root),
            "DOCKER_HOST": docker_host,
            "COSMOS_RUN_IMAGE": image,
            "COSMOS_RUN_NETWORK": "host",
            "COSMOS_SENSOR_INTERVAL": "2",  # the dead_run_sensor looks at the live container worker every 2 s
        }
    )
    return env


def _runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return sorted(
        instance.get_runs(filters=dg.RunsFilter(job_name="generate_job")),
        key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp,
    )


def _model_container(client: docker.DockerClient):
    from tests.integration.test_ssh_host import our_containers

    found = our_containers(client, PROMPT)
    return found[0] if found else None


def test_a_killed_run_worker_container_is_retried_and_its_gpu_job_adopted(
    tmp_path: Path,
    postgres: PostgresServer,
    dockerd,
    docker_client: docker.DockerClient,
    worker_image: str,
    gpu_host: dict[str, str],
    sshd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.integration.test_ssh_host import container_starts

    layout = make_project(tmp_path / "project", prompt=PROMPT)
    home = layout.root / "dagster_home"
    home.mkdir()
    deploy = deployment_yaml(worker_mounts(layout.root))
    deploy["run_launcher"]["config"]["container_kwargs"]["volumes"].append(f"{sshd.root}:{sshd.root}:ro")
    (home / "dagster.yaml").write_text(yaml.safe_dump(deploy))
    env = deployment_env(deploy, layout, postgres, dockerd.docker_host, worker_image, gpu_host)
    for name, value in env.items():  # this process reads the same instance (its storage and launcher settings)
        monkeypatch.setenv(name, value)

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
        instance.add_dynamic_partitions(PROMPTS.name, [PROMPT])
    log_path = layout.root / "daemon.log"
    started = time.time()
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "cosmos_assets.definitions"],
        cwd=layout.root,
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
    run_a_container = None
    try:
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
            subprocess.run(launch, cwd=layout.root, env=env, check=True, capture_output=True, timeout=120)
            print(f"\n[phase] queued {time.time() - started:.1f}s")
            (queued,) = _runs(instance)
            assert queued.status in (
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            )

            def generating() -> bool:
                model = _model_container(docker_client)
                assert _runs(instance)[0].status != dg.DagsterRunStatus.FAILURE, "run A failed before the kill"
                return model is not None and b"step 4/" in model.logs()

            wait_for("run A's model container to be generating", generating)
            print(f"[phase] generating {time.time() - started:.1f}s")
            run_a = instance.get_run_by_id(queued.run_id)
            assert run_a.status == dg.DagsterRunStatus.STARTED
            run_a_container = docker_client.containers.get(run_a.tags[CONTAINER_ID_TAG])
            assert (
                run_a_container.image.tags == [worker_image]
                and run_a_container.labels["dagster/run_id"] == run_a.run_id
            )
            assert postgres.password not in json.dumps(run_a_container.attrs["Args"])  # a reference, not the value

            # The container worker, judged sanely while alive: its pid is in the container's namespace, not ours.
            worker = Worker.from_text(run_a.tags[WORKER_TAG])
            assert worker is not None and worker.pid_namespace not in ("", Worker.current().pid_namespace)
            assert not worker.provably_dead()
            ticks = _sensor_ticks(log_path)
            wait_for(
                "two dead_run_sensor ticks while run A's worker lives", lambda: _sensor_ticks(log_path) >= ticks + 2, 60
            )
            assert instance.get_run_by_id(run_a.run_id).status == dg.DagsterRunStatus.STARTED  # not wrongly failed

            print(f"[phase] sensor ticks seen {time.time() - started:.1f}s")
            run_a_container.kill()  # the run worker dies mid-generation; the model container goes on
            assert _model_container(docker_client).status == "running"
            if Worker.current().pid_namespace == HOST_PID_NAMESPACE:  # from the host's namespace it can be judged
                wait_for("the killed worker to be provably gone", worker.provably_dead, 30)
            health = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run_a.run_id))
            assert health.status.value == "FAILED" and "exited" in health.msg  # what run monitoring asks the engine

            wait_for(
                "run A to be failed", lambda: instance.get_run_by_id(run_a.run_id).status == dg.DagsterRunStatus.FAILURE
            )
            failure = instance.all_logs(run_a.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1].message
            assert "Detected run worker status" in failure or "is gone" in failure, failure
            print(
                f"\nrun A failed by {'run monitoring' if 'Detected run worker status' in failure else 'dead_run_sensor'}"
            )

            print(f"[phase] A failed {time.time() - started:.1f}s")
            wait_for("the retried run", lambda: len(_runs(instance)) == 2)
            print(f"[phase] B created {time.time() - started:.1f}s")
            run_b = _runs(instance)[1]
            assert run_b.parent_run_id == run_a.run_id and run_b.tags.get("dagster/retry_number") == "1"
            assert run_b.tags.get("gpu_host") == run_a.tags.get("gpu_host")
            wait_for("run B to finish", lambda: instance.get_run_by_id(run_b.run_id).is_finished)
            run_b = instance.get_run_by_id(run_b.run_id)
            print(f"[phase] B finished {time.time() - started:.1f}s")
            assert run_b.status == dg.DagsterRunStatus.SUCCESS, _step_failures(instance, run_b.run_id)
            assert run_b.tags[CONTAINER_ID_TAG] != run_a.tags[CONTAINER_ID_TAG]  # a run worker container of its own
            assert (run_b.tags[WORKER_RUN_TAG], run_a.tags[WORKER_RUN_TAG]) == (run_b.run_id, run_a.run_id)
            assert run_b.tags[WORKER_TAG] != run_a.tags[WORKER_TAG]  # its own worker, not the copied tag of A's
            assert len(_runs(instance)) == 2  # retried once, not again
            assert instance.event_log_storage.get_concurrency_info("gpu_host").claimed_slots == []

        assert len(container_starts(docker_client, started, PROMPT, "generate")) == 1  # one model container in all
        assert _model_container(docker_client) is None  # collected and removed
        (record,) = RunStore(layout.runs_dir).all()
        assert record.state == "succeeded" and record.dagster_run_id == run_a.run_id
        assert record.adopted_by == [run_b.run_id]
        assert probe_video(layout.output_dir(PROMPT) / "output.mp4").frames == 8
        assert json.loads((layout.output_dir(PROMPT) / "spec_used.json").read_text())["run_id"] == record.run_id
        assert not list(home.glob("**/*.db"))  # nothing went to SQLite
    except BaseException:
        print(f"---- dagster-daemon log ----\n{log_path.read_text(errors='replace')[-8000:]}")
        for container in docker_client.containers.list(all=True, filters={"label": "dagster/run_id"}):
            print(f"---- run worker {container.name} ----\n{container.logs()[-4000:].decode(errors='replace')}")
        raise
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)
        for container in docker_client.containers.list(all=True, filters={"label": "dagster/run_id"}):
            container.remove(force=True)


def _sensor_ticks(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("Checking for new runs for sensor: dead_run_sensor")


def _step_failures(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message or "" for e in instance.all_logs(run_id) if e.is_dagster_event and e.dagster_event.is_failure]
