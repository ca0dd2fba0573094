"""LocalMachine: this computer as a machine (a plain process in a local model folder)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, Invocation, StagedFile
from cosmos_assets.machines.local import LocalMachine

PROGRAM = """\
import os, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
os.makedirs(out, exist_ok=True)
print("pid", os.getpid(), flush=True)
print("python", sys.executable, flush=True)
print("env", os.environ.get("MODEL_SETTING"), flush=True)
if "--blocked" in sys.argv:
    print("GUARDRAIL BLOCKED: the prompt", flush=True)
    sys.exit(1)
if "--slow" in sys.argv:
    print("step 1", flush=True)
    time.sleep(60)
with open(os.path.join(out, "output.txt"), "w") as f:
    f.write("made in " + os.getcwd())
os.makedirs(os.path.join(out, "sub"))
with open(os.path.join(out, "sub", "deep.bin"), "wb") as f:
    f.write(b"x" * 3000)
"""


def job(tmp_path: Path, *flags: str) -> InferenceJob:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    invocation = Invocation(
        model="preview",
        argv=("python3", "tools/program.py", "--out", "outputs/p/r1", *flags),
        entry_point="tools/program.py",
        output_folder="outputs/p/r1",
        needs_gpu=False,
        env={"MODEL_SETTING": "on"},
        guardrail_marker="GUARDRAIL BLOCKED",
    )
    return InferenceJob(
        run_id="r1",
        stage="generate",
        prompt="p",
        invocation=invocation,
        inputs=[StagedFile(local=program, remote="tools/program.py")],
    )


def test_a_job_runs_as_this_interpreter_in_the_model_folder_and_comes_back_verified(tmp_path: Path) -> None:
    machine = LocalMachine(tmp_path / "root", label="preview@local")
    j = job(tmp_path)
    lines: list[str] = []
    machine.preflight(j, lines.append)
    first = machine.upload(j.inputs, lines.append)
    again = machine.upload(j.inputs, lines.append)
    assert (first.files_sent, again.files_sent, again.files_skipped) == (1, 0, 1)
    assert any(line.startswith("[transfer] upload") for line in lines)
    assert machine.command_for(j) == [sys.executable, "tools/program.py", "--out", "outputs/p/r1"]
    outcome = machine.run(j, lines.append)
    assert outcome.exit_code == 0 and not outcome.guardrail_blocked
    assert f"python {sys.executable}" in outcome.log_tail and "env on" in outcome.log_tail
    assert outcome.environment["MODEL_SETTING"] == "on" and outcome.container["runtime"] == "process"
    fetched = tmp_path / "fetched"
    stats = machine.download("outputs/p/r1", fetched, lines.append)
    assert (fetched / "output.txt").read_text() == f"made in {machine.root}"
    assert (fetched / "sub" / "deep.bin").stat().st_size == 3000 and stats.files_sent == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".fetched")) == []
    with pytest.raises(FileExistsError, match="move it aside"):
        machine.download("outputs/p/r1", fetched, lines.append)
    with pytest.raises(ValueError, match="leaves the model's root"):
        machine.download("../elsewhere", tmp_path / "x", lines.append)


def test_a_guardrail_line_marks_the_outcome(tmp_path: Path) -> None:
    machine = LocalMachine(tmp_path / "root")
    j = job(tmp_path, "--blocked")
    machine.upload(j.inputs, print)
    outcome = machine.run(j, print)
    assert outcome.exit_code == 1 and outcome.guardrail_blocked


def test_cancelling_kills_the_process(tmp_path: Path) -> None:
    machine = LocalMachine(tmp_path / "root")
    j = job(tmp_path, "--slow")
    machine.upload(j.inputs, print)
    pids: list[int] = []

    def cancel_at_step_1(line: str) -> None:
        if line.startswith("pid "):
            pids.append(int(line.split()[1]))
        if line == "step 1":
            raise KeyboardInterrupt  # what a cancelled step sees

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        machine.run(j, cancel_at_step_1)
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_preflight_names_a_missing_program(tmp_path: Path) -> None:
    j = job(tmp_path)
    j = j.model_copy(update={"inputs": []})
    with pytest.raises(HostNotReadyError, match="tools/program.py is missing"):
        LocalMachine(tmp_path / "root").preflight(j, print)


def test_a_symlink_out_of_the_output_folder_is_refused_and_nothing_is_copied(tmp_path: Path) -> None:
    machine = LocalMachine(tmp_path / "root")
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("a file outside the model folder")
    run = tmp_path / "root" / "outputs" / "p" / "run1"
    run.mkdir(parents=True)
    (run / "output.mp4").write_bytes(b"video")
    os.symlink(outside, run / "leak.txt")
    with pytest.raises(OSError, match="symlink to .*outside"):
        machine.download("outputs/p/run1", tmp_path / "fetched", print)
    assert not (tmp_path / "fetched").exists()
    assert not any(p.name.startswith(".fetched.partial") for p in tmp_path.iterdir())


def project_job(project: Path, tmp_path: Path) -> InferenceJob:
    """A job staging a spec and a control video the way the runner does, from a project with its folders."""
    for folder in ("inputs/prompts", "inputs/videos/s", "outputs/.staging/r1", "notes", "art/houdini/renders"):
        (project / folder).mkdir(parents=True, exist_ok=True)
    (project / "inputs/prompts/p.json").write_text('{"prompt": "artist", "cosmos_assets": {"model": "cosmos3"}}')
    (project / "inputs/videos/s/color.mp4").write_bytes(b"video")
    spec = project / "outputs/.staging/r1/spec.json"
    spec.write_text('{"prompt": "translated"}')
    base = job(tmp_path)
    return base.model_copy(
        update={
            "project_root": project,
            "inputs": [
                StagedFile(local=spec, remote="inputs/prompts/p.json"),
                StagedFile(local=project / "inputs/videos/s/color.mp4", remote="inputs/videos/s/color.mp4"),
                *base.inputs,
            ],
        }
    )


@pytest.mark.parametrize(
    "root_of",
    [
        lambda project, tmp: project,  # the project root itself
        lambda project, tmp: _link(tmp / "link-to-project", project),  # a symlink to it
        lambda project, tmp: project / "outputs" / "model",  # inside one of its folders
        lambda project, tmp: (
            _link(tmp / "link-to-outputs", project / "outputs") / "model"
        ),  # inside one, through a link
    ],
    ids=["project-root", "symlink-to-root", "inside-outputs", "symlink-into-outputs"],
)
def test_a_model_root_landing_on_the_projects_folders_is_refused_at_preflight(tmp_path: Path, root_of) -> None:
    project = tmp_path / "project"
    j = project_job(project, tmp_path)
    prompt = (project / "inputs/prompts/p.json").read_bytes()
    machine = LocalMachine(root_of(project, tmp_path), label="preview@local")
    with pytest.raises(HostNotReadyError) as refused:
        machine.preflight(j, print)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("preview@local: the model root ")
    assert "would write inputs/prompts/ there, over the project's files" in message
    assert "Fix: set COSMOS_PREVIEW_DIR (in a pool file: the local host's remote_dir) to a folder of its own" in message
    assert (project / "inputs/prompts/p.json").read_bytes() == prompt


def test_a_model_root_of_its_own_inside_the_project_passes_and_upload_never_writes_into_the_projects_folders(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    j = project_job(project, tmp_path)
    machine = LocalMachine(project / ".preview_host" / "cosmos-transfer1", label="preview@local")  # the default
    machine.preflight(j, print)
    machine.upload(j.inputs, print)
    assert (machine.root / "inputs/prompts/p.json").read_text() == '{"prompt": "translated"}'
    assert "artist" in (project / "inputs/prompts/p.json").read_text()
    # Defence in depth: a model root swapped for a link to the project after the preflight is refused at the write.
    (tmp_path / "swapped").symlink_to(project)
    machine.root = tmp_path / "swapped"
    with pytest.raises(
        HostNotReadyError, match="refusing to stage over .*p.json, a file of the project's inputs/ folder"
    ):
        machine.upload(j.inputs, print)
    assert "artist" in (project / "inputs/prompts/p.json").read_text()


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_project(tmp_path: Path) -> Path:
    """A real project (render, control videos, a prompt whose cosmos_assets block names its model), its DAGSTER_HOME."""
    import json
    import shutil

    from tests.project_factory import make_project

    layout = make_project(tmp_path / "project", shot="tiny_shot", prompt="tiny_prompt")
    data = json.loads(layout.prompt_file("tiny_prompt").read_text())
    layout.prompt_file("tiny_prompt").write_text(json.dumps({**data, "cosmos_assets": {"model": "cosmos3"}}, indent=2))
    (layout.root / "dagster_home").mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", layout.root / "dagster_home" / "dagster.yaml")
    return layout.root


def _cli(project: Path, preview_dir: Path, *argv: str):
    import subprocess

    env = {
        **os.environ,
        "COSMOS_PROJECT_ROOT": str(project),
        "DAGSTER_HOME": str(project / "dagster_home"),
        "COSMOS_HOST": "preview",
        "COSMOS_PREVIEW_DIR": str(preview_dir),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [str(Path(sys.executable).with_name(argv[0])), *argv[1:]],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cosmos_preview_dir_set_to_the_project_root_is_refused_through_the_cli(cli_project: Path) -> None:
    prompt = cli_project / "inputs" / "prompts" / "tiny_prompt.json"
    before = prompt.read_bytes()
    done = _cli(cli_project, cli_project, "cosmos-assets", "generate", "tiny_prompt")
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: tiny_prompt")]
    assert f"the model root {cli_project} reaches the project's own inputs/ folder" in line, done.stderr
    assert "Fix: set COSMOS_PREVIEW_DIR" in line
    assert prompt.read_bytes() == before
    assert not (cli_project / "outputs" / "tiny_prompt").exists()
    assert not list(cli_project.rglob(".cosmos-assets-overlap-*"))


def test_cosmos_preview_dir_a_symlink_to_the_project_is_refused_through_dagster_asset_materialize(
    cli_project: Path,
) -> None:
    link = cli_project.parent / "link-to-project"
    link.symlink_to(cli_project)
    prompt = cli_project / "inputs" / "prompts" / "tiny_prompt.json"
    before = prompt.read_bytes()
    assert _cli(cli_project, link, "cosmos-assets", "register").returncode == 0
    done = _cli(
        cli_project,
        link,
        "dagster",
        "asset",
        "materialize",
        "-m",
        "cosmos_assets.definitions",
        "--select",
        "prompt_inputs,prompt_specs,generated_videos,upscaled_videos",
        "--partition",
        "tiny_prompt",
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"preview@local: the model root {link} reaches the project's own inputs/ folder" in done.stdout + done.stderr
    assert prompt.read_bytes() == before
    assert not (cli_project / "outputs" / "tiny_prompt").exists()
