"""The SSH host against the real sshd and the private dockerd: through Dagster (SshGpuHost), and at the
host level (SshHost, with jobs built by hand as a model backend would).

The "remote" cosmos-transfer1 checkout is a folder on this machine reached only through the test
sshd: the stand-in transfer.py (a copy of the preview backend), a Dockerfile the preflight builds,
empty stand-in checkpoints. REMOTE_DIR belongs to a throwaway uid, so the host (logged in as root)
runs the container as that owner and the outputs must come out owned by it.
"""

from __future__ import annotations

import json
import os
import shutil
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

from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.resources import SshGpuHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.docker_run import LABEL_PREFIX
from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, Invocation, StagedFile
from cosmos_assets.machines.ssh_host import SshHost
from cosmos_assets.media import probe_video
from cosmos_assets.models.preview import PROGRAM_LOCAL, PROGRAM_REMOTE
from cosmos_assets.models.transfer1 import ALWAYS_NEEDED, CONTROL_CHECKPOINTS, DERIVED_CONTROL_MODELS
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from tests.infra.docker_events import attributes, container_events
from tests.infra.nvidia import set_fake_gpu_count
from tests.project_factory import make_project

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
OWNER_UID, OWNER_GID = 4321, 4321  # a throwaway owner of REMOTE_DIR, not root
SECRET = "hf_test_" + uuid.uuid4().hex  # stands for a real HF token: must never show anywhere
PROMPT, SHOT, BLOCKED = "tiny_prompt", "tiny_shot", "blocked_prompt"
STEP_SECONDS = "0.25"  # the stand-in sleeps this long per step in the slowed runs (35 steps)
ENTRY_POINT = "cosmos_transfer1/diffusion/inference/transfer.py"  # the stand-in's path in the checkout
# What the seed prompt (vis, edge, depth and seg, with depth and seg videos) needs, written out by hand.
SEED_CHECKPOINTS = (
    "nvidia/Cosmos-Tokenize1-CV8x8x8-720p", "google-t5/t5-11b", "nvidia/Cosmos-Guardrail1",
    "meta-llama/Llama-Guard-3-8B", "nvidia/Cosmos-Transfer1-7B/base_model.pt", "nvidia/Cosmos-Transfer1-7B/vis_control.pt",
    "nvidia/Cosmos-Transfer1-7B/edge_control.pt", "nvidia/Cosmos-Transfer1-7B/depth_control.pt",
    "nvidia/Cosmos-Transfer1-7B/seg_control.pt",
)  # fmt: skip


@dataclass(frozen=True)
class FakeRemote:
    base: Path
    remote_dir: Path
    checkpoints: Path
    image: str
    no_ssh_config: Path


def _write_checkout(remote_dir: Path) -> None:
    entry = remote_dir / ENTRY_POINT
    entry.parent.mkdir(parents=True)
    shutil.copy(PROGRAM_LOCAL, entry)
    (remote_dir / "Dockerfile").write_text(
        'FROM cosmos-test-base:latest\nLABEL org.cosmos-assets.test="ssh host"\nWORKDIR /workspace\n'
    )


def _write_checkpoints(root: Path) -> None:
    for files in CONTROL_CHECKPOINTS.values():
        for rel in files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).touch()
    for rel in (*ALWAYS_NEEDED, *(m for models in DERIVED_CONTROL_MODELS.values() for m in models)):
        (root / rel).mkdir(parents=True, exist_ok=True)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for item in path.rglob("*"):
        os.chown(item, uid, gid)


BASE_DOCKERFILE = "FROM cosmos-test-base:latest\nWORKDIR /workspace\n"


def dockerfile_only_host(prefix: str, dockerfile: str = BASE_DOCKERFILE, folder: str = "host") -> tuple[Path, Path]:
    """A throwaway host folder under /tmp whose REMOTE_DIR (``folder``) holds only a Dockerfile (the preflight builds
    the image; the preview needs no checkout or checkpoints), owned by the plain owner uid. (base, remote_dir); the
    caller removes base."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    remote_dir = base / folder
    remote_dir.mkdir()
    (remote_dir / "Dockerfile").write_text(dockerfile)
    _chown_tree(remote_dir, OWNER_UID, OWNER_GID)
    return base, remote_dir


@pytest.fixture(scope="module")
def remote(test_image: str) -> Iterator[FakeRemote]:
    base = Path(tempfile.mkdtemp(prefix="cosmos-remote-", dir="/tmp"))
    base.chmod(0o755)
    remote_dir = base / "cosmos-transfer1"
    _write_checkout(remote_dir)
    _write_checkpoints(base / "checkpoints")
    _chown_tree(remote_dir, OWNER_UID, OWNER_GID)
    yield FakeRemote(
        base=base,
        remote_dir=remote_dir,
        checkpoints=base / "checkpoints",
        image=f"cosmos-transfer1-test:{uuid.uuid4().hex[:8]}",
        no_ssh_config=base / "no-ssh-config",
    )
    shutil.rmtree(base, ignore_errors=True)


def make_host(sshd, remote: FakeRemote, **overrides) -> SshGpuHost:
    fields = dict(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        ssh_key=str(sshd.key_path),
        known_hosts=str(sshd.known_hosts),
        ssh_config=str(remote.no_ssh_config),
        remote_dir=str(remote.remote_dir),
        docker_image=remote.image,
        min_free_gb=1.0,
        hf_token=dg.EnvVar("HF_TOKEN"),
        reconnect_attempts=5,
    )
    fields.update(overrides)
    return SshGpuHost(**fields)


@pytest.fixture(autouse=True)
def hf_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ProjectLayout:
    root = tmp_path_factory.mktemp("ssh-project")
    layout = make_project(root, shot=SHOT, prompt=PROMPT)
    write_spec(new_prompt_spec(SHOT, "GUARDRAIL_TEST_BLOCK a street"), layout.prompt_file(BLOCKED))
    (root / "dagster_home").mkdir()
    return layout


@pytest.fixture(scope="module")
def instance(project: ProjectLayout) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(project.root / "dagster_home")) as inst:
        inst.add_dynamic_partitions(PROMPTS.name, [PROMPT, BLOCKED])
        yield inst


def materialize(
    project: ProjectLayout,
    instance: dg.DagsterInstance,
    host: SshGpuHost,
    selection: list[str],
    prompt: str = PROMPT,
    force: bool = False,
    price: float | None = None,
) -> dg.ExecuteInProcessResult:
    config = {"ops": {name: {"config": {"force": True}} for name in selection}} if force else None
    return dg.materialize(
        ALL_ASSETS,
        selection=selection,
        partition_key=prompt,
        instance=instance,
        raise_on_error=False,
        resources={"project": ProjectResource(root=str(project.root), gpu_price_per_hour=price), "gpu_host": host},
        run_config=config,
    )


def our_containers(client: docker.DockerClient, prompt: str) -> list:
    """The prompt's containers. docker-py inspects each listed container; one listed while the engine creates or
    removes it can answer 404 to that inspect, which is skipped (ignore_removed) rather than failing the poll."""
    return client.containers.list(all=True, filters={"label": f"{LABEL_PREFIX}.prompt={prompt}"}, ignore_removed=True)


def container_starts(client: docker.DockerClient, since: float, prompt: str, stage: str) -> list[str]:
    return [
        attributes(e)["name"]
        for e in container_events(client, since)
        if attributes(e).get(f"{LABEL_PREFIX}.prompt") == prompt and attributes(e).get(f"{LABEL_PREFIX}.stage") == stage
    ]


def no_secret_in(*paths: Path) -> None:
    for path in paths:
        assert SECRET not in path.read_text(errors="replace"), f"the HF token leaked into {path}"


# --------------------------------------------------------------------------- through Dagster


def test_generate_and_upscale_on_the_ssh_host_building_the_image(
    sshd, remote: FakeRemote, project: ProjectLayout, instance: dg.DagsterInstance, docker_client
) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(remote.image)
    host = make_host(sshd, remote)

    t0 = time.monotonic()
    result = materialize(project, instance, host, ["generated_videos", "upscaled_videos"])
    seconds = time.monotonic() - t0
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    assert docker_client.images.get(remote.image).labels.get("org.cosmos-assets.test") == "ssh host"
    generated, upscaled = project.output_dir(PROMPT), project.upscaled_dir(PROMPT)
    run_log = (generated / "run.log").read_text()
    assert "[docker build]" in run_log and f"built {remote.image}" in run_log
    assert "started container" in run_log and "[preview]" in run_log
    assert "[transfer] upload" in run_log and "[transfer] download" in run_log

    info = probe_video(generated / "output.mp4")
    big = probe_video(upscaled / "output.mp4")
    assert info.frames == big.frames == 8
    assert (big.width, big.height) == (3 * info.width, 3 * info.height)

    used = json.loads((generated / "spec_used.json").read_text())
    remote_out = remote.remote_dir / used["video_save_folder"]
    for path in [remote_out, *remote_out.iterdir(), remote.remote_dir / "outputs"]:
        stat = path.stat()
        assert (stat.st_uid, stat.st_gid) == (OWNER_UID, OWNER_GID), f"{path} is owned by {stat.st_uid}:{stat.st_gid}"
    assert used["container"]["user"] == f"{OWNER_UID}:{OWNER_GID}"
    assert "owner of" in used["container"]["user_source"]
    command = used["command"]
    assert command[:3] == ["docker", "run", "-d"]
    assert ["--gpus", "all"] == command[command.index("--gpus") : command.index("--gpus") + 2]
    assert (
        "--ipc=host" in command
        and ["-u", f"{OWNER_UID}:{OWNER_GID}"] == command[command.index("-u") : command.index("-u") + 2]
    )
    assert f"{remote.remote_dir}:/workspace" in command and f"{remote.checkpoints}:/workspace/checkpoints" in command
    assert command[command.index("-e", command.index("PYTHONPATH=/workspace") + 1) :][:2] == ["-e", "HF_TOKEN"]
    assert command[command.index(remote.image) + 1] == "python3"
    assert used["environment"]["HF_TOKEN"] == "***"
    no_secret_in(
        generated / "spec_used.json", generated / "run.log", upscaled / "spec_used.json", upscaled / "upscale_run.log"
    )
    assert our_containers(docker_client, PROMPT) == []  # removed after a normal exit

    metadata = result.asset_materializations_for_node("generated_videos")[0].metadata
    assert metadata["host"].value == host.label and metadata["upload_bytes"].value > 0
    print(f"\n[measure] generate+upscale through Dagster incl. image build: {seconds:.1f}s")


def test_unchanged_inputs_upload_nothing_and_a_dropped_link_keeps_one_container(
    sshd, remote: FakeRemote, project: ProjectLayout, instance: dg.DagsterInstance, docker_client
) -> None:
    host = make_host(sshd, remote, container_env={"COSMOS_PREVIEW_STEP_SECONDS": STEP_SECONDS})
    seen: dict[str, object] = {}
    started = time.time()

    def kill_link_mid_run() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            running = [c for c in our_containers(docker_client, PROMPT) if c.status == "running"]
            if running and b"step 4/" in running[0].logs():
                seen["env"] = running[0].attrs["Config"]["Env"]
                seen["killed"] = sshd.kill_sessions()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_link_mid_run, daemon=True)
    killer.start()
    result = materialize(project, instance, host, ["generated_videos"], force=True)  # unforced, it is skipped
    killer.join(timeout=10)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert seen.get("killed", 0) >= 1, "the SSH link was not killed mid-run"
    assert f"HF_TOKEN={SECRET}" in seen["env"]  # reached the container through stdin, not argv

    metadata = result.asset_materializations_for_node("generated_videos")[0].metadata
    assert metadata["upload_bytes"].value == 0
    assert metadata["upload_files_skipped"].value >= 3

    assert len(container_starts(docker_client, started, PROMPT, "generate")) == 1
    assert our_containers(docker_client, PROMPT) == []
    run_log = (project.output_dir(PROMPT) / "run.log").read_text()
    assert "reconnected" in run_log and "re-attaching" in run_log
    steps = [line for line in run_log.splitlines() if "generate chunk 1/1 step " in line]
    assert len(steps) == len(set(steps)) == 35, (
        "every step line must reach the run log exactly once across the re-attach"
    )
    assert probe_video(project.output_dir(PROMPT) / "output.mp4").frames == 8
    no_secret_in(project.output_dir(PROMPT) / "run.log", project.output_dir(PROMPT) / "spec_used.json")


def test_an_unchanged_prompt_is_skipped_and_a_changed_one_runs_with_its_gpu_seconds_and_cost(
    sshd, remote: FakeRemote, project: ProjectLayout, instance: dg.DagsterInstance, docker_client
) -> None:
    host = make_host(sshd, remote)
    first = materialize(project, instance, host, ["generated_videos"], price=2.0)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    started = time.time()
    again = materialize(project, instance, host, ["generated_videos"], price=2.0)
    assert again.success, [e.message for e in again.all_events if e.is_failure]
    meta = again.asset_materializations_for_node("generated_videos")[0].metadata
    assert meta["skipped"].value is True and "same inputs as run" in meta["skipped_because"].value
    assert container_starts(docker_client, started, PROMPT, "generate") == []

    spec_path = project.prompt_file(PROMPT)
    original = spec_path.read_bytes()
    spec = json.loads(original)
    spec["seed"] = int(spec.get("seed", 0)) + 1
    spec_path.write_text(json.dumps(spec, indent=2))
    try:
        changed = materialize(project, instance, host, ["generated_videos"], price=2.0)
    finally:
        spec_path.write_bytes(original)
    assert changed.success, [e.message for e in changed.all_events if e.is_failure]
    meta = changed.asset_materializations_for_node("generated_videos")[0].metadata
    assert meta["skipped"].value is False and len(container_starts(docker_client, started, PROMPT, "generate")) == 1
    assert meta["cost"].value == pytest.approx(meta["gpu_seconds"].value / 3600 * 2.0, abs=1e-3)


def test_failing_container_fails_the_asset_with_its_log_tail_and_skips_the_upscale(
    sshd, remote: FakeRemote, project: ProjectLayout, instance: dg.DagsterInstance, docker_client
) -> None:
    result = materialize(
        project, instance, make_host(sshd, remote), ["generated_videos", "upscaled_videos"], prompt=BLOCKED
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["generated_videos"]
    failure = failures[0].step_failure_data
    assert "guardrail" in failure.error.message.lower()
    assert "GUARDRAIL BLOCKED" in failure.user_failure_data.metadata["log_tail"].value
    assert failure.user_failure_data.metadata["guardrail_blocked"].value is True
    # Dagster does not start a step whose upstream failed (no STEP_START, nothing materialized)
    assert not [e for e in result.all_events if e.step_key == "upscaled_videos"]
    assert result.asset_materializations_for_node("upscaled_videos") == []
    assert our_containers(docker_client, BLOCKED) == []
    assert not project.upscaled_dir(BLOCKED).exists()


# --------------------------------------------------------------------------- host level


def _job(
    project: ProjectLayout, prompt: str = PROMPT, num_gpus: int = 1, *, preview: bool = False, label: str | None = None
) -> InferenceJob:
    """A generation job as a model backend would describe it: Cosmos-Transfer1's (the checkout's stand-in
    transfer.py, GPUs, checkpoints), or with ``preview`` the preview backend's (its program staged with the
    job, no GPU, no checkpoints)."""
    run_id = f"test_{uuid.uuid4().hex[:8]}"
    spec_remote = f"inputs/prompts/{prompt}.json"
    output = f"outputs/{prompt}/{run_id}"
    inputs = [StagedFile(local=project.prompt_file(prompt), remote=spec_remote)]
    for video in sorted(project.shot_videos_dir(SHOT).glob("*.mp4")):
        inputs.append(StagedFile(local=video, remote=f"inputs/videos/{SHOT}/{video.name}"))
    entry = PROGRAM_REMOTE if preview else ENTRY_POINT
    if preview:
        inputs.insert(0, StagedFile(local=PROGRAM_LOCAL, remote=PROGRAM_REMOTE))
    launcher = (
        ("python3",) if num_gpus == 1 else ("torchrun", f"--nproc_per_node={num_gpus}", "--nnodes=1", "--node_rank=0")
    )
    invocation = Invocation(
        model="preview" if preview else "cosmos-transfer1",
        argv=(
            *launcher,
            entry,
            "--controlnet_specs",
            spec_remote,
            "--video_save_folder",
            output,
            "--num_gpus",
            str(num_gpus),
        ),
        entry_point=entry,
        output_folder=output,
        num_gpus=num_gpus,
        needs_gpu=not preview,
        checkpoints=() if preview else SEED_CHECKPOINTS,
        guardrail_marker="GUARDRAIL BLOCKED",
    )
    return InferenceJob(run_id=run_id, stage="generate", prompt=label or prompt, invocation=invocation, inputs=inputs)


def machine_of(host: SshGpuHost) -> SshHost:
    machine = host.machine()
    assert isinstance(machine, SshHost)
    return machine


def test_unknown_host_key_is_refused_with_how_to_trust_it_and_tofu_records_it(
    sshd, remote: FakeRemote, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostNotReadyError) as refused:
        machine_of(make_host(sshd, remote, known_hosts=str(empty))).facts()
    assert "not in" in str(refused.value) and "ssh-keyscan" in str(refused.value)
    assert "trust_on_first_use" in str(refused.value)

    tofu = make_host(sshd, remote, known_hosts=str(empty), trust_on_first_use=True)
    assert machine_of(tofu).facts().remote_dir == str(remote.remote_dir)
    tofu.close()
    assert sshd.host_pubkey.split()[1] in empty.read_text()
    known = make_host(sshd, remote, known_hosts=str(empty))
    machine_of(known).facts()  # now known: no TOFU needed
    known.close()


def test_preflight_names_too_few_gpus_and_a_missing_checkpoint(
    sshd, remote: FakeRemote, project: ProjectLayout, fake_gpu_bin
) -> None:
    host = machine_of(make_host(sshd, remote))
    lines: list[str] = []
    with pytest.raises(HostNotReadyError, match=r"2 usable GPU\(s\).*needs 4"):
        host.preflight(_job(project, num_gpus=4), lines.append)
    set_fake_gpu_count(fake_gpu_bin.bin_dir, 0)
    try:
        with pytest.raises(HostNotReadyError, match=r"0 usable GPU\(s\).*No devices were found.*needs 1"):
            host.preflight(_job(project), lines.append)
    finally:
        set_fake_gpu_count(fake_gpu_bin.bin_dir, fake_gpu_bin.gpus)

    edge = remote.checkpoints / "nvidia/Cosmos-Transfer1-7B/edge_control.pt"
    edge.rename(edge.with_name("moved.pt"))
    try:
        with pytest.raises(HostNotReadyError, match=r"missing.*\n.*nvidia/Cosmos-Transfer1-7B/edge_control\.pt"):
            host.preflight(_job(project), lines.append)
    finally:
        edge.with_name("moved.pt").rename(edge)
    host.preflight(_job(project), lines.append)  # everything back: ready
    host.close()


def test_cancelling_the_step_stops_and_removes_the_container(
    sshd, remote: FakeRemote, project: ProjectLayout, docker_client
) -> None:
    host = machine_of(make_host(sshd, remote, container_env={"COSMOS_PREVIEW_STEP_SECONDS": STEP_SECONDS}))
    job = _job(project)
    host.preflight(job, print)
    host.upload(job.inputs, print)
    name = host.docker_settings(job).container_name

    def interrupt_on_step_3(line: str) -> None:
        if "step 3/" in line:
            assert docker_client.containers.get(name).status == "running"
            raise dg.DagsterExecutionInterruptedError()  # what Dagster raises into a cancelled step

    with pytest.raises(dg.DagsterExecutionInterruptedError):
        host.run(job, interrupt_on_step_3)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(name)
    host.close()


def test_a_retry_of_the_same_run_attaches_to_its_container_instead_of_starting_another(
    sshd, remote: FakeRemote, project: ProjectLayout, docker_client
) -> None:
    host = machine_of(make_host(sshd, remote))
    job = _job(project)
    host.preflight(job, print)
    host.upload(job.inputs, print)
    settings = host.docker_settings(job)
    started = time.time()
    assert host.docker.start(settings, host.command_for(job), print) is False  # an earlier attempt started it
    lines: list[str] = []
    outcome = host.run(job, lines.append)  # the retry: same run, same container name
    assert outcome.exit_code == 0 and outcome.container["attached_to_existing"] is True
    assert any("already exists" in line for line in lines)
    assert any("saved outputs/" in line for line in lines)  # the log was read from the start
    assert container_starts(docker_client, started, PROMPT, "generate") == [settings.container_name]
    assert (remote.remote_dir / job.output_folder / "output.mp4").exists()
    host.close()


def test_cli_command_prints_what_the_ssh_host_would_run(
    sshd, remote: FakeRemote, project: ProjectLayout, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`cosmos-assets command` is a dry run of SshGpuHost.command_for: real uid:gid and paths, nothing started."""
    from cosmos_assets.cli import main as cli_main

    env = {
        "COSMOS_PROJECT_ROOT": str(project.root),
        "COSMOS_HOST": "ssh",
        "REMOTE_HOST": sshd.host,
        "REMOTE_PORT": str(sshd.port),
        "REMOTE_USER": sshd.user,
        "SSH_KEY": str(sshd.key_path),
        "COSMOS_KNOWN_HOSTS": str(sshd.known_hosts),
        "REMOTE_DIR": str(remote.remote_dir),
        "DOCKER_IMAGE": remote.image,
        "NUM_GPU": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli_main(["command", str(project.prompt_file(PROMPT))]) == 0
    out = capsys.readouterr().out
    assert f"-u {OWNER_UID}:{OWNER_GID}" in out
    assert f"-v {remote.remote_dir}:/workspace" in out and "--ipc=host" in out and "--gpus all" in out
    assert "torchrun --nproc_per_node=2" in out and f"--controlnet_specs inputs/prompts/{PROMPT}.json" in out
    assert SECRET not in out and "-e HF_TOKEN " in out


def test_the_preview_backend_runs_through_the_ssh_host_as_a_dry_run_of_a_new_host(
    sshd, test_image: str, project: ProjectLayout, docker_client, tmp_path: Path
) -> None:
    """A fresh host with only a Dockerfile: no checkout, no checkpoints, no GPU needed. The preview program is
    staged with the job; upload, image build, container, live logs and the verified download all run."""
    base = Path(tempfile.mkdtemp(prefix="cosmos-dry-run-", dir="/tmp"))
    base.chmod(0o755)
    remote_dir = base / "new-host"
    remote_dir.mkdir()
    (remote_dir / "Dockerfile").write_text(
        'FROM cosmos-test-base:latest\nLABEL org.cosmos-assets.test="dry run"\nWORKDIR /workspace\n'
    )
    _chown_tree(remote_dir, OWNER_UID, OWNER_GID)
    image = f"cosmos-dry-run-test:{uuid.uuid4().hex[:8]}"
    host = make_host(
        sshd,
        FakeRemote(
            base=base,
            remote_dir=remote_dir,
            checkpoints=base / "checkpoints",
            image=image,
            no_ssh_config=base / "no-ssh-config",
        ),
        model="preview",
    )
    assert host.model == "preview" and host.docker_gpus == "all"  # the job, not the host, says no GPU
    machine = machine_of(host)
    job = _job(project, preview=True, label="dry_run")
    fetched = tmp_path / "fetched"
    lines: list[str] = []
    try:
        machine.preflight(job, lines.append)
        upload = machine.upload(job.inputs, lines.append)
        command = machine.command_for(job)
        outcome = machine.run(job, lines.append)
        machine.download(job.output_folder, fetched, lines.append)
    finally:
        machine.close()
        shutil.rmtree(base, ignore_errors=True)
    assert docker_client.images.get(image).labels.get("org.cosmos-assets.test") == "dry run"
    assert any(f"built {image}" in line for line in lines) and any("[docker build]" in line for line in lines)
    assert any("needs no GPU" in line for line in lines) and any("no GPU needed" in line for line in lines)
    assert upload.files_sent == len(job.inputs) and upload.bytes_sent > 0
    assert "--gpus" not in command and command[command.index(image) + 1 :] == list(job.invocation.argv)
    assert outcome.exit_code == 0 and outcome.container["gpus"] == "none" and not outcome.guardrail_blocked
    assert any("[preview]" in line for line in lines) and any("started container" in line for line in lines)
    assert any(line.startswith("[transfer] upload") for line in lines)
    assert any(line.startswith("[transfer] download") for line in lines)
    assert probe_video(fetched / "output.mp4").frames == 8
    assert our_containers(docker_client, "dry_run") == []
    assert not any(SECRET in line for line in lines) and SECRET not in " ".join(command)


def test_cosmos_model_preview_runs_the_whole_generation_on_the_ssh_host_through_dagster(
    sshd, test_image: str, project: ProjectLayout, instance: dg.DagsterInstance, docker_client
) -> None:
    """COSMOS_MODEL=preview with COSMOS_HOST=ssh: the real runner, record and metadata, on a host that has only a
    Dockerfile. Labelled a preview everywhere; no GPU is asked for or counted."""
    from cosmos_assets.defs.resources import gpu_host_from_settings
    from cosmos_assets.settings import Settings

    base, remote_dir = dockerfile_only_host("cosmos-preview-host-", folder="new-host")
    image = f"cosmos-preview-host-test:{uuid.uuid4().hex[:8]}"
    chosen = gpu_host_from_settings(
        Settings.from_env(
            {"COSMOS_HOST": "ssh", "COSMOS_MODEL": "preview", "REMOTE_HOST": sshd.host, "DOCKER_IMAGE": image}
        )
    )
    assert chosen.model == "preview"  # one setting picks the model, whatever the host
    host = make_host(
        sshd,
        FakeRemote(
            base=base,
            remote_dir=remote_dir,
            checkpoints=base / "checkpoints",
            image=image,
            no_ssh_config=base / "no-ssh-config",
        ),
        model=chosen.model,
    )
    try:
        result = materialize(project, instance, host, ["generated_videos"])
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        used = json.loads((project.output_dir(PROMPT) / "spec_used.json").read_text())
        remote_out = remote_dir / used["video_save_folder"]
        assert (remote_out / "output.mp4").stat().st_uid == OWNER_UID  # the container ran as the folder's owner
    finally:
        host.close()
        shutil.rmtree(base, ignore_errors=True)
    assert used["backend"] == "preview" and used["preview"] is True and used["container"]["runtime"] == "docker"
    assert "--gpus" not in used["command"] and ".cosmos_assets/preview_model.py" in used["command"]
    assert used["container"]["user"] == f"{OWNER_UID}:{OWNER_GID}"
    metadata = result.asset_materializations_for_node("generated_videos")[0].metadata
    assert "not the model" in metadata["backend"].value and metadata["gpu_seconds"].value == 0.0
    assert metadata["host"].value == host.label
    run_log = (project.output_dir(PROMPT) / "run.log").read_text()
    assert "[preview]" in run_log and "started container" in run_log and f"built {image}" in run_log
    assert probe_video(project.output_dir(PROMPT) / "output.mp4").frames == 8
    assert our_containers(docker_client, PROMPT) == []
    no_secret_in(project.output_dir(PROMPT) / "run.log", project.output_dir(PROMPT) / "spec_used.json")


@pytest.mark.parametrize("alias", [None, "outputs"], ids=["remote-dir-is-the-project", "symlink-into-its-outputs"])
def test_a_remote_dir_sharing_the_project_folder_is_refused_at_preflight(
    sshd, remote: FakeRemote, project: ProjectLayout, instance: dg.DagsterInstance, docker_client, alias: str | None
) -> None:
    """The sshd runs on this machine: a REMOTE_DIR naming the project is what an NFS-shared project looks like from
    the host. Through a symlink the host's path differs from ours and still reaches the project's folders."""
    remote_dir = project.root
    if alias is not None:
        link = remote.base / f"shared-{alias}"
        link.symlink_to(project.root / alias)
        remote_dir = link / "cosmos-transfer1"
    prompt = project.prompt_file(PROMPT)
    before = prompt.read_bytes()
    host = make_host(sshd, remote, remote_dir=str(remote_dir))
    since = time.time()
    result = materialize(project, instance, host, ["generated_videos"], force=True)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    folder = "outputs/" if alias else "inputs/"
    assert description.startswith(
        f"{host.label}: the model root {remote_dir}, a folder shared with this computer, "
        f"reaches the project's own {folder} folder ({project.root / folder})"
    )
    assert "Fix: set REMOTE_DIR (in a pool file: the host's remote_dir) to a folder of its own" in description
    assert failure.step_failure_data.user_failure_data.metadata["cause"].value == "host_not_ready"
    assert prompt.read_bytes() == before
    assert not (project.outputs_dir / "cosmos-transfer1").exists()  # nothing was staged into the project
    assert not list(project.root.rglob(".cosmos-assets-overlap-*"))  # the markers are removed
    assert container_starts(docker_client, since, PROMPT, "generate") == []
    host.close()
