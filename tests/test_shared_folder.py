"""A studio's shared project folder: what a run writes, another uid in the group reads, and the reverse.

The project folder is owned by a shared group with the setgid bit; everyone works under umask 002. The runs are
the real runner on the preview backend, in this (root) process under umask 002. The other people are real uids
with no privilege left: a fresh interpreter started as root loads the package, then drops to the uid and its groups
for good (the interpreter lives under /root, 0700: a plain uid could not start it) and does the steps asked. Artist B
reads every file the runs wrote, writes a prompt file with ``cosmos-assets new-prompt``, appends a run's history line
to the shared log and moves a run folder aside as a re-run does; the run worker (a third uid) plans a run from B's
prompt file, the step of a run that reads it. The SFTP download test checks the host's file modes are not copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import pkgutil
import shutil
import stat
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cosmos_assets
from cosmos_assets.cli import main as cli_main
from cosmos_assets.files import copy_verified, move_aside
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.media.recipe import read_recipe
from cosmos_assets.models.base import OUTPUT_VIDEO, link_output
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.history import HistoryRecord, append_history, read_history
from cosmos_assets.runs.plan import plan_generation
from cosmos_assets.runs.runner import run_generation, run_upscale
from cosmos_assets.runs.wedge_comparison import build_comparison
from tests.project_factory import make_project
from tests.test_files import umask

REPO = Path(__file__).resolve().parents[1]
SHARED_GID = 23450  # the studio's group, owner of the project folder
ARTIST_B = 23451  # a second artist (primary group of their own, member of the shared group)
WORKER = 23452  # the run worker's uid (the same)
STUDIO_UMASK = 0o002
FILE_MODE, FOLDER_MODE = 0o664, 0o2775  # what umask 002 gives, setgid inherited from the project folder

PREVIEW = backend_named("preview")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="runs as root to become other uids (os.setuid); CI runs as root"
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- another uid, no privilege


def as_user(uid: int, *steps: tuple[str, dict[str, Any]], env: dict[str, str] | None = None) -> list[Any]:
    """Do ``steps`` (each an op of OPS and its arguments) as ``uid`` (its own group and the shared group) under umask
    002, in one process; what each answered."""
    request = {"uid": uid, "steps": steps}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tests.test_shared_folder as t; t.child_main(sys.argv[1])",
            json.dumps(request),
        ],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": "/nonexistent",
            "PYTHONPATH": str(REPO),
            "PYTHONDONTWRITEBYTECODE": "1",
            **(env or {}),
        },
    )
    assert done.returncode == 0, f"{[op for op, _ in steps]} as uid {uid} failed:\n{done.stderr[-3000:]}"
    answer = json.loads(done.stdout.splitlines()[-1])
    assert (answer["uid"], answer["euid"], answer["gid"], answer["groups"]) == (uid, uid, uid, [SHARED_GID, uid])
    return answer["results"]


def _read(paths: list[str]) -> dict[str, str]:
    """sha256 of each file, the sorted names of each folder, or the error."""
    seen: dict[str, str] = {}
    for path in paths:
        try:
            if os.path.isdir(path):
                seen[path] = "folder: " + ",".join(sorted(os.listdir(path)))
            else:
                with open(path, "rb") as handle:
                    seen[path] = hashlib.sha256(handle.read()).hexdigest()
        except OSError as error:
            seen[path] = f"error: {error}"
    return seen


def _new_prompt(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli_main(argv)
    return f"{code} {out.getvalue().strip()}"


def _plan(root: str, prompt: str) -> str:
    try:
        plan = plan_generation(ProjectLayout(root=Path(root)), PREVIEW, prompt, run_id="20260101_000000_worker")
    except Exception as error:  # noqa: BLE001 - the answer names it
        return f"error: {error}"
    return f"planned {plan.shot}: {plan.spec.prompt}"


def _append_history(log: str, line: str) -> str:
    append_history(Path(log), HistoryRecord.model_validate_json(line))
    return "appended"


def _move_aside(folder: str, previous: str, run_id: str) -> str:
    return str(move_aside(Path(folder), Path(previous), run_id))


OPS = {"read": _read, "new_prompt": _new_prompt, "plan": _plan, "append_history": _append_history,
       "move_aside": _move_aside}  # fmt: skip


def child_main(request_json: str) -> None:
    """The body of :func:`as_user`'s process: load everything, drop to the uid for good, do the steps, answer."""
    request = json.loads(request_json)
    uid = request["uid"]
    # The uid may not read the interpreter's own library (under /root): whatever a step imports lazily, load it now.
    for module in pkgutil.walk_packages(cosmos_assets.__path__, "cosmos_assets."):
        importlib.import_module(module.name)
    from cosmos_assets.models.refused_keys import prompt_file_invocation_keys

    prompt_file_invocation_keys()  # the model contracts are read on first use, through importlib.resources' lazy parts
    os.setgroups([SHARED_GID, uid])
    os.setgid(uid)
    os.setuid(uid)  # real, effective and saved: no way back, no capability left
    os.umask(STUDIO_UMASK)
    try:
        results = [OPS[op](**arguments) for op, arguments in request["steps"]]
    except BaseException:  # noqa: BLE001 - shown by as_user
        traceback.print_exc()
        sys.exit(1)
    answer = {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": sorted(os.getgroups()),
        "results": results,
    }
    print(json.dumps(answer))


# --------------------------------------------------------------------------- the shared project


@pytest.fixture
def shared_project() -> Iterator[tuple[ProjectLayout, LocalMachine]]:
    """An empty project folder owned by root:<shared group>, 02775, under a folder every uid may enter."""
    base = Path(tempfile.mkdtemp(prefix="cosmos-shared-", dir="/tmp"))  # pytest's tmp_path is 0700 to other uids
    try:
        base.chmod(0o755)
        root = base / "project"
        root.mkdir()
        os.chown(root, 0, SHARED_GID)
        root.chmod(FOLDER_MODE)
        yield ProjectLayout(root=root), LocalMachine(base / "host" / "cosmos-transfer1", label="preview@local")
    finally:
        shutil.rmtree(base)


def _tree(root: Path) -> list[Path]:
    return sorted([root, *root.rglob("*")])


@needs_root
def test_a_run_in_a_shared_folder_is_read_by_another_artist_and_runs_their_prompt(
    shared_project: tuple[ProjectLayout, LocalMachine], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, host = shared_project
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(layout.root))
    with umask(STUDIO_UMASK):
        make_project(layout.root)
        gen = run_generation(layout, host, PREVIEW, "tiny_prompt", log=lambda line: None)
        up = run_upscale(layout, host, PREVIEW, "tiny_prompt", log=lambda line: None)
        assert cli_main(["new-prompt", "tiny_shot", "a rainy street", "--name", "from_a"]) == 0
        assert cli_main(["wedge", "tiny_prompt", "--vary", "seed=1,2", "--name", "look", "--no-register"]) == 0
        for variant in ("look_01_seed-1", "look_02_seed-2"):
            run_generation(layout, host, PREVIEW, variant, log=lambda line: None)
        comparison = build_comparison(layout, "look")

    named = {
        "stamped clip": gen.video,
        "upscaled clip": up.video,
        "spec_used.json": gen.output_dir / "spec_used.json",
        "record": layout.runs_dir / f"{gen.record.run_id}.json",
        "history": layout.history_log,
        "new-prompt file": layout.prompt_file("from_a"),
        "wedge prompt": layout.prompt_file("look_01_seed-1"),
        "wedge folder": comparison.folder,
        "wedge grid": comparison.grid_video,
    }
    assert read_recipe(gen.video)["cosmos_run_id"] == gen.record.run_id  # the stamped one
    assert len(read_history(layout.history_log)) == 4
    # Every file and folder the runs wrote: the umask's mode, the project's group.
    everything = _tree(layout.root)
    assert set(named.values()) <= set(everything)
    wrong = {
        str(p.relative_to(layout.root)): (oct(mode(p)), p.lstat().st_gid)
        for p in everything
        if (mode(p), p.lstat().st_gid) != (FOLDER_MODE if p.is_dir() else FILE_MODE, SHARED_GID)
    }
    assert wrong == {}

    # Artist B opens every one of them, and writes a prompt file of their own (umask 002, the folder's group).
    from_b = layout.prompt_file("from_b")
    expected = {str(p): "folder: " + ",".join(sorted(os.listdir(p))) if p.is_dir() else sha256(p) for p in everything}
    read, made = as_user(
        ARTIST_B,
        ("read", {"paths": [str(p) for p in everything]}),
        ("new_prompt", {"argv": ["new-prompt", "tiny_shot", "fog", "--name", "from_b"]}),
        env={"COSMOS_PROJECT_ROOT": str(layout.root)},
    )
    assert read == expected
    assert made == f"0 {from_b}"
    info = from_b.stat()
    assert (oct(mode(from_b)), info.st_uid, info.st_gid) == (oct(FILE_MODE), ARTIST_B, SHARED_GID)

    # The run worker reads B's prompt file (planning is the step of a run that does); one B kept to itself (0600)
    # it cannot, and the error names it: the check can fail.
    private = layout.prompt_file("private_b")
    shutil.copy(from_b, private)
    os.chown(private, ARTIST_B, SHARED_GID)
    private.chmod(0o600)
    planned, refused = as_user(
        WORKER,
        ("plan", {"root": str(layout.root), "prompt": "from_b"}),
        ("plan", {"root": str(layout.root), "prompt": "private_b"}),
    )
    assert planned == "planned tiny_shot: fog"
    assert refused.startswith("error: ") and str(private) in refused
    private.unlink()
    with umask(STUDIO_UMASK):
        b_run = run_generation(layout, host, PREVIEW, "from_b", log=lambda line: None)

    # B reads that run's clip; B's re-run of A's prompt appends to the shared history and moves A's run folder aside.
    history_line = layout.history_log.read_text().splitlines()[0]
    clip, appended, moved = as_user(
        ARTIST_B,
        ("read", {"paths": [str(b_run.video)]}),
        ("append_history", {"log": str(layout.history_log), "line": history_line}),
        (
            "move_aside",
            {"folder": str(gen.output_dir), "previous": str(layout.previous_outputs_dir), "run_id": gen.record.run_id},
        ),
    )
    assert clip == {str(b_run.video): sha256(b_run.video)} and appended == "appended"
    assert len(read_history(layout.history_log)) == 6
    assert (
        Path(moved) == layout.previous_outputs_dir / "tiny_prompt" / gen.record.run_id and not gen.output_dir.exists()
    )
    assert sha256(Path(moved) / OUTPUT_VIDEO) == read[str(gen.video)]


def test_a_models_video_linked_or_copied_as_output_mp4_has_the_umasks_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """link_output: a hard link shares the model file's mode (our own download's); the copy takes the umask's."""
    model_file = tmp_path / "host.mp4"
    model_file.write_bytes(b"video")
    model_file.chmod(0o600)  # as the host had it
    with umask(STUDIO_UMASK):
        fetched = tmp_path / "fetched"
        copy_verified(model_file, fetched / "clip.mp4")  # how every fetched file lands (LocalMachine; SFTP: below)
        linked = link_output(fetched / "clip.mp4", fetched)
        monkeypatch.setattr("cosmos_assets.models.base.os.link", lambda *args: (_ for _ in ()).throw(OSError("EXDEV")))
        other = tmp_path / "other"
        other.mkdir()
        (other / "vision.mp4").write_bytes(b"video")
        (other / "vision.mp4").chmod(0o600)
        copied = link_output(other / "vision.mp4", other)
    assert linked.stat().st_ino == (fetched / "clip.mp4").stat().st_ino and oct(mode(linked)) == oct(FILE_MODE)
    assert copied.read_bytes() == b"video" and oct(mode(copied)) == oct(FILE_MODE)


@needs_root
@pytest.mark.integration
def test_a_download_gets_the_umasks_mode_never_the_hosts(sshd, tmp_path: Path) -> None:
    """SFTP: the host's 0600/0700 files (another uid's) land with the mode the umask allows, in the folder's group."""
    from cosmos_assets.machines.sftp_download import download_tree
    from cosmos_assets.machines.ssh_link import SshLink
    from cosmos_assets.machines.ssh_target import SshTarget

    remote = tmp_path / "remote" / "outputs" / "p" / "run1"
    (remote / "nested").mkdir(parents=True)
    for name, data in (("output.mp4", b"v" * 70_000), ("nested/log.txt", b"log")):
        (remote / name).write_bytes(data)
        (remote / name).chmod(0o600)
        os.chown(remote / name, ARTIST_B, ARTIST_B)
    (remote / "nested").chmod(0o700)
    local = tmp_path / "shared"
    local.mkdir()
    os.chown(local, -1, SHARED_GID)
    local.chmod(FOLDER_MODE)
    target = SshTarget(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.key_path,
        known_hosts=sshd.known_hosts,
        ssh_config=tmp_path / "no-ssh-config",
        allow_agent=False,
    )
    link = SshLink(target, "test sshd")
    try:
        with umask(STUDIO_UMASK):
            download_tree(link, str(remote), local / "p")
    finally:
        link.close()
    got = {str(p.relative_to(local)): (oct(mode(p)), p.stat().st_gid) for p in _tree(local / "p")}
    assert got == {
        "p": (oct(FOLDER_MODE), SHARED_GID),
        "p/nested": (oct(FOLDER_MODE), SHARED_GID),
        "p/output.mp4": (oct(FILE_MODE), SHARED_GID),
        "p/nested/log.txt": (oct(FILE_MODE), SHARED_GID),
    }
