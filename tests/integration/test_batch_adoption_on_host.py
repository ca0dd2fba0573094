"""An orphaned batch is adopted as a batch, and one model runs on a host at a time (issue 19, item 3), tried as a user
would against the real sshd and the private dockerd: `dagster asset materialize --partition-range` of three prompts,
SIGKILLed once their one container runs, then typed again (or one prompt of the three typed alone). What ran is
counted from the engine's own container start/die events, never from our logs; every wait is bounded and nothing
asserts on speed. The host is one pool-file entry (its container_env slows the stand-in's steps a little, so the
container is still running when the orchestrator is killed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import docker
import pytest

from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.docker_run import LABEL_PREFIX
from cosmos_assets.media import probe_video
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs.record_store import RunStore
from tests.infra.docker_events import attributes, container_events
from tests.integration.test_ssh_host import OWNER_GID, OWNER_UID, _chown_tree, _write_checkout, _write_checkpoints
from tests.project_factory import make_project

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.sys.executable).parent
SHOT = "adopt_shot"
SECRET = "hf_adopt_" + uuid.uuid4().hex
WAIT_SECONDS = 300
RANGE = {"r_one": "a quiet lane at dusk", "r_two": "a dry lane at noon", "r_three": "a wet lane at night"}
SINGLE = {"s_one": "a quiet pier at dusk", "s_two": "a dry pier at noon", "s_three": "a wet pier at night"}
LONE = "w_lone"


@dataclass(frozen=True)
class Host:
    project: ProjectLayout
    home: Path
    hosts_file: Path
    image: str


@pytest.fixture(scope="module")
def host(
    sshd, test_image: str, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Host]:
    base = Path(tempfile.mkdtemp(prefix="cosmos-adopt-", dir="/tmp"))
    base.chmod(0o755)
    remote_dir = base / "cosmos-transfer1"
    _write_checkout(remote_dir)
    _write_checkpoints(base / "checkpoints")
    _chown_tree(remote_dir, OWNER_UID, OWNER_GID)
    image = f"cosmos-transfer1-adopt:{uuid.uuid4().hex[:8]}"
    docker_client.images.build(path=str(remote_dir), tag=image, rm=True)
    root = tmp_path_factory.mktemp("adopt-project")
    project = make_project(root, shot=SHOT, prompt="unused")
    for prompt, text in {**RANGE, **SINGLE, LONE: "a lone lane at dawn"}.items():
        write_spec(new_prompt_spec(SHOT, text), project.prompt_file(prompt))
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [*RANGE, *SINGLE, LONE])
    entry = {
        "name": "gpu-1",
        "ssh": f"{sshd.user}@{sshd.host}:{sshd.port}",
        "remote_dir": str(remote_dir),
        "image": image,
        "models": ["cosmos-transfer1"],
        "ssh_key": str(sshd.key_path),
        "known_hosts": str(sshd.known_hosts),
        "ssh_config": str(base / "no-ssh-config"),
        "min_free_gb": 1.0,
        "reconnect_attempts": 1,
        "container_env": {"COSMOS_PREVIEW_STEP_SECONDS": "0.05"},  # the container outlives the orchestrator's kill
    }
    hosts_file = root / "hosts.yaml"
    hosts_file.write_text(json.dumps({"hosts": [entry]}, indent=2))
    yield Host(project=project, home=home, hosts_file=hosts_file, image=image)
    shutil.rmtree(base, ignore_errors=True)


def materialize(host: Host, name: str, *selection: str) -> subprocess.Popen:
    """`dagster asset materialize` of ``selection`` (``--partition P`` or ``--partition-range A...C``), as typed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "REMOTE_", "DAGSTER_"))}
    env |= {
        "DAGSTER_HOME": str(host.home),
        "COSMOS_PROJECT_ROOT": str(host.project.root),
        "COSMOS_HOSTS_FILE": str(host.hosts_file),
        "HF_TOKEN": SECRET,
    }
    argv = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "cosmos_assets.definitions",
        "--select",
        "generated_videos",
        *selection,
    ]
    return subprocess.Popen(
        argv,
        env=env,
        cwd=host.project.root,
        stdout=open(host.project.root / f"{name}.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def output(host: Host, name: str) -> str:
    return (host.project.root / f"{name}.log").read_text(errors="replace")


def finish(host: Host, process: subprocess.Popen, name: str) -> str:
    try:
        process.wait(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"{name} never finished:\n{output(host, name)[-4000:]}") from None
    assert process.returncode == 0, output(host, name)[-4000:]
    return output(host, name)


def wait_for(what: str, condition: Callable[[], bool], seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"waited {seconds:.0f}s for {what}")


def generate_events(client: docker.DockerClient, since: float, actions: tuple[str, ...] = ("start",)) -> list[dict]:
    return [
        e for e in container_events(client, since, actions) if attributes(e).get(f"{LABEL_PREFIX}.stage") == "generate"
    ]


def running(client: docker.DockerClient, label: str) -> bool:
    found = client.containers.list(filters={"label": f"{LABEL_PREFIX}.prompt={label}"}, ignore_removed=True)
    return bool(found) and b"step 2/" in found[0].logs()


def orphan_a_batch(host: Host, client: docker.DockerClient, prompts: dict[str, str]) -> list[str]:
    """The range materialized and its process SIGKILLed once the batch's container generates; the run ids it left."""
    label = "+".join(prompts)
    first = materialize(host, f"first-{label}", "--partition-range", f"{list(prompts)[0]}...{list(prompts)[-1]}")
    try:
        wait_for("the batch's container to be generating", lambda: running(client, label) or first.poll() is not None)
        assert first.poll() is None, output(host, f"first-{label}")[-4000:]
        os.kill(first.pid, signal.SIGKILL)  # the orchestrating process only, as `kill -9` of the CLI would
        first.wait(timeout=30)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    left = [r for r in RunStore(host.project.runs_dir).all() if r.prompt in prompts]
    assert [(r.prompt, r.state) for r in left] == [(p, "running") for p in prompts]  # nothing marked them
    assert running(client, label)  # the GPU job outlives its orchestrator
    return [r.run_id for r in left]


def check_collected_once(
    host: Host, client: docker.DockerClient, since: float, prompts: dict[str, str], run_ids: list[str]
) -> None:
    starts = generate_events(client, since)
    assert [attributes(e)[f"{LABEL_PREFIX}.prompt"] for e in starts] == ["+".join(prompts)]  # one start in all
    assert not client.containers.list(all=True, filters={"label": f"{LABEL_PREFIX}.prompt={'+'.join(prompts)}"})
    records = {r.run_id: r for r in RunStore(host.project.runs_dir).all()}
    for (prompt, text), run_id in zip(prompts.items(), run_ids):
        folder = host.project.output_dir(prompt)
        used = json.loads((folder / "spec_used.json").read_text())
        assert used["run_id"] == run_id and used["batch"]["items"] == 3  # the orphaned invocation's video
        assert (folder / "prompt.txt").read_text() == text  # its own item, mapped by its text
        assert probe_video(folder / "output.mp4").frames == 8
        assert records[run_id].state == "succeeded" and len(records[run_id].adopted_by) == 1
        assert SECRET not in (folder / "run.log").read_text() and SECRET not in (folder / "spec_used.json").read_text()
    assert [
        r for r in records.values() if r.prompt in prompts and r.run_id not in run_ids and r.state != "failed"
    ] == []


def test_a_sigkilled_batch_typed_again_is_collected_once_for_every_prompt(
    host: Host, docker_client: docker.DockerClient
) -> None:
    started = time.time()
    run_ids = orphan_a_batch(host, docker_client, RANGE)
    out = finish(host, materialize(host, "again", "--partition-range", "r_one...r_three"), "again")
    assert "adopting the invocation" in out and "one collection for all of them, nothing started" in out
    check_collected_once(host, docker_client, started, RANGE, run_ids)
    with dg.DagsterInstance.from_config(str(host.home)) as instance:
        done = instance.get_materialized_partitions(dg.AssetKey("generated_videos"))
    assert set(RANGE) <= set(done)


def test_one_prompt_of_a_sigkilled_batch_retried_alone_collects_the_batch_once_and_its_mates_skip(
    host: Host, docker_client: docker.DockerClient
) -> None:
    started = time.time()
    run_ids = orphan_a_batch(host, docker_client, SINGLE)
    out = finish(host, materialize(host, "alone", "--partition", "s_two"), "alone")
    assert "adopting the invocation" in out
    check_collected_once(host, docker_client, started, SINGLE, run_ids)
    out = finish(host, materialize(host, "mate", "--partition", "s_three"), "mate")
    assert "skipped: same inputs as run " + run_ids[2] in out  # its video came from the batch: nothing runs
    assert len(generate_events(docker_client, started)) == 1


def test_a_run_waits_for_a_foreign_container_of_ours_and_never_starts_beside_it(
    host: Host, docker_client: docker.DockerClient, test_image: str
) -> None:
    """A container of ours that no record of this project knows (another project, another version, someone's hand)
    holds the host's GPUs: the run says whom it waits for and starts only once that one has ended."""
    started = time.time()
    foreign = docker_client.containers.run(
        test_image,
        ["sleep", "600"],
        detach=True,
        name=f"cosmos-generate-foreign-{uuid.uuid4().hex[:8]}",
        labels={
            f"{LABEL_PREFIX}.run-id": "20261207_000000_f0f0f0f0",
            f"{LABEL_PREFIX}.prompt": "someone_else",
            f"{LABEL_PREFIX}.stage": "generate",
            f"{LABEL_PREFIX}.dagster-run-id": "their-run",
        },
    )
    waiting = (
        f"waiting for container {foreign.name} (generate of someone_else, run 20261207_000000_f0f0f0f0, "
        "Dagster run their-run)"
    )
    try:
        lone = materialize(host, "lone", "--partition", LONE)
        wait_for("the run to say whom it waits for", lambda: waiting in output(host, "lone") or lone.poll() is not None)
        assert lone.poll() is None, output(host, "lone")[-4000:]
        foreign.stop(timeout=1)  # the other work ends: only now may ours start
        out = finish(host, lone, "lone")
    finally:
        foreign.remove(force=True)
    assert "is free now" in out
    events = [
        (e["Action"], attributes(e)[f"{LABEL_PREFIX}.prompt"])
        for e in generate_events(docker_client, started, ("start", "die"))
    ]
    assert events == [("start", "someone_else"), ("die", "someone_else"), ("start", LONE), ("die", LONE)], events
    assert probe_video(host.project.output_dir(LONE) / "output.mp4").frames == 8
