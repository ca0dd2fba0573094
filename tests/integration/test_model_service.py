"""The resident Cosmos 3 model service on the real sshd + private dockerd, with the serving app's stand-in.

The checkout is tests/standins' Cosmos 3 (the CLI stand-in at ``cosmos_framework/scripts/inference.py``, the serving
app's at ``cosmos_framework/inference/ray/serve.py``), its image built by the preflight. The stand-in appends one line
per model load to ``.standin/loads`` in the checkout: the tests count loads there. Runs go through the runner
(runs/runner.py) as Dagster's asset does, with a tiny render at 480p (which ``auto`` serves) and a 0.3 s load.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from cosmos_assets.defs.resources import SshGpuHost
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.model_service import ServiceFailed
from cosmos_assets.machines.ssh_host import SshHost
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.runner import run_generation
from tests.integration.test_ssh_host import OWNER_GID, OWNER_UID, _chown_tree, _write_checkpoints
from tests.project_factory import make_project
from tests.standins.install import install_checkout

pytestmark = pytest.mark.integration

PROMPT, SHOT = "served", "served_shot"
LOAD_S = "0.3"
WAIT_S = 120.0  # bound on waiting for a condition on the host (never an assertion on how long it took)


@pytest.fixture(scope="module")
def remote(test_image: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cosmos-service-", dir="/tmp"))
    base.chmod(0o755)
    install_checkout("cosmos3", base / "cosmos-framework")
    _write_checkpoints(base / "checkpoints")
    (base / "checkpoints" / "cache" / "huggingface" / "hub").mkdir(parents=True)  # a warm cache: no 150 GB check
    _chown_tree(base / "cosmos-framework", OWNER_UID, OWNER_GID)
    _chown_tree(base / "checkpoints", OWNER_UID, OWNER_GID)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ProjectLayout:
    layout = make_project(tmp_path_factory.mktemp("service-project"), shot=SHOT, prompt=PROMPT)
    path = layout.prompt_file(PROMPT)
    data = json.loads(path.read_text())
    data["cosmos_assets"] = {"model": "cosmos3", "cosmos3": {"size": "nano", "resolution": "480"}}
    path.write_text(json.dumps(data))
    return layout


def cosmos3_host(sshd, base: Path, tag: str, idle_minutes: float = 15.0, **env: str) -> SshHost:
    resource = SshGpuHost(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        ssh_key=str(sshd.key_path),
        known_hosts=str(sshd.known_hosts),
        ssh_config=str(base / "no-ssh-config"),
        remote_dir=str(base / "cosmos-transfer1"),
        docker_image="unused:latest",
        min_free_gb=0.5,
        model_images={"cosmos3": f"cosmos-framework-test:{tag}"},
        container_env={"STANDIN_LOAD_SECONDS": LOAD_S, **env},
        serve_idle_minutes=idle_minutes,
        name=f"gpu-{tag}",
    )
    machine = resource.machine_for("cosmos3")
    assert isinstance(machine, SshHost)
    return machine


def loads(base: Path) -> int:
    path = base / "cosmos-framework" / ".standin" / "loads"
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_once(project: ProjectLayout, host: SshHost, lines: list[str] | None = None):
    return run_generation(
        project,
        host,
        backend_named("cosmos3"),
        PROMPT,
        force=True,
        log=(lines.append if lines is not None else lambda line: None),
    )


def wait_for(what: str, condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {WAIT_S:.0f}s"
        time.sleep(0.2)


def test_ten_runs_one_after_another_cost_one_model_load(sshd, remote: Path, project: ProjectLayout) -> None:
    host = cosmos3_host(sshd, remote, uuid.uuid4().hex[:8])
    before = loads(remote)
    results = [run_once(project, host) for _ in range(10)]
    assert loads(remote) - before == 1
    servings = [r.record.serving for r in results]
    assert all(s is not None and s.mode == "served" for s in servings), servings[0]
    assert servings[0].load_seconds is not None and all(s.load_seconds is None for s in servings[1:])
    assert len({s.service_id for s in servings}) == 1 and servings[0].service_id
    for result in results:
        assert (result.output_dir / PROMPT / "vision.mp4").is_file() and (result.output_dir / "output.mp4").is_file()
        assert result.record.state == "succeeded" and "cosmos_framework.inference.ray.serve" in result.record.command
    history = [h for h in read_history(project.history_log) if h.run_id in {r.record.run_id for r in results}]
    assert {h.served_by for h in history} == {f"service {servings[0].service_id}"}
    assert results[0].record.model_load_seconds is not None and results[1].record.model_load_seconds is None
    assert host.stop_service(print) == [servings[0].service_container]
    host.close()


def test_the_service_stops_when_idle_and_the_next_run_starts_it(
    sshd, remote: Path, project: ProjectLayout, docker_client: docker.DockerClient
) -> None:
    host = cosmos3_host(sshd, remote, uuid.uuid4().hex[:8], idle_minutes=0.1)  # 6 s without a request
    first = run_once(project, host)
    name = first.record.serving.service_container
    before = loads(remote)

    def exited() -> bool:
        return docker_client.containers.get(name).status == "exited"

    wait_for("the idle stop", exited)  # the watchdog in the container stops it: no orchestrator call here
    container = docker_client.containers.get(name)
    assert container.attrs["State"]["ExitCode"] == 0 and b"idle for 6s" in container.logs()
    lines: list[str] = []
    again = run_once(project, host, lines)
    assert loads(remote) == before + 1 and again.record.serving.load_seconds is not None
    assert any("had ended (idle stop)" in line for line in lines)
    host.stop_service(print)
    host.close()


def test_a_service_killed_mid_request_is_restarted_once(
    sshd, remote: Path, project: ProjectLayout, docker_client: docker.DockerClient
) -> None:
    host = cosmos3_host(sshd, remote, uuid.uuid4().hex[:8], STANDIN_SERVE_GENERATE_SECONDS="2")
    killed = kill_during_requests(docker_client, remote, host, times=1)
    before = loads(remote)
    lines: list[str] = []
    result = run_once(project, host, lines)
    killed.join(WAIT_S)
    assert result.record.state == "succeeded" and "during the request" in result.record.serving.restarted
    assert loads(remote) == before + 2 and any("restarting the model service once" in line for line in lines)
    assert (result.output_dir / "output.mp4").is_file()
    run_log = (result.output_dir / "run.log").read_text()
    assert "restarting the model service once" in run_log
    host.stop_service(print)
    host.close()


def test_a_service_that_dies_again_fails_the_run_with_its_cause(
    sshd, remote: Path, project: ProjectLayout, docker_client: docker.DockerClient
) -> None:
    host = cosmos3_host(sshd, remote, uuid.uuid4().hex[:8], STANDIN_SERVE_GENERATE_SECONDS="2")
    killed = kill_during_requests(docker_client, remote, host, times=2)
    with pytest.raises(ServiceFailed, match="failed again after one restart"):
        run_once(project, host)
    killed.join(WAIT_S)
    failed = [r for r in run_records(project) if r.state == "failed"]
    assert failed and failed[-1].cause == "service_failed"
    host.close()


def run_records(project: ProjectLayout) -> list:
    from cosmos_assets.runs.record_store import RunStore

    return sorted(RunStore(project.runs_dir).all(), key=lambda r: r.created_at)


def kill_during_requests(
    docker_client: docker.DockerClient, remote: Path, host: SshHost, times: int
) -> threading.Thread:
    """A thread that kills the host's model service each time a request is running in it (its ``busy`` marker
    exists), ``times`` times."""
    service_root = remote / "cosmos-framework" / "outputs" / ".service"

    def kill() -> None:
        for _ in range(times):
            busy: list[Path] = []
            wait_for(
                "a request in the service", lambda busy=busy: bool(busy.extend(service_root.glob("*/busy")) or busy)
            )
            docker_client.containers.get(busy[0].parent.name).kill()
            wait_for("the busy marker to go", lambda busy=busy: not busy[0].exists())

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread
