"""One shot through all three models and the 4K upscale, on the real sshd + private dockerd, through Dagster.

The host holds three checkouts side by side, each with its own image built by the preflight from its Dockerfile:
``cosmos-transfer1/`` (the stand-in transfer.py, a copy of the preview program; also the upscaler),
``cosmos-transfer2.5/`` (``examples/inference.py``) and ``cosmos-framework/`` (``cosmos_framework/scripts/inference.py``),
the stand-ins of tests/standins/ at the real entry points' paths. The model is chosen per run (run config), by the
prompt file's ``cosmos_assets`` block, and the run config wins over the block.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.resources import SshGpuHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media import probe_video
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.runs.record_store import RunStore
from tests.integration.test_ssh_host import OWNER_GID, OWNER_UID, _chown_tree, _write_checkout, _write_checkpoints
from tests.project_factory import make_project
from tests.standins.install import install_checkout

pytestmark = pytest.mark.integration

SECRET = "hf_test_" + uuid.uuid4().hex
PROMPT, SHOT, BLOCKED = "one_shot", "one_shot_render", "blocked_shot"
T25, C3 = "cosmos-transfer2.5", "cosmos3"


@pytest.fixture(scope="module")
def remote(test_image: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cosmos-models-", dir="/tmp"))
    base.chmod(0o755)
    _write_checkout(base / "cosmos-transfer1")
    install_checkout(T25, base / "cosmos-transfer2.5")
    install_checkout(C3, base / "cosmos-framework")
    _write_checkpoints(base / "checkpoints")
    for name in ("cosmos-transfer1", "cosmos-transfer2.5", "cosmos-framework"):
        _chown_tree(base / name, OWNER_UID, OWNER_GID)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def hf_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ProjectLayout:
    root = tmp_path_factory.mktemp("models-project")
    layout = make_project(root, shot=SHOT, prompt=PROMPT)
    blocked = new_prompt_spec(SHOT, "GUARDRAIL_TEST_BLOCK a street").to_json_dict()
    blocked["cosmos_assets"] = {"model": T25}
    layout.prompt_file(BLOCKED).write_text(json.dumps(blocked))
    return layout


def make_host(sshd, base: Path) -> SshGpuHost:
    tag = uuid.uuid4().hex[:8]
    return SshGpuHost(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        ssh_key=str(sshd.key_path),
        known_hosts=str(sshd.known_hosts),
        ssh_config=str(base / "no-ssh-config"),
        remote_dir=str(base / "cosmos-transfer1"),
        docker_image=f"cosmos-transfer1-test:{tag}",
        min_free_gb=1.0,
        hf_token=dg.EnvVar("HF_TOKEN"),
        model_images={T25: f"cosmos-transfer2.5-test:{tag}", C3: f"cosmos-framework-test:{tag}"},
    )


def materialize(
    project: ProjectLayout,
    instance: dg.DagsterInstance,
    host: SshGpuHost,
    selection: list[str],
    model: str | None = None,
    prompt: str = PROMPT,
) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"generated_videos": {"config": {"model": model}}}} if model else None
    return dg.materialize(
        ALL_ASSETS,
        selection=selection,
        partition_key=prompt,
        instance=instance,
        raise_on_error=False,
        run_config=run_config,
        resources={"project": ProjectResource(root=str(project.root)), "gpu_host": host},
    )


def set_prompt_model(project: ProjectLayout, model: str) -> None:
    path = project.prompt_file(PROMPT)
    data = json.loads(path.read_text())
    data["cosmos_assets"] = {"model": model, C3: {"size": "nano"}}
    path.write_text(json.dumps(data))


def check_generation(project: ProjectLayout, base: Path, model: str, model_video: str) -> dict:
    generated = project.output_dir(PROMPT)
    assert (generated / model_video).is_file(), sorted(p.name for p in generated.rglob("*"))
    assert probe_video(generated / "output.mp4").frames == probe_video(generated / model_video).frames == 8
    used = json.loads((generated / "spec_used.json").read_text())
    assert used["backend"] == model and used["prompt_spec"]["prompt"] == "a quiet street at dusk"
    command = used["command"]
    assert f"{base / 'checkpoints' / 'cache' / 'huggingface'}:/cache/huggingface" in command
    assert "HF_HOME=/cache/huggingface" in command and "UV_CACHE_DIR=/cache/uv" in command
    assert ["-u", f"{OWNER_UID}:{OWNER_GID}"] == command[command.index("-u") : command.index("-u") + 2]
    for path in (generated / "spec_used.json", generated / "run.log"):
        assert SECRET not in path.read_text()
    return used


def upscale_and_check(project: ProjectLayout, instance: dg.DagsterInstance, host: SshGpuHost) -> None:
    result = materialize(project, instance, host, ["upscaled_videos"])
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    used = json.loads((project.upscaled_dir(PROMPT) / "spec_used.json").read_text())
    assert used["backend"] == "cosmos-transfer1"  # the 4K upscaler is Transfer1's whichever model generated
    small, big = (
        probe_video(project.output_dir(PROMPT) / "output.mp4"),
        probe_video(project.upscaled_dir(PROMPT) / "output.mp4"),
    )
    assert big.frames == small.frames and (big.width, big.height) == (3 * small.width, 3 * small.height)


def test_one_shot_through_all_three_models_and_the_upscale(sshd, remote: Path, project: ProjectLayout) -> None:
    host = make_host(sshd, remote)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [PROMPT, BLOCKED])

        # Transfer2.5, chosen by the run's config: flat <name>.* outputs, output.mp4 beside them
        result = materialize(project, instance, host, ["generated_videos"], model="transfer2.5")
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        used = check_generation(project, remote, T25, f"{PROMPT}.mp4")
        assert used["spec"]["video_path"] == f"/workspace/inputs/videos/{SHOT}/color.mp4"
        assert isinstance(used["spec"]["depth"]["control_weight"], float) and "cosmos_assets" not in used["spec"]
        command = used["command"]
        assert command[command.index(host.model_images[T25]) + 1 :][:2] == ["python", "examples/inference.py"]
        assert (project.output_dir(PROMPT) / f"{PROMPT}_control_depth.mp4").is_file()
        cache = remote / "checkpoints" / "cache" / "huggingface"
        assert cache.is_dir() and cache.stat().st_uid == OWNER_UID  # made writable for the container's uid
        upscale_and_check(project, instance, host)

        # Cosmos 3, chosen by the prompt file's cosmos_assets block: <name>/vision.mp4 + sample_outputs.json.
        # It wants ~150 GB free for a first download: with a warm (non-empty) cache a small disk is only a warning.
        (cache / "hub").mkdir()
        refs = cache / "hub" / "models--nvidia--Cosmos3-Nano" / "refs"  # what `hf download` leaves: main's commit
        refs.mkdir(parents=True)
        (refs / "main").write_text("0123456789abcdef0123456789abcdef01234567")
        set_prompt_model(project, C3)
        result = materialize(project, instance, host, ["generated_videos"])
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        used = check_generation(project, remote, C3, f"{PROMPT}/vision.mp4")
        assert used["spec"]["model_mode"] == "video2video" and "blur" in used["spec"] and "vis" not in used["spec"]
        assert "Cosmos3-Nano" in used["command"] and used["prompt_spec"]["cosmos_assets"]["model"] == C3
        assert (
            json.loads((project.output_dir(PROMPT) / PROMPT / "sample_outputs.json").read_text())["status"] == "success"
        )
        run_log = (project.output_dir(PROMPT) / "run.log").read_text()
        assert "a first download needs about 150 GB" in run_log or "free for the cosmos3" not in run_log
        # issue 20: the diffusion cache passed explicitly (off by default) and said by the stand-in; the image's ID
        # and the checkpoint revision the host's cache resolved recorded
        assert used["command"][-1] == "--no-diffusion-cache" and "diffusion cache off" in run_log
        record = RunStore(project.runs_dir).load(used["run_id"])
        assert record.settings["diffusion_cache"] is False and (record.image_id or "").startswith("sha256:")
        assert record.checkpoint_revisions == {"nvidia/Cosmos3-Nano": "0123456789abcdef0123456789abcdef01234567"}
        # COSMOS_SERVE=auto: a 720p transfer is past what the serving app waits for (docs/serving.md): one-shot, said why
        assert "[service] one-shot: 720p" in run_log and "300 s" in run_log
        serving = [r.serving for r in RunStore(project.runs_dir).all() if r.model == C3][-1]
        assert serving is not None and serving.mode == "one-shot" and serving.reason.startswith("one-shot: 720p")
        upscale_and_check(project, instance, host)

        # Transfer1: the run's config wins over the prompt file's block; the block is not in transfer.py's spec
        result = materialize(project, instance, host, ["generated_videos", "upscaled_videos"], model="cosmos-transfer1")
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        used = check_generation_t1(project)
        assert "cosmos_assets" not in used["spec"] and "cosmos_assets" in used["prompt_spec"]

        # A Transfer2.5 guardrail block: exit 0, <name>.json and no <name>.mp4 -> guardrail_blocked, no retry
        result = materialize(project, instance, host, ["generated_videos"], prompt=BLOCKED)
        assert not result.success
        failure = [e for e in result.all_events if e.is_step_failure][0].step_failure_data
        assert failure.user_failure_data.metadata["guardrail_blocked"].value is True
        states = {r.prompt: r.state for r in RunStore(project.runs_dir).all() if r.prompt == BLOCKED}
        assert states == {BLOCKED: "guardrail_blocked"}
    host.close()


def check_generation_t1(project: ProjectLayout) -> dict:
    generated = project.output_dir(PROMPT)
    used = json.loads((generated / "spec_used.json").read_text())
    assert used["backend"] == "cosmos-transfer1" and probe_video(generated / "output.mp4").frames == 8
    assert "HF_HOME=/cache/huggingface" not in used["command"]  # Transfer1 reads CHECKPOINT_DIR, no caches
    return used
