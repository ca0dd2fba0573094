"""LocalMachine: this computer as a machine (a plain process in a local model folder)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, Invocation, StagedFile
from cosmos_assets.machines.local import LocalMachine

PROGRAM = '''\
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
'''


def job(tmp_path: Path, *flags: str) -> InferenceJob:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    invocation = Invocation(model="preview", argv=("python3", "tools/program.py", "--out", "outputs/p/r1", *flags),
                            entry_point="tools/program.py", output_folder="outputs/p/r1", needs_gpu=False,
                            env={"MODEL_SETTING": "on"}, guardrail_marker="GUARDRAIL BLOCKED")  # fmt: skip
    return InferenceJob(run_id="r1", stage="generate", prompt="p", invocation=invocation,
                        inputs=[StagedFile(local=program, remote="tools/program.py")])  # fmt: skip


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
