"""Two GPU hosts in one pool file: two real sshd on two loopback ports, one private dockerd behind both (containers
labelled by host), each host with its own REMOTE_DIR. Four prompts are launched together as four
`dagster asset materialize` processes (the CLI: no run queue, only Dagster's pools), then four more while one host
stops taking connections mid-backfill. Then a host whose sshd dies mid-run (its open sessions too): the retry fails
over to the other host and runs the work there once, and when the dead host returns its left-behind container is
stopped, never collected over the newer outputs. What ran where is read from the engine's own container start/die
events and the run records."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import docker
import pytest

from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.docker_run import LABEL_PREFIX
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from tests.infra.docker_events import attributes, container_events
from tests.infra.sshd import SshServer, start_sshd
from tests.integration.test_ssh_host import OWNER_GID, OWNER_UID, _chown_tree, _write_checkout, _write_checkpoints
from tests.project_factory import make_project

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.sys.executable).parent  # the venv's dagster and cosmos-assets
SHOT = "tiny_shot"
SECRET = "hf_pool_" + uuid.uuid4().hex
HOST_LABEL = f"{LABEL_PREFIX}.host"


@dataclass(frozen=True)
class Pool:
    project: ProjectLayout
    home: Path
    hosts_file: Path
    servers: dict[str, SshServer]
    image: str


@pytest.fixture(scope="module")
def second_sshd(infra_root: Path, dockerd, fake_gpu_bin) -> Iterator[SshServer]:
    """A second GPU host: its own sshd (port, host key, user key) in front of the same private engine."""
    server = start_sshd(
        infra_root / f"ssh-b-{uuid.uuid4().hex[:6]}",
        docker_host=dockerd.docker_host,
        path_prepend=[fake_gpu_bin.bin_dir],
    )
    yield server
    server.stop()


def host_entry(name: str, server: SshServer, base: Path, image: str) -> dict[str, object]:
    """One pool-file entry for ``server`` (its checkout and checkpoints under ``base/name``)."""
    return {
        "name": name,
        "ssh": f"{server.user}@{server.host}:{server.port}",
        "remote_dir": str(base / name / "cosmos-transfer1"),
        "image": image,
        "models": ["cosmos-transfer1"],
        "ssh_key": str(server.key_path),
        "known_hosts": str(server.known_hosts),
        "ssh_config": str(base / "no-ssh-config"),
        "min_free_gb": 1.0,
        "reconnect_attempts": 1,
        "price_per_gpu_hour": 1.5 if name == "gpu-a" else 3.0,
        "container_env": {"COSMOS_PREVIEW_STEP_SECONDS": "0.05"},  # slowed a little: runs overlap
        # One engine stands in for two hosts: each gets its own fake GPU, as two hosts have their own (one engine runs
        # one model per GPU set, whichever pool entry started it: machines/busy_host.py).
        "gpus": "0" if name == "gpu-a" else "1",
    }


def make_pool(
    servers: dict[str, SshServer], docker_client, tmp_path_factory: pytest.TempPathFactory, base: Path
) -> Pool:
    """A project with prompts p1..p4 and a pool file of ``servers`` (in that order), each with its own checkout."""
    base.chmod(0o755)
    image = f"cosmos-transfer1-pool:{uuid.uuid4().hex[:8]}"
    entries = []
    for name, server in servers.items():
        remote_dir = base / name / "cosmos-transfer1"
        _write_checkout(remote_dir)
        _write_checkpoints(base / name / "checkpoints")
        _chown_tree(remote_dir, OWNER_UID, OWNER_GID)
        entries.append(host_entry(name, server, base, image))
    docker_client.images.build(path=str(base / next(iter(servers)) / "cosmos-transfer1"), tag=image, rm=True)
    root = tmp_path_factory.mktemp("pool-project")
    project = make_project(root, shot=SHOT, prompt="p1")
    for i in range(2, 5):
        write_spec(new_prompt_spec(SHOT, f"a quiet street at dusk, take {i}"), project.prompt_file(f"p{i}"))
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")  # the project's own instance settings
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions(PROMPTS.name, ["p1", "p2", "p3", "p4"])
    instance.dispose()
    hosts_file = root / "hosts.yaml"
    hosts_file.write_text(json.dumps({"hosts": entries}, indent=2))  # JSON is YAML
    return Pool(project=project, home=home, hosts_file=hosts_file, servers=servers, image=image)


@pytest.fixture(scope="module")
def pool(sshd, second_sshd, test_image: str, docker_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    base = Path(tempfile.mkdtemp(prefix="cosmos-pool-", dir="/tmp"))
    # gpu-b first: a step that finds both free takes it
    yield make_pool({"gpu-b": second_sshd, "gpu-a": sshd}, docker_client, tmp_path_factory, base)
    shutil.rmtree(base, ignore_errors=True)


def env_of(pool: Pool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "REMOTE_", "DAGSTER_"))}
    return env | {
        "DAGSTER_HOME": str(pool.home),
        "COSMOS_PROJECT_ROOT": str(pool.project.root),
        "COSMOS_HOSTS_FILE": str(pool.hosts_file),
        "HF_TOKEN": SECRET,
    }


def launch_together(pool: Pool, prompts: list[str], force: bool = False) -> list[tuple[int, str]]:
    """One `dagster asset materialize` process per prompt, all started at once: (exit code, output) each."""
    config = ["--config-json", json.dumps({"ops": {"generated_videos": {"config": {"force": True}}}})] if force else []
    procs = []
    for prompt in prompts:
        out = pool.project.root / f"materialize-{prompt}-{uuid.uuid4().hex[:6]}.log"
        argv = [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "cosmos_assets.definitions",
            "--select",
            "generated_videos",
            "--partition",
            prompt,
            *config,
        ]
        with out.open("w") as sink:
            procs.append(
                (
                    subprocess.Popen(
                        argv, env=env_of(pool), cwd=pool.project.root, stdout=sink, stderr=subprocess.STDOUT
                    ),
                    out,
                )
            )
    results = []
    for proc, out in procs:
        code = proc.wait(timeout=600)
        results.append((code, out.read_text(errors="replace")))
    return results


def host_events(client: docker.DockerClient, since: float) -> list[tuple[str, str]]:
    """(event, host label) of our containers' start and die events since ``since``, in the engine's order."""
    return [
        (e["Action"], attributes(e)[HOST_LABEL])
        for e in container_events(client, since, ("start", "die"), label=HOST_LABEL)
    ]


def most_at_once(events: list[tuple[str, str]]) -> tuple[dict[str, int], int]:
    """(most containers running at once on each host, most at once over both)."""
    running: dict[str, int] = {}
    per_host: dict[str, int] = {}
    overall = 0
    for action, host in events:
        running[host] = running.get(host, 0) + (1 if action == "start" else -1)
        per_host[host] = max(per_host.get(host, 0), running[host])
        overall = max(overall, sum(running.values()))
    return per_host, overall


def test_four_prompts_launched_together_spread_over_both_hosts_one_container_per_host_at_a_time(
    pool: Pool, docker_client: docker.DockerClient
) -> None:
    started = time.time()
    results = launch_together(pool, ["p1", "p2", "p3", "p4"])
    assert [code for code, _ in results] == [0, 0, 0, 0], "\n\n".join(out[-3000:] for _, out in results)

    events = host_events(docker_client, started)
    starts = [host for action, host in events if action == "start"]
    assert len(starts) == 4 and set(starts) == {"gpu-a", "gpu-b"}, events
    per_host, overall = most_at_once(events)
    assert per_host == {"gpu-a": 1, "gpu-b": 1}, events  # never two containers on one host
    assert overall == 2, events  # both hosts ran at once

    history = [h for h in read_history(pool.project.history_log) if h.status == "success"]
    assert sorted(h.host for h in history) == sorted(starts)  # the history names the host each ran on
    for h in history:  # each host's own price per GPU hour
        assert h.cost is not None and h.cost == pytest.approx(
            h.gpu_seconds / 3600 * (1.5 if h.host == "gpu-a" else 3.0), abs=1e-4
        )
    chosen = [line for _, out in results for line in out.splitlines() if "chosen for cosmos-transfer1" in line]
    assert len(chosen) == 4
    assert all(SECRET not in out for _, out in results)

    listing = subprocess.run(
        [str(BIN / "cosmos-assets"), "hosts"],
        env=env_of(pool),
        cwd=pool.project.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    for name in ("gpu-a", "gpu-b"):
        assert "reachable" in rows[name] and " 2 " in rows[name] and "present" in rows[name], listing.stdout
        assert rows[name].rstrip().endswith("0"), listing.stdout  # no run in flight now


def test_a_host_made_unreachable_mid_backfill_sends_its_work_to_the_other(
    pool: Pool, docker_client: docker.DockerClient
) -> None:
    gone = pool.servers["gpu-b"]
    started = time.time()
    stopped = threading.Event()

    def stop_taking_connections() -> None:
        # The first container on gpu-b started: its listener goes (its run's open link stays, so that run finishes).
        stream = docker_client.events(
            since=int(started) - 1,
            decode=True,
            filters={"type": "container", "event": "start", "label": f"{HOST_LABEL}=gpu-b"},
        )
        for event in stream:
            if event["timeNano"] < started * 1e9:  # the query works in whole seconds: an earlier test's container
                continue
            os.kill(gone.pid, signal.SIGTERM)
            stopped.set()
            stream.close()
            return

    watcher = threading.Thread(target=stop_taking_connections, daemon=True)
    watcher.start()
    results = launch_together(pool, ["p1", "p2", "p3", "p4"], force=True)
    assert stopped.is_set(), "gpu-b never started a container"
    assert [code for code, _ in results] == [0, 0, 0, 0], "\n\n".join(out[-3000:] for _, out in results)

    events = host_events(docker_client, started)
    starts = [host for action, host in events if action == "start"]
    assert sorted(starts) == ["gpu-a", "gpu-a", "gpu-a", "gpu-b"], events  # gpu-b's later work went to gpu-a
    per_host, _ = most_at_once(events)
    assert per_host == {"gpu-a": 1, "gpu-b": 1}, events
    skipped = [
        line
        for _, out in results
        for line in out.splitlines()
        if "host gpu-b skipped for this run: cannot connect to gpu-b" in line
    ]
    assert skipped, "no run logged that it skipped the unreachable host"
    try:
        with socket_to(gone.port):
            pytest.fail("gpu-b still takes connections")
    except OSError:
        pass


def socket_to(port: int):
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=2)


# --------------------------------------------------------------------------- failover from a host whose sshd died


@dataclass
class FailoverPool:
    pool: Pool
    base: Path
    restart: object  # () -> SshServer: a new sshd standing in for gpu-a, written into the pool file


@pytest.fixture(scope="module")
def failover_pool(
    infra_root: Path, dockerd, fake_gpu_bin, test_image: str, docker_client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FailoverPool]:
    """Two hosts of their own (gpu-a first in the file, so a lone step takes it), each its own sshd, one engine."""

    def new_sshd(tag: str) -> SshServer:
        return start_sshd(
            infra_root / f"ssh-{tag}-{uuid.uuid4().hex[:6]}",
            docker_host=dockerd.docker_host,
            path_prepend=[fake_gpu_bin.bin_dir],
        )

    servers = {"gpu-a": new_sshd("fa"), "gpu-b": new_sshd("fb")}
    base = Path(tempfile.mkdtemp(prefix="cosmos-failover-", dir="/tmp"))
    pool = make_pool(servers, docker_client, tmp_path_factory, base)

    def restart() -> SshServer:
        server = new_sshd("fa2")
        servers["gpu-a"] = server
        hosts = json.loads(pool.hosts_file.read_text())
        hosts["hosts"][0] = host_entry("gpu-a", server, base, pool.image)
        pool.hosts_file.write_text(json.dumps(hosts, indent=2))
        return server

    yield FailoverPool(pool=pool, base=base, restart=restart)
    for server in servers.values():
        server.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_a_host_whose_sshd_dies_mid_run_fails_over_runs_the_work_once_elsewhere_and_its_leftover_is_stopped_later(
    failover_pool: FailoverPool, docker_client: docker.DockerClient
) -> None:
    pool = failover_pool.pool
    started = time.time()
    killed = threading.Event()

    def kill_gpu_a_once_its_container_runs() -> None:
        stream = docker_client.events(
            since=int(started) - 1,
            decode=True,
            filters={"type": "container", "event": "start", "label": f"{HOST_LABEL}=gpu-a"},
        )
        for event in stream:
            if event["timeNano"] < started * 1e9:
                continue
            pool.servers["gpu-a"].stop()  # its listener and every open session: gpu-a is gone for SSH
            killed.set()
            stream.close()
            return

    watcher = threading.Thread(target=kill_gpu_a_once_its_container_runs, daemon=True)
    watcher.start()
    [(code, out)] = launch_together(pool, ["p1"])
    assert killed.is_set(), "gpu-a never started a container"
    assert code == 0, out[-4000:]

    starts = [host for action, host in host_events(docker_client, started) if action == "start"]
    assert starts == ["gpu-a", "gpu-b"], starts  # gpu-a was not tried again; gpu-b ran the work once
    assert "host gpu-a skipped for this run: cannot connect to gpu-a" in out
    assert "an earlier run of this work was left on it" in out  # the retry went to gpu-a first, found it gone
    records = [r for r in RunStore(pool.project.runs_dir).all() if r.prompt == "p1"]
    assert [(r.host, r.state, r.cause, r.detached) for r in records] == [
        ("gpu-a", "failed", "link_lost", True),
        ("gpu-b", "succeeded", None, False),
    ]
    left, done = records
    assert json.loads((pool.project.output_dir("p1") / "spec_used.json").read_text())["run_id"] == done.run_id
    outputs_of_b = sorted(p.name for p in pool.project.output_dir("p1").iterdir())

    # gpu-a comes back. A forced run of the same work goes to gpu-a (pool-file order: its left-behind run no longer
    # pins anything); it finds that run superseded by gpu-b's, stops its container, and runs anew.
    failover_pool.restart()
    again = time.time()
    [(code, out)] = launch_together(pool, ["p1"], force=True)
    assert code == 0, out[-4000:]
    assert "free, has the model; tried in pool-file order" in out and "superseded" in out
    assert not [
        c for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_PREFIX}.run-id={left.run_id}"})
    ]
    closed = RunStore(pool.project.runs_dir).load(left.run_id)
    assert closed.state == "failed" and not closed.detached and closed.error is not None
    assert f"superseded: run {done.run_id} did this work on gpu-b and succeeded" in closed.error
    latest = [r for r in RunStore(pool.project.runs_dir).all() if r.prompt == "p1"][-1]
    assert latest.host == "gpu-a" and latest.state == "succeeded" and latest.run_id != left.run_id
    assert [host for action, host in host_events(docker_client, again) if action == "start"] == ["gpu-a"]
    moved = pool.project.previous_outputs_dir / "p1" / done.run_id  # gpu-b's outputs moved aside, whole
    assert sorted(p.name for p in moved.iterdir()) == outputs_of_b
