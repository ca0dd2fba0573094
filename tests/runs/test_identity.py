"""runs/identity.py and the host's refs/main reader: the checkpoint revisions a run resolved, and a pin held or refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cosmos_assets.machines.host_facts import HostFacts, read_revisions
from cosmos_assets.machines.job import InferenceJob, Invocation, StagedFile
from cosmos_assets.runs.identity import pin_problem, program_sha256

A, B = "a" * 40, "0123456789abcdef0123456789abcdef01234567"


class LocalShell:
    """Runs the argv here, as the host would (the reader is a POSIX sh script)."""

    label = "ssh@gpu"

    def exec(self, argv: list[str]) -> tuple[int, str, str]:
        done = subprocess.run(argv, capture_output=True, text=True)
        return done.returncode, done.stdout, done.stderr


def test_refs_main_is_read_for_each_repository_and_odd_files_are_left_out(tmp_path: Path) -> None:
    facts = HostFacts(home="/h", remote_dir=str(tmp_path / "r"), checkpoint_dir=str(tmp_path), uid=1, gid=1, user_source="t")
    for name, text in (("nano", A), ("edge", "not a commit\n"), ("super", B + "\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "main").write_text(text)
    files = {"nvidia/Cosmos3-Nano": "nano/main", "nvidia/Cosmos3-Edge": "edge/main", "gone": "gone/main",
             "nvidia/Cosmos3-Super": "super/main"}  # fmt: skip
    assert read_revisions(LocalShell(), facts, files) == {"nvidia/Cosmos3-Nano": A, "nvidia/Cosmos3-Super": B}  # type: ignore[arg-type]
    assert read_revisions(LocalShell(), facts, {}) == {}  # type: ignore[arg-type]


def test_a_pin_holds_only_where_the_cache_resolves_to_it() -> None:
    invocation = Invocation(model="cosmos3", argv=("python",), entry_point="x.py", output_folder="outputs/p/r",
                            pinned_revisions={"nvidia/Cosmos3-Nano": A})  # fmt: skip
    job = InferenceJob(run_id="r", stage="generate", prompt="p", invocation=invocation, inputs=[])
    assert pin_problem(job, {"nvidia/Cosmos3-Nano": A}, "ssh@gpu") is None
    moved = pin_problem(job, {"nvidia/Cosmos3-Nano": B}, "ssh@gpu")
    assert moved is not None and f"pins nvidia/Cosmos3-Nano at {A}" in moved and f"on ssh@gpu resolves main to {B}" in moved
    assert "has no readable refs/main" in (pin_problem(job, {}, "ssh@gpu") or "")


def test_the_program_hash_follows_content_and_name(tmp_path: Path) -> None:
    program = tmp_path / "p.py"
    program.write_text("print(1)\n")
    first = program_sha256([StagedFile(local=program, remote=".cosmos_assets/p.py")])
    assert program_sha256([]) is None and first is not None
    assert program_sha256([StagedFile(local=program, remote=".cosmos_assets/q.py")]) != first
    program.write_text("print(2)\n")
    assert program_sha256([StagedFile(local=program, remote=".cosmos_assets/p.py")]) != first
