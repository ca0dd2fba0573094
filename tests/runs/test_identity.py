"""runs/identity.py and the host's refs/main reader: the checkpoint revisions a run resolved, and a pin held or refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cosmos_assets.machines.docker_engine import DockerUnreachableError
from cosmos_assets.machines.host_facts import HostFacts, read_revisions
from cosmos_assets.machines.job import (
    HostNotReadyError,
    HostUnreachableError,
    InferenceJob,
    Invocation,
    LogLine,
    RunOutcome,
    StagedFile,
)
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.causes import retryable
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.identity import pin_problem, program_sha256
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_generation
from tests.project_factory import make_project

PREVIEW = backend_named("preview")
A, B = "a" * 40, "0123456789abcdef0123456789abcdef01234567"


class LocalShell:
    """Runs the argv here, as the host would (the reader is a POSIX sh script)."""

    label = "ssh@gpu"

    def exec(self, argv: list[str]) -> tuple[int, str, str]:
        done = subprocess.run(argv, capture_output=True, text=True)
        return done.returncode, done.stdout, done.stderr


def test_refs_main_is_read_for_each_repository_and_odd_files_are_left_out(tmp_path: Path) -> None:
    facts = HostFacts(
        home="/h", remote_dir=str(tmp_path / "r"), checkpoint_dir=str(tmp_path), uid=1, gid=1, user_source="t"
    )
    for name, text in (("nano", A), ("edge", "not a commit\n"), ("super", B + "\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "main").write_text(text)
    files = {
        "nvidia/Cosmos3-Nano": "nano/main",
        "nvidia/Cosmos3-Edge": "edge/main",
        "gone": "gone/main",
        "nvidia/Cosmos3-Super": "super/main",
    }
    assert read_revisions(LocalShell(), facts, files) == {"nvidia/Cosmos3-Nano": A, "nvidia/Cosmos3-Super": B}  # type: ignore[arg-type]
    assert read_revisions(LocalShell(), facts, {}) == {}  # type: ignore[arg-type]


def test_a_pin_holds_only_where_the_cache_resolves_to_it() -> None:
    invocation = Invocation(
        model="cosmos3",
        argv=("python",),
        entry_point="x.py",
        output_folder="outputs/p/r",
        pinned_revisions={"nvidia/Cosmos3-Nano": A},
    )
    job = InferenceJob(run_id="r", stage="generate", prompt="p", invocation=invocation, inputs=[])
    assert pin_problem(job, {"nvidia/Cosmos3-Nano": A}, "ssh@gpu") is None
    moved = pin_problem(job, {"nvidia/Cosmos3-Nano": B}, "ssh@gpu")
    assert (
        moved is not None
        and f"pins nvidia/Cosmos3-Nano at {A}" in moved
        and f"on ssh@gpu resolves main to {B}" in moved
    )
    assert "has no readable refs/main" in (pin_problem(job, {}, "ssh@gpu") or "")


def test_the_program_hash_follows_content_and_name(tmp_path: Path) -> None:
    program = tmp_path / "p.py"
    program.write_text("print(1)\n")
    first = program_sha256([StagedFile(local=program, remote=".cosmos_assets/p.py")])
    assert program_sha256([]) is None and first is not None
    assert program_sha256([StagedFile(local=program, remote=".cosmos_assets/q.py")]) != first
    program.write_text("print(2)\n")
    assert program_sha256([StagedFile(local=program, remote=".cosmos_assets/p.py")]) != first


class ImageHost(LocalMachine):
    """The preview program on this machine, as if in an image whose ID the host reports, or cannot report now."""

    image = "cosmos:latest"

    def __init__(self, root: Path) -> None:
        super().__init__(root, label="ssh@gpu")
        self.answer: str | HostNotReadyError = "sha256:" + "0a" * 32
        self.runs = 0

    def image_id(self) -> str | None:
        if isinstance(self.answer, HostNotReadyError):
            raise self.answer
        return self.answer

    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        self.runs += 1
        return super().run(job, log)


def test_an_image_id_that_cannot_be_read_once_never_makes_finished_work_run_again(tmp_path: Path) -> None:
    """Issue 20 review: an unknown ID was None, left out of the inputs digest, so a done prompt looked new (a GPU run,
    its outputs moved aside). Now the attempt fails on record, retryable, and nothing runs or moves."""
    layout = make_project(tmp_path / "project")
    host = ImageHost(tmp_path / "host")
    done = run_generation(layout, host, PREVIEW, "tiny_prompt", log=lambda _: None)
    assert done.record.image_id == host.answer and host.runs == 1
    before = {p.name: p.read_bytes() for p in done.output_dir.iterdir() if p.is_file()}
    for error in (
        HostUnreachableError("the ID of image cosmos:latest could not be read on ssh@gpu (LinkDropped)"),
        DockerUnreachableError("docker is not reachable on ssh@gpu (Cannot connect to the Docker daemon)"),
    ):
        host.answer = error
        with pytest.raises(type(error)):
            run_generation(layout, host, PREVIEW, "tiny_prompt", log=lambda _: None)
        failed = RunStore(layout.runs_dir).all()[-1]
        assert failed.state == "failed" and retryable(failed.cause or "") and not failed.detached
        assert (layout.outputs_dir / ".failed" / "tiny_prompt" / failed.run_id / "run.log").read_text().count(
            "the image's ID could not be read"
        ) == 1
        assert read_history(layout.history_log)[-1].run_id == failed.run_id
    assert host.runs == 1 and {p.name: p.read_bytes() for p in done.output_dir.iterdir() if p.is_file()} == before
    assert not (layout.previous_outputs_dir / "tiny_prompt").exists()
    host.answer = done.record.image_id  # the host answers again: the same work, skipped
    again = run_generation(layout, host, PREVIEW, "tiny_prompt", log=lambda _: None)
    assert again.skipped and again.record.run_id == done.record.run_id and host.runs == 1
