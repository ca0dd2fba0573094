"""The model and the host's docker failing under a run, against the real sshd and dockerd (tests/conftest.py).

The preview program runs in docker on the test host and fails as its prompt asks (``TEST_FAULTS`` in
cosmos_assets/models/preview_model.py): exit non-zero, hang, run out of GPU memory (torch's message), or be killed by
the kernel for host memory (a real OOM kill: the test caps the container's memory while it runs). Docker itself is
made unreachable at the start of a run by moving the private engine's socket away (what the docker CLI sees when
its daemon is stopped), and restarted mid-run (the real private dockerd: its shutdown stops our container); the
container is killed from outside (`docker kill`) mid-run; two materializations of one prompt are started at once,
as two processes.

Every test ends with a clear error or a completed run, and checks: the error's one line, the prompt's earlier
outputs untouched (same files, same bytes), nothing under a final name from the failed run (locally or in its
remote folder), the history line with its cause. Orchestrator kills, terminate and a link down are in
tests/integration/test_durable_runs.py (docs/faults.md).
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
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmos_assets.defs.assets.gpu_step import failure_from
from cosmos_assets.files import sha256_file
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.docker_engine import DockerWentAwayError
from cosmos_assets.machines.docker_run import LABEL_PREFIX
from cosmos_assets.machines.ssh_host import DockerUnreachableError, SshHost
from cosmos_assets.machines.ssh_host_settings import SshHostSettings
from cosmos_assets.machines.ssh_target import SshTarget
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import InferenceFailed, OutOfMemory, run_generation
from tests.infra.docker_events import attributes, container_events
from tests.infra.dockerd import DockerDaemon, start_dockerd
from tests.integration.test_ssh_host import dockerfile_only_host, our_containers
from tests.project_factory import make_project

pytestmark = pytest.mark.integration

SHOT = "tiny_shot"
PROMPT = "faulty"
PREVIEW = backend_named("preview")


@pytest.fixture(scope="module")
def place(sshd, test_image: str) -> Iterator[dict[str, object]]:
    """A host with only a Dockerfile (the image is built on first use), as SshTarget and SshHostSettings fields."""
    base, remote_dir = dockerfile_only_host("cosmos-faults-", f"FROM {test_image}\nWORKDIR /workspace\n")
    yield {
        "target": dict(
            host=sshd.host,
            port=sshd.port,
            user=sshd.user,
            key_file=str(sshd.key_path),
            known_hosts=str(sshd.known_hosts),
            ssh_config=str(base / "no-ssh-config"),
            allow_agent=False,
        ),
        "settings": dict(
            remote_dir=str(remote_dir),
            docker_image=f"cosmos-faults:{uuid.uuid4().hex[:8]}",
            min_free_gb=0.1,
            reconnect_attempts=2,
        ),
    }
    shutil.rmtree(base, ignore_errors=True)


def machine_at(place: dict[str, object]) -> SshHost:
    return SshHost(SshTarget(**place["target"]), SshHostSettings(**place["settings"]))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def machine(place: dict[str, object]) -> Iterator[SshHost]:
    host = machine_at(place)
    yield host
    host.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, machine: SshHost) -> ProjectLayout:
    """A project whose prompt ``PROMPT`` has outputs of a successful run (which every fault must leave alone)."""
    layout = make_project(tmp_path_factory.mktemp("faults-project"), shot=SHOT, prompt=PROMPT)
    run_generation(layout, machine, PREVIEW, PROMPT, log=lambda line: None)
    return layout


def write_prompt(layout: ProjectLayout, prompt: str, text: str) -> None:
    write_spec(new_prompt_spec(SHOT, text), layout.prompt_file(prompt))


def files_of(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def earlier_outputs(layout: ProjectLayout) -> dict[str, str]:
    """The outputs ``PROMPT`` has before the fault, by content (never empty: see ``project``)."""
    before = files_of(layout.output_dir(PROMPT))
    assert "output.mp4" in before and "spec_used.json" in before
    return before


def last_record(layout: ProjectLayout, prompt: str) -> RunRecord:
    return [r for r in RunStore(layout.runs_dir).all() if r.prompt == prompt][-1]


def assert_failed_cleanly(
    layout: ProjectLayout, place: dict[str, object], prompt: str, before: dict[str, str], cause: str
) -> RunRecord:
    """Earlier outputs untouched, nothing of the failed run under a final name, its history line with its cause."""
    record = last_record(layout, prompt)
    assert record.state == "failed" and record.cause == cause
    assert files_of(layout.output_dir(prompt)) == before
    failed = layout.outputs_dir / ".failed" / prompt / record.run_id
    assert (failed / "run.log").is_file() and not (failed / "output.mp4").exists()
    remote = Path(str(place["settings"]["remote_dir"])) / record.remote_output_folder  # type: ignore[index]
    assert not (remote / "output.mp4").exists()
    line = read_history(layout.history_log)[-1]
    assert (line.run_id, line.status, line.cause) == (record.run_id, "failed", cause) and line.error
    return record


def starts_since(docker_client, since: float, prompt: str) -> list[str]:
    return [
        attributes(e)["name"]
        for e in container_events(docker_client, since)
        if attributes(e).get(f"{LABEL_PREFIX}.prompt") == prompt
    ]


def no_container_left(docker_client, prompt: str) -> bool:
    return not our_containers(docker_client, prompt)


# --------------------------------------------------------------------------- the model fails


def test_a_model_that_exits_non_zero_fails_with_its_exit_code_and_log(project, place, machine, docker_client) -> None:
    before = earlier_outputs(project)
    write_prompt(project, PROMPT, "a street FAIL_TEST_EXIT")
    with pytest.raises(InferenceFailed) as caught:
        run_generation(project, machine, PREVIEW, PROMPT, log=lambda line: None)
    first = str(caught.value).splitlines()[0]
    assert f"generate for {PROMPT} failed on" in first and "exit code 1" in first and "Log: " in first
    assert any("the model failed" in line for line in caught.value.log_tail)
    failure = failure_from(caught.value)
    assert failure.metadata["cause"].value == "model_exit" and failure.allow_retries is False
    assert_failed_cleanly(project, place, PROMPT, before, "model_exit")
    assert no_container_left(docker_client, PROMPT)


def test_a_hung_model_is_stopped_by_the_watchdog(project, place, machine, docker_client) -> None:
    before = earlier_outputs(project)
    write_prompt(project, PROMPT, "a street HANG_TEST")
    with pytest.raises(InferenceFailed) as caught:  # the stand-in sleeps 10 minutes: the watchdog ends it
        run_generation(project, machine, PREVIEW, PROMPT, log=lambda line: None, silence_minutes=0.05)
    first = str(caught.value).splitlines()[0]
    assert "stalled" in first and "no log line for 0.05 min" in first and "COSMOS_MODEL_SILENCE_MINUTES" in first
    assert failure_from(caught.value).metadata["cause"].value == "stalled"
    assert_failed_cleanly(project, place, PROMPT, before, "stalled")
    assert no_container_left(docker_client, PROMPT)  # the watchdog stopped and removed it


def test_a_container_killed_for_memory_says_so_and_is_not_retried_with_offload(
    project, place, machine, docker_client
) -> None:
    before = earlier_outputs(project)
    write_prompt(project, PROMPT, "a street OOM_TEST_HOST")
    stop = threading.Event()

    def cap_memory() -> None:  # a memory limit on the container as soon as it exists: the kernel then kills it
        while not stop.is_set():
            for container in docker_client.containers.list(
                filters={"label": f"{LABEL_PREFIX}.prompt={PROMPT}"}, ignore_removed=True
            ):
                container.update(mem_limit="96m", memswap_limit="96m")
                return
            time.sleep(0.02)

    capper = threading.Thread(target=cap_memory, daemon=True)
    capper.start()
    try:
        with pytest.raises(OutOfMemory) as caught:
            run_generation(project, machine, PREVIEW, PROMPT, log=lambda line: None, oom_retry_offload=True)
    finally:
        stop.set()
        capper.join(10)
    first = str(caught.value).splitlines()[0]
    assert "the host ran out of memory (RAM), not the GPU" in first and "OOMKilled" in first
    assert "shorter clip" in first and "make it worse" in first
    record = assert_failed_cleanly(project, place, PROMPT, before, "out_of_memory")
    assert record.exit_code == 137 and record.container["oom_killed"] is True
    assert RunStore(project.runs_dir).all()[-1].run_id == record.run_id  # no offload retry after a host OOM kill


def test_out_of_gpu_memory_fails_with_its_fix_then_the_opt_in_retry_offloads_and_completes(
    project, place, machine, docker_client
) -> None:
    before = earlier_outputs(project)
    write_prompt(project, PROMPT, "a street OOM_TEST_GPU")
    since = time.time()
    with pytest.raises(OutOfMemory) as caught:
        run_generation(project, machine, PREVIEW, PROMPT, log=lambda line: None)
    first = str(caught.value).splitlines()[0]
    assert "out of GPU memory (torch.OutOfMemoryError: CUDA out of memory" in first
    assert "--offload_diffusion_transformer" in first and "num_gpus" in first and "shorter clip" in first
    failure = failure_from(caught.value)
    assert failure.metadata["cause"].value == "out_of_memory" and failure.allow_retries is False
    failed = assert_failed_cleanly(project, place, PROMPT, before, "out_of_memory")
    assert len(starts_since(docker_client, since, PROMPT)) == 1  # not retried by default

    since = time.time()
    result = run_generation(project, machine, PREVIEW, PROMPT, log=lambda line: None, oom_retry_offload=True)
    oom_again, retry = RunStore(project.runs_dir).all()[-2:]
    assert oom_again.cause == "out_of_memory" and oom_again.run_id != failed.run_id  # a new attempt, then its retry
    assert retry.run_id == f"{oom_again.run_id}_offload" == result.record.run_id and retry.state == "succeeded"
    assert retry.retry_of == oom_again.run_id and retry.flags_added and retry.adopted_by == []
    assert (
        "--offload_diffusion_transformer" in retry.command
        and "--offload_diffusion_transformer" not in oom_again.command
    )
    used = json.loads((project.output_dir(PROMPT) / "spec_used.json").read_text())
    assert used["run_id"] == retry.run_id and "--offload_diffusion_transformer" in used["command"]
    assert len(starts_since(docker_client, since, PROMPT)) == 2  # the failed run's container, then the retry's
    assert retry.gpu_usage is not None and retry.gpu_usage.samples >= 1 and retry.gpu_usage.gpus == 2  # fake nvidia-smi
    history = read_history(project.history_log)
    assert [(h.status, h.cause, h.retry_of) for h in history[-2:]] == [
        ("failed", "out_of_memory", None),
        ("success", None, oom_again.run_id),
    ]
    assert before in [files_of(p) for p in (project.previous_outputs_dir / PROMPT).iterdir()]  # moved aside, intact


# --------------------------------------------------------------------------- docker, and two at once


def test_docker_stopped_at_the_start_fails_retryable_then_the_next_attempt_completes(
    project, place, machine, dockerd, docker_client
) -> None:
    before = earlier_outputs(project)
    write_prompt(project, PROMPT, "a street at noon")
    away = dockerd.socket_path.with_name(dockerd.socket_path.name + ".away")
    os.rename(dockerd.socket_path, away)  # the docker CLI now finds no daemon, as when it is stopped
    try:
        with pytest.raises(DockerUnreachableError) as caught:
            run_generation(project, machine, PREVIEW, PROMPT, log=lambda line: None)
    finally:
        os.rename(away, dockerd.socket_path)
    first = str(caught.value).splitlines()[0]
    assert "docker is not reachable on" in first and "Cannot connect to the Docker daemon" in first
    failure = failure_from(caught.value)
    assert failure.metadata["cause"].value == "docker_unreachable" and failure.allow_retries is True
    assert_failed_cleanly(project, place, PROMPT, before, "docker_unreachable")

    since = time.time()
    result = run_generation(project, machine, PREVIEW, PROMPT, log=lambda line: None)  # docker is back
    assert result.record.state == "succeeded" and len(starts_since(docker_client, since, PROMPT)) == 1
    assert read_history(project.history_log)[-1].status == "success"


def test_a_container_killed_from_outside_is_killed_not_out_of_memory_and_not_retried(
    project, place, machine, docker_client
) -> None:
    before = earlier_outputs(project)
    write_prompt(project, PROMPT, "a street HANG_TEST")  # the stand-in goes quiet: only the kill ends it
    killed: list[str] = []

    def kill_once_running(line: str) -> None:
        if "test fault HANG_TEST" in line and not killed:
            container = our_containers(docker_client, PROMPT)[0]
            container.kill()  # SIGKILL from outside, as `docker kill` by someone on the host
            killed.append(container.name)

    with pytest.raises(InferenceFailed) as caught:
        run_generation(project, machine, PREVIEW, PROMPT, log=kill_once_running, oom_retry_offload=True)
    first = str(caught.value).splitlines()[0]
    assert killed and f"container {killed[0]} was killed from outside" in first and "SIGKILL" in first
    assert "not OOMKilled" in first and "memory" not in first.replace("not OOMKilled", "")
    assert not isinstance(caught.value, OutOfMemory) and "Traceback" not in str(caught.value)
    failure = failure_from(caught.value)
    assert failure.metadata["cause"].value == "killed" and failure.allow_retries is False
    record = assert_failed_cleanly(project, place, PROMPT, before, "killed")
    assert record.exit_code == 137 and record.container["oom_killed"] is False
    assert no_container_left(docker_client, PROMPT)


def restart_engine(daemon: DockerDaemon) -> None:
    """Stop the private dockerd as an admin's `systemctl restart docker` does (SIGTERM: it stops its containers), then
    start it again on the same data; ``daemon`` then describes the new process."""
    os.kill(daemon.pid, signal.SIGTERM)
    if not daemon._wait_exit(90):
        raise RuntimeError("the private dockerd did not stop within 90 s")
    again = start_dockerd(daemon.root)
    daemon.pid, daemon.proc, daemon.start_seconds = again.pid, again.proc, again.start_seconds


def test_docker_restarted_mid_run_fails_retryable_naming_the_container_then_the_next_attempt_completes(
    project, place, dockerd, docker_client
) -> None:
    before = earlier_outputs(project)
    write_prompt(project, PROMPT, "a street at dusk")
    slow = {**place["settings"], "container_env": {"COSMOS_PREVIEW_STEP_SECONDS": "0.5"}}  # outlasts the stop's grace
    host = machine_at({**place, "settings": slow})
    restarts: list[threading.Thread] = []
    lines: list[str] = []

    def restart_at_step_2(line: str) -> None:
        lines.append(line)
        if "step 2/" in line and not restarts:
            restarts.append(threading.Thread(target=restart_engine, args=(dockerd,), daemon=True))
            restarts[0].start()

    since = time.time()
    try:
        with pytest.raises(DockerWentAwayError) as caught:
            run_generation(project, host, PREVIEW, PROMPT, log=restart_at_step_2)
        restarts[0].join(120)
        message = str(caught.value)
        started = _names(lines)
        assert "\n" not in message and "Traceback" not in message
        assert len(started) == 1 and f"went away while container {started[0]} ran" in message, message
        assert "was stopped or restarted" in message  # (the engine forgets its events when it restarts)
        failure = failure_from(caught.value)
        assert failure.metadata["cause"].value == "docker_unreachable" and failure.allow_retries is True
        record = assert_failed_cleanly(project, place, PROMPT, before, "docker_unreachable")
        assert not record.detached  # nothing to adopt: the engine's restart ended the container
        assert any("waiting up to" in line and "for the engine to come back" in line for line in lines)

        since = time.time()
        result = run_generation(project, host, PREVIEW, PROMPT, log=lambda line: None)  # the retry: a new container
    finally:
        host.close()
    assert result.record.state == "succeeded" and len(starts_since(docker_client, since, PROMPT)) == 1
    assert read_history(project.history_log)[-1].status == "success"
    assert no_container_left(docker_client, PROMPT)


def _names(lines: list[str]) -> list[str]:
    """Container names the run's log says it started."""
    return [line.split("started container ")[1].split()[0] for line in lines if "started container " in line]


AT_ONCE = """
import json, sys
from pathlib import Path
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.ssh_host import SshHost
from cosmos_assets.machines.ssh_host_settings import SshHostSettings
from cosmos_assets.machines.ssh_target import SshTarget
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.runner import run_generation

args = json.loads(sys.argv[1])
machine = SshHost(SshTarget(**args["target"]), SshHostSettings(**args["settings"]))
try:
    result = run_generation(ProjectLayout(root=Path(args["root"])), machine, backend_named("preview"), args["prompt"],
                            dagster_run_id=args["dagster_run_id"], log=lambda line: None)
except Exception as error:
    print("FAILED", str(error).splitlines()[0])
    sys.exit(1)
print("OK", result.record.run_id)
"""


def test_two_materializations_of_one_prompt_at_once_start_one_container(project, place, docker_client) -> None:
    before = earlier_outputs(project)
    write_prompt(project, PROMPT, "a street in the rain")
    since = time.time()
    slow = {**place["settings"], "container_env": {"COSMOS_PREVIEW_STEP_SECONDS": "0.2"}}  # type: ignore[dict-item]
    processes = []
    for dagster_run_id in ("aaaaaaaa1111", "bbbbbbbb2222"):  # two orchestrating processes, as two `dagster` CLIs
        args = {
            **place,
            "settings": slow,
            "root": str(project.root),
            "prompt": PROMPT,
            "dagster_run_id": dagster_run_id,
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", AT_ONCE, json.dumps(args)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0].strip().splitlines()[-1] for p in processes]
    assert sorted(p.returncode for p in processes) == [0, 1], outputs
    refused = next(o for o, p in zip(outputs, processes) if p.returncode == 1)
    assert refused.startswith("FAILED") and PROMPT in refused and "still" in refused and "wait for it" in refused, (
        refused
    )
    assert len(starts_since(docker_client, since, PROMPT)) == 1
    done = next(o for o, p in zip(outputs, processes) if p.returncode == 0).split()[-1]
    assert json.loads((project.output_dir(PROMPT) / "spec_used.json").read_text())["run_id"] == done
    assert before in [files_of(p) for p in (project.previous_outputs_dir / PROMPT).iterdir()]
    history = read_history(project.history_log)
    assert sorted((h.status, h.cause) for h in history[-2:]) == [("failed", "host_not_ready"), ("success", None)]
    assert refused.removeprefix("FAILED ") in next(h for h in history[-2:] if h.status == "failed").error
