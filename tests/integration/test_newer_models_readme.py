"""The README's commands for the newer models, run as the README writes them, against the real sshd + dockerd.

The commands are read from README.md itself (the Models section's `COSMOS_MODEL=... dagster asset materialize ...`
lines and the batching section's `--partition-range` command) and run by a shell from the project folder with the
virtualenv's bin on the PATH and `DAGSTER_HOME` exported, as the README's command-line steps say. The host holds the
three checkouts of tests/integration/test_models_on_host.py (stand-ins at the real entry points, images built by the
preflight). Each command must exit 0 with every output there and every asset check passed: the check behind
`generated_videos` reads the spec of the model that ran (a Transfer2.5 or Cosmos 3 spec is not a Transfer1 one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media import probe_video
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from tests.integration.test_ssh_host import OWNER_GID, OWNER_UID, _chown_tree, _write_checkout, _write_checkpoints
from tests.project_factory import make_project
from tests.standins.install import install_checkout

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
SECRET = "hf_test_" + uuid.uuid4().hex
SHOT = "readme_shot"
T25, C3 = "cosmos-transfer2.5", "cosmos3"
MODEL_VIDEO = {T25: "{prompt}.mp4", C3: "{prompt}/vision.mp4"}
GENERATED_SIZE = {T25: (96, 64), C3: (1104, 832)}  # the input's size; the 720 tier's 4,3 bucket (96x64 is nearest 4:3)
BATCH = ("street_a", "street_b")


def readme_model_commands() -> dict[str, str]:
    """model -> the README's command line for it (continuation lines joined), from the Models section."""
    section = README[README.index("## Models") : README.index("## A real GPU host")]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's Models section has no bash block"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    commands = {
        re.match(r"COSMOS_MODEL=(\S+) ", line).group(1): " ".join(line.split()) for line in lines if line.strip()
    }
    assert set(commands) == {T25, C3}, commands
    return commands


def readme_batching_command() -> str:
    section = README[README.index("## Several prompts at once") :]
    found = re.search(
        r"`(dagster asset materialize -m\s+cosmos_assets\.definitions[^`]*--partition-range A\.\.\.C)`", section
    )
    assert found, "the README's batching section has no --partition-range command"
    return " ".join(found.group(1).split())


@pytest.fixture(scope="module")
def remote(test_image: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cosmos-readme-", dir="/tmp"))
    base.chmod(0o755)
    _write_checkout(base / "cosmos-transfer1")
    install_checkout(T25, base / "cosmos-transfer2.5")
    install_checkout(C3, base / "cosmos-framework")
    _write_checkpoints(base / "checkpoints")
    (base / "checkpoints" / "cache" / "huggingface" / "hub").mkdir(parents=True)  # a warm cache: 150 GB not needed
    for name in ("cosmos-transfer1", "cosmos-transfer2.5", "cosmos-framework", "checkpoints"):
        _chown_tree(base / name, OWNER_UID, OWNER_GID)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ProjectLayout:
    root = tmp_path_factory.mktemp("readme-project")
    layout = make_project(root, shot=SHOT, prompt="one_t25")
    for prompt in ("one_c3", *BATCH):
        write_spec(new_prompt_spec(SHOT, f"a quiet street at dusk, {prompt}"), layout.prompt_file(prompt))
    (root / "dagster_home").mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    return layout


def environment(sshd, remote: Path, project: ProjectLayout) -> dict[str, str]:
    """The deployment's settings as an artist exports them (README: Settings), and the virtualenv on the PATH."""
    tag = remote.name.rsplit("-", 1)[-1].lower()
    home = project.root / "home"
    home.mkdir(exist_ok=True)  # no ~/.ssh/config of the machine's user
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "DAGSTER_HOME": str(project.root / "dagster_home"),
        "COSMOS_PROJECT_ROOT": str(project.root),
        "COSMOS_HOST": "ssh",
        "HF_TOKEN": SECRET,
        "REMOTE_HOST": sshd.host,
        "REMOTE_PORT": str(sshd.port),
        "REMOTE_USER": sshd.user,
        "SSH_KEY": str(sshd.key_path),
        "COSMOS_KNOWN_HOSTS": str(sshd.known_hosts),
        "COSMOS_MIN_FREE_GB": "1",
        "REMOTE_DIR": str(remote / "cosmos-transfer1"),
        "DOCKER_IMAGE": f"cosmos-transfer1-readme:{tag}",
        "REMOTE_DIR_TRANSFER2_5": str(remote / "cosmos-transfer2.5"),
        "DOCKER_IMAGE_TRANSFER2_5": f"cosmos-transfer2.5-readme:{tag}",
        "REMOTE_DIR_COSMOS3": str(remote / "cosmos-framework"),
        "DOCKER_IMAGE_COSMOS3": f"cosmos-framework-readme:{tag}",
    }


def shell(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=1200)


def check_evaluations(project: ProjectLayout, prompt: str) -> dict[str, bool]:
    """check name -> passed, of the latest evaluation of each check of the prompt's generated and upscaled videos."""
    from cosmos_assets.defs.checks import ALL_CHECKS

    found: dict[str, bool] = {}
    with dg.DagsterInstance.from_config(str(project.root / "dagster_home")) as instance:
        for checks in ALL_CHECKS:
            for key in checks.check_keys:
                if key.asset_key.path[0] not in ("generated_videos", "upscaled_videos"):
                    continue
                for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=20):
                    evaluation = record.event.dagster_event.event_specific_data if record.event else None
                    if hasattr(evaluation, "passed") and getattr(evaluation, "partition", None) == prompt:
                        found[key.name] = evaluation.passed
                        break
    return found


def check_outputs(project: ProjectLayout, prompt: str, model: str) -> dict:
    generated = project.output_dir(prompt)
    assert (generated / MODEL_VIDEO[model].format(prompt=prompt)).is_file(), sorted(
        p.name for p in generated.rglob("*")
    )
    video = probe_video(generated / "output.mp4")
    assert (video.frames, (video.width, video.height)) == (8, GENERATED_SIZE[model])
    used = json.loads((generated / "spec_used.json").read_text())
    assert used["backend"] == model and SECRET not in (generated / "run.log").read_text()
    return used


def test_the_readmes_newer_model_commands_exit_0_with_every_output_and_check(
    sshd, remote: Path, project: ProjectLayout
) -> None:
    env = environment(sshd, remote, project)
    registered = shell("cosmos-assets register", env, project.root)
    assert registered.returncode == 0, registered.stderr
    for model, prompt in ((T25, "one_t25"), (C3, "one_c3")):
        command = readme_model_commands()[model].replace("PROMPT", prompt)
        done = shell(command, env, project.root)
        assert done.returncode == 0, f"{command}\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
        check_outputs(project, prompt, model)
        small = probe_video(project.output_dir(prompt) / "output.mp4")
        big = probe_video(project.upscaled_dir(prompt) / "output.mp4")
        assert (big.frames, big.width, big.height) == (small.frames, 3 * small.width, 3 * small.height)
        upscaled = json.loads((project.upscaled_dir(prompt) / "spec_used.json").read_text())
        assert upscaled["backend"] == "cosmos-transfer1"  # the 4K upscaler whichever model generated
        checks = check_evaluations(project, prompt)
        assert "generated_frames_and_bucket" in checks and "upscale_is_3x" in checks, checks
        assert all(checks.values()), checks
        print(f"\n[measure] README command for {model}: exit 0, checks {sorted(checks)}")


def test_the_readmes_batching_command_over_a_range_runs_the_prompts_in_one_invocation(
    sshd, remote: Path, project: ProjectLayout
) -> None:
    """A range run yields no output of its own (each prompt is its own materialization event), so Dagster runs no
    check step for it: the check's rule is applied here to each prompt's outputs and spec_used.json instead."""
    from cosmos_assets.runs.output_rules import check_generated_run, read_spec_used

    env = {**environment(sshd, remote, project), "COSMOS_MODEL": T25}
    assert shell("cosmos-assets register", env, project.root).returncode == 0
    command = readme_batching_command().replace("A...C", f"{BATCH[0]}...{BATCH[-1]}")
    done = shell(command, env, project.root)
    assert done.returncode == 0, f"{command}\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    batches = set()
    for prompt in BATCH:
        used = check_outputs(project, prompt, T25)
        batches.add(used["batch"]["batch_id"])
        folder = project.output_dir(prompt)
        report = check_generated_run(folder / "output.mp4", read_spec_used(folder), project.root)
        assert report.passed, report.problems
    assert len(batches) == 1  # one model load for the range
    with dg.DagsterInstance.from_config(str(project.root / "dagster_home")) as instance:
        assert set(BATCH) <= instance.get_materialized_partitions(dg.AssetKey("generated_videos"))
