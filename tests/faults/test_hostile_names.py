"""Hostile shot, prompt and file names, whichever way they arrive: the CLI, a partition key added as the UI does,
a render folder or prompt file the sensors find on disk.

A name that can be a folder, a file and a partition key (spaces, quotes, ``$()``, backticks, ``;``, a leading ``-``,
``..`` inside, non-ASCII) is handled literally: a real preview run through Dagster succeeds with it. Any other name
is refused with one line naming it. Either way no shell runs it (canary files never appear) and nothing is written
outside the project root and REMOTE_DIR. The helpers here are shared by the other ``test_hostile_*`` modules.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.cli import main
from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.partitions import PROMPTS, SHOTS
from cosmos_assets.defs.resources import LocalPreviewHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.layout import MAX_NAME_BYTES, ProjectLayout, name_problem
from cosmos_assets.media.sample_render import make_sample_render
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs.history import read_history
from cosmos_assets.watch.cursors import PromptCursor, RenderCursor, SensorSettings
from cosmos_assets.watch.plans import plan_prompt_tick, plan_render_tick
from tests.project_factory import make_project
from tests.test_sensors import SMALL, Project, age

TAG = uuid.uuid4().hex[:10]
CANARY = f"pwned-{TAG}"
"""A file a name would create if a shell ever ran it: ``touch pwned-<tag>-N`` in whatever folder that shell is in."""

HOSTILE_SHOT = f"-rf \"q\" 'x' $(touch {CANARY}-1) a..b café ☕"
HOSTILE_PROMPT = f"-n `touch {CANARY}-2`; touch {CANARY}-3 # | & > x < y *?[ ] 東京"
LEGAL_NAMES = {
    "spaces_quotes": "my shot \"q\" 'x'",
    "command_subst": f"$(touch {CANARY}-4)",
    "backticks_semicolon": f"`touch {CANARY}-5`; touch {CANARY}-6 #",
    "leading_dash": "-rf --help",
    "dots_inside": "a..b",
    "unicode": "café ☕ 東京",
    "long_legal": "L" * MAX_NAME_BYTES,
}
ILLEGAL_NAMES = {
    "parent": "..",
    "escape": "../../../outside",
    "deep_escape": "../../../../../../../../tmp/" + CANARY,
    "absolute": "/etc/passwd",
    "hidden_reserved": ".runs",
    "slash": "a/b",
    "backslash": "a\\b",
    "newline": "a\nb",
    "nul": "a\0b",
    "range": "a...b",
    "very_long": "n" * 300,
}


def canary_dirs(*extra: Path) -> list[Path]:
    return [Path("/tmp"), Path.cwd(), Path.home(), *extra]


def assert_no_canary(*extra: Path) -> None:
    """No file named like the canary anywhere a shell could have run (searched recursively in ``extra``)."""
    for folder in canary_dirs(*extra):
        pattern = f"**/{CANARY}*" if folder in extra else f"{CANARY}*"
        found = list(folder.glob(pattern))
        assert not found, f"{found}: a name was run by a shell"


class OutsideSnapshot:
    """Every path (with size and mode) under ``folders``, except the ``allowed`` subtrees: taken before, compared after."""

    def __init__(self, folders: Iterable[Path], allowed: Iterable[Path] = ()) -> None:
        self.folders = [Path(f) for f in folders]
        self.allowed = {Path(a).resolve() for a in allowed}
        self.before = self._take()

    def _take(self) -> dict[str, tuple[int, int]]:
        seen: dict[str, tuple[int, int]] = {}
        for folder in self.folders:
            for dirpath, dirnames, filenames in os.walk(folder):
                here = Path(dirpath)
                dirnames[:] = [d for d in dirnames if (here / d).resolve() not in self.allowed]
                for name in [*dirnames, *filenames]:
                    try:
                        st = (here / name).lstat()
                    except FileNotFoundError:
                        continue
                    seen[str(here / name)] = (0 if name in dirnames else st.st_size, st.st_mode)
        return seen

    def assert_unchanged(self) -> None:
        after = self._take()
        created = sorted(set(after) - set(self.before))
        assert not created, f"created outside the project and REMOTE_DIR: {created[:10]}"
        changed = sorted(p for p in self.before if p in after and after[p] != self.before[p])
        assert not changed, f"changed outside the project and REMOTE_DIR: {changed[:10]}"


def preview_resources(root: Path, remote_dir: Path) -> dict[str, object]:
    return {"project": ProjectResource(root=str(root)), "gpu_host": LocalPreviewHost(remote_dir=str(remote_dir))}


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """The step failures' own messages (the Dagster failure description, or the exception's message)."""
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error is not None and error.cause is not None:  # Dagster wraps the step's own exception
                error = error.cause
            messages.append(error.message.strip() if error else "")
    return messages


@pytest.fixture(scope="module")
def outer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the project and REMOTE_DIR, and nothing else the code may touch."""
    return tmp_path_factory.mktemp("hostile-outer")


@pytest.fixture(scope="module")
def hostile_project(outer: Path) -> ProjectLayout:
    """A real project whose shot and prompt carry every legal hostile character."""
    return make_project(outer / "project", shot=HOSTILE_SHOT, prompt=HOSTILE_PROMPT, text="a quiet street")


# ------------------------------------------------------------------------------------------------ the names' rule


@pytest.mark.parametrize("name", LEGAL_NAMES.values(), ids=LEGAL_NAMES.keys())
def test_legal_hostile_names_are_names(name: str) -> None:
    assert name_problem(name) is None
    assert name_problem(HOSTILE_SHOT) is None and name_problem(HOSTILE_PROMPT) is None


@pytest.mark.parametrize("name", ILLEGAL_NAMES.values(), ids=ILLEGAL_NAMES.keys())
def test_illegal_names_are_refused_by_every_layout_path(name: str, tmp_path: Path) -> None:
    layout = ProjectLayout(root=tmp_path)
    for method in (
        layout.render_dir,
        layout.shot_videos_dir,
        layout.prompt_file,
        layout.output_dir,
        layout.upscaled_dir,
    ):
        with pytest.raises(ValueError) as caught:
            method(name)
        message = str(caught.value)
        assert "\n" not in message and "rename it" in message and len(message) < 400, message


# ------------------------------------------------------------------------------------------------ the CLI


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) >= 1 and "Traceback" not in err, err
    return lines[-1]


CLI_REFUSED = {**{k: v for k, v in LEGAL_NAMES.items() if k not in ("long_legal", "dots_inside")}, **ILLEGAL_NAMES}
"""The CLI takes plain names only (letters, digits, '.', '_', '+', '-'): every other name, legal or not, is refused."""


@pytest.mark.parametrize("name", CLI_REFUSED.values(), ids=CLI_REFUSED.keys())
def test_cli_names_are_refused_in_one_line_and_nothing_is_written(
    name: str, outer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cli-project"
    ProjectLayout(root=root).ensure_working_folders()
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(root))
    monkeypatch.chdir(root)
    watch = OutsideSnapshot([tmp_path], allowed=[root])
    # Shot and prompt names from the command line are plain names (argparse refuses the rest, exit 2).
    for argv in (
        ["new-prompt", name, "text"],
        ["new-prompt", "shot", "text", "--name", name],
        ["sample-render", "--shot", name],
        ["convert", str(root), name],
    ):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        assert "is not a plain name" in _one_line_error(capsys.readouterr().err)
    # `command` and `validate` take a prompt name or a file: refused with one line, exit 1.
    assert main(["command", name]) == 1
    assert _one_line_error(capsys.readouterr().err).startswith("error: ")
    assert main(["validate", name]) == 1
    assert _one_line_error(capsys.readouterr().err).startswith("error: ")
    assert list((root / "inputs" / "prompts").iterdir()) == []
    watch.assert_unchanged()
    assert_no_canary(tmp_path)


# ------------------------------------------------------------------------------------------------ partition keys


def test_partition_keys_added_as_the_ui_does_are_refused_and_nothing_outside_is_read_or_written(
    outer: Path, hostile_project: ProjectLayout
) -> None:
    root = hostile_project.root
    # A valid prompt file right where "../../../outside" would reach: it must not be read (before the name rule,
    # prompt_specs materialized it).
    outside = root.parent / "outside.json"
    write_spec(new_prompt_spec(HOSTILE_SHOT, "read from outside the project"), outside)
    remote = outer / "remote-partitions"
    watch = OutsideSnapshot([outer], allowed=[root, remote])
    # Every illegal name is refused by every layout path (test above); here a sample goes through Dagster.
    runs = [(ILLEGAL_NAMES[k], ["prompt_specs"]) for k in ("escape", "newline", "very_long")]
    runs += [(ILLEGAL_NAMES[k], ["generated_videos"]) for k in ("escape", "hidden_reserved")]
    prompt_keys = sorted({key for key, _ in runs})
    shot_keys = [ILLEGAL_NAMES["deep_escape"]]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, prompt_keys)
        instance.add_dynamic_partitions(SHOTS.name, shot_keys)
        for key, selection in runs:
            result = dg.materialize(
                ALL_ASSETS,
                selection=selection,
                partition_key=key,
                instance=instance,
                resources=preview_resources(root, remote),
                raise_on_error=False,
            )
            assert not result.success, (key, selection)
            messages = failure_messages(result)
            assert len(messages) == 1 and "prompt name" in messages[0] and "rename it" in messages[0], messages
            assert "\n" not in messages[0], messages
        for key in shot_keys:
            result = dg.materialize(
                ALL_ASSETS,
                selection=["shots", "control_videos"],
                partition_key=key,
                instance=instance,
                resources=preview_resources(root, remote),
                raise_on_error=False,
            )
            assert not result.success
            messages = failure_messages(result)
            assert len(messages) == 1 and "shot name" in messages[0] and "rename it" in messages[0], messages
    outside.unlink()
    watch.assert_unchanged()
    assert_no_canary(outer)
    assert not (root / "outputs" / ".runs").exists() or not list((root / "outputs" / ".runs").iterdir())


# ------------------------------------------------------------------------------------------------ a real run


def test_a_real_preview_run_with_hostile_shot_and_prompt_names_succeeds_literally(
    outer: Path, hostile_project: ProjectLayout
) -> None:
    root, layout = hostile_project.root, hostile_project
    remote = outer / "remote-run"
    watch = OutsideSnapshot([outer], allowed=[root, remote])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [HOSTILE_PROMPT])
        instance.add_dynamic_partitions(SHOTS.name, [HOSTILE_SHOT])
        result = dg.materialize(
            ALL_ASSETS,
            selection=["shots", "control_videos"],
            partition_key=HOSTILE_SHOT,
            instance=instance,
            resources=preview_resources(root, remote),
        )
        assert result.success
        result = dg.materialize(
            ALL_ASSETS,
            selection=["prompt_specs", "generated_videos", "upscaled_videos"],
            partition_key=HOSTILE_PROMPT,
            instance=instance,
            resources=preview_resources(root, remote),
        )
        assert result.success
        metadata = result.asset_materializations_for_node("generated_videos")[0].metadata
        assert metadata["shot"].value == HOSTILE_SHOT
    assert (layout.output_dir(HOSTILE_PROMPT) / "output.mp4").is_file()
    assert (layout.upscaled_dir(HOSTILE_PROMPT) / "output.mp4").is_file()
    used = json.loads((layout.output_dir(HOSTILE_PROMPT) / "spec_used.json").read_text())
    assert used["prompt"] == HOSTILE_PROMPT and used["shot"] == HOSTILE_SHOT
    assert used["spec"]["input_video_path"] == f"inputs/videos/{HOSTILE_SHOT}/color.mp4"
    assert HOSTILE_PROMPT in used["command"][used["command"].index("--video_save_folder") + 1]
    history = read_history(layout.history_log)
    assert [h.prompt for h in history] == [HOSTILE_PROMPT, HOSTILE_PROMPT] and {h.status for h in history} == {
        "success"
    }
    assert (remote / "outputs" / HOSTILE_PROMPT).is_dir()  # the remote folder has the literal name too
    watch.assert_unchanged()
    assert_no_canary(outer, remote)


# ------------------------------------------------------------------------------------------------ names on disk


def _bytes_name(parent: Path, name: bytes) -> Path:
    """A folder or file whose name is not UTF-8 (os.fsdecode shows it with surrogate escapes)."""
    return Path(os.fsdecode(os.fsencode(parent) + b"/" + name))


@pytest.fixture()
def sensor_project(tmp_path: Path) -> Iterator[Project]:
    yield Project(tmp_path, SensorSettings())


def test_render_sensor_runs_legal_hostile_folders_and_reports_each_bad_one_alone(sensor_project: Project) -> None:
    layout = sensor_project.layout
    good = ["plain_shot", LEGAL_NAMES["command_subst"], LEGAL_NAMES["leading_dash"], LEGAL_NAMES["spaces_quotes"]]
    for shot in good:
        make_sample_render(layout.renders_dir / shot, **SMALL)
    bad: dict[str, Path] = {}
    for key in ("newline", "range"):
        bad[key] = layout.renders_dir / ILLEGAL_NAMES[key]
    bad["not_utf8"] = _bytes_name(layout.renders_dir, b"shot\xff\xfe")
    bad["too_long_for_a_name"] = layout.renders_dir / ("x" * 240)  # a legal folder, too long for our outputs
    for folder in bad.values():
        make_sample_render(folder, **SMALL)
    # Pathological contents: each fails alone.
    contents = {"garbage_png": b"\x89PNG\r\n\x1a\n" + os.urandom(200), "zero_byte_frame": b""}
    for shot, data in contents.items():
        folder = layout.renders_dir / shot
        make_sample_render(folder, **SMALL)
        (folder / "color.1002.png").write_bytes(data)
        bad[shot] = folder
    far = layout.renders_dir / "far_frame"
    make_sample_render(far, **SMALL)
    (far / "depth.99999999999999.png").write_bytes(b"")  # before the fix: counted to 10^14, the tick never ended
    bad["far_frame"] = far
    for folder in [*bad.values(), *(layout.renders_dir / s for s in good)]:
        age(folder)

    data = sensor_project.tick("render_sensor", None)
    assert sorted(r.partition_key for r in data.run_requests) == sorted(good)
    plan = plan_render_tick(layout, RenderCursor(), time.time())
    problems = {p.name: p.message for p in plan.problems}
    assert sorted(problems) == sorted(folder.name for folder in bad.values())
    assert "cannot be a Dagster partition key" in problems[ILLEGAL_NAMES["newline"]]
    assert "longer than" in problems["x" * 240]
    assert "not a readable PNG" in problems["garbage_png"] and "not a readable PNG" in problems["zero_byte_frame"]
    assert "frame 1004 is missing for every pass" in problems["far_frame"]
    # Folders with bad frames are listed (not run) as before; folders whose name cannot be a key are not.
    listed = [*good, "garbage_png", "zero_byte_frame", "far_frame"]
    assert sorted(sensor_project.instance.get_dynamic_partitions("shots")) == sorted(listed)
    # The cursor survives the names it holds (surrogates included): the next tick loads it and reports nothing new.
    again = sensor_project.tick("render_sensor", data.cursor)
    assert again.run_requests == []


def test_prompt_sensor_runs_legal_hostile_prompt_files_and_reports_each_bad_one_alone(sensor_project: Project) -> None:
    layout = sensor_project.layout
    shot = "shot_a"
    make_project(layout.root, shot=shot, prompt="plain_prompt")
    good = ["plain_prompt", LEGAL_NAMES["backticks_semicolon"], LEGAL_NAMES["unicode"]]
    spec = new_prompt_spec(shot, "a street")
    for name in good[1:]:
        write_spec(spec, layout.prompts_dir / f"{name}.json")
    bad = {
        "newline": layout.prompts_dir / "a\nb.json",
        "range": layout.prompts_dir / "a...b.json",
        "not_utf8_name": _bytes_name(layout.prompts_dir, b"p\xff.json"),
        "too_long": layout.prompts_dir / ("p" * 230 + ".json"),
    }
    for path in bad.values():
        write_spec(spec, path)
    contents = {"not_utf8_text": b'{"prompt": "\xff\xfe"}', "nul": b"\0\0\0", "a_folder": None, "empty_object": b"{}"}
    for name, data in contents.items():
        path = layout.prompts_dir / f"{name}.json"
        if data is None:
            path.mkdir()  # skipped by the listing (not a file)
        else:
            path.write_bytes(data)
            bad[name] = path

    data = sensor_project.tick("prompt_sensor", None)
    assert sorted(r.partition_key for r in data.run_requests) == sorted(good)
    plan = plan_prompt_tick(layout, PromptCursor(), set())
    problems = {p.name: p.message for p in plan.problems}
    assert sorted(problems) == sorted(path.name[: -len(".json")] for path in bad.values())
    assert "not UTF-8" in problems["not_utf8_text"] and "rename it" in problems["a\nb"]
    listed = [*good, "empty_object", "not_utf8_text", "nul"]  # listed (not run) as before; bad names are not
    assert sorted(sensor_project.instance.get_dynamic_partitions("prompts")) == sorted(listed)
    again = sensor_project.tick("prompt_sensor", data.cursor)
    assert again.run_requests == []


# ------------------------------------------------------------------------------------------------ remote listings


class _Listing:
    """A stand-in for a server's SFTP listing (pure logic: the names a malicious or broken server could send)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def listdir_attr(self, path: str) -> list[object]:
        import stat as stat_mod

        import paramiko

        entries = []
        for name in self.names:
            attrs = paramiko.SFTPAttributes()
            attrs.filename, attrs.st_mode, attrs.st_size = name, stat_mod.S_IFREG | 0o644, 1
            entries.append(attrs)
        return entries


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../../etc/passwd", "/etc/passwd", "a\0b"])
def test_a_remote_listing_with_an_escaping_name_is_refused(name: str) -> None:
    from cosmos_assets.machines.remote_tree import list_remote_files

    with pytest.raises(ValueError) as caught:
        list_remote_files(_Listing(["fine.mp4", name]), "/remote/outputs/p/run")  # type: ignore[arg-type]
    assert "not a plain folder name" in str(caught.value) and "/remote/outputs/p/run" in str(caught.value)


def test_a_remote_listing_with_odd_but_plain_names_is_taken_literally() -> None:
    from cosmos_assets.machines.remote_tree import list_remote_files

    names = ["a\nb", "$(touch x)", "`id`; rm -rf ~", "-rf", "back\\slash", "..hidden", "q\"'"]
    listed = list_remote_files(_Listing(names), "/remote/outputs/p/run")  # type: ignore[arg-type]
    assert sorted(rel for rel, _ in listed) == sorted(names)


@pytest.fixture()
def sftp_link(sshd, tmp_path: Path) -> Iterator[object]:
    from cosmos_assets.machines.ssh_link import SshLink
    from tests.integration.test_sftp import _settings

    link = SshLink(_settings(sshd, tmp_path), "test sshd")
    yield link
    link.close()


@pytest.mark.integration
def test_a_real_download_keeps_odd_remote_names_inside_the_run_folder(sftp_link, tmp_path: Path) -> None:
    from cosmos_assets.machines.sftp_download import download_tree

    run = tmp_path / "remote" / "outputs" / "p" / "run1"
    run.mkdir(parents=True)
    names = ["a\nb.txt", f"$(touch {CANARY}-7)", f"`touch {CANARY}-8`; x", "-rf", "back\\slash", "..hidden"]
    for i, name in enumerate(names):
        (run / name).write_bytes(f"file {i}".encode())
    local = tmp_path / "local" / "p"
    local.parent.mkdir()
    watch = OutsideSnapshot([tmp_path], allowed=[tmp_path / "local", tmp_path / "remote"])
    stats = download_tree(sftp_link, str(run), local)
    assert stats.files_sent == len(names)
    assert sorted(p.name for p in local.iterdir()) == sorted(names)
    assert all((local / name).read_bytes() == (run / name).read_bytes() for name in names)
    watch.assert_unchanged()
    assert_no_canary(tmp_path)


@pytest.mark.integration
def test_a_remote_symlink_out_of_the_run_folder_is_not_downloaded(sftp_link, tmp_path: Path) -> None:
    from cosmos_assets.machines.sftp_download import download_tree

    secret = tmp_path / "host_private" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("a host file outside REMOTE_DIR")
    run = tmp_path / "remote" / "outputs" / "p" / "run1"
    run.mkdir(parents=True)
    (run / "output.mp4").write_bytes(b"video")
    os.symlink(secret, run / "leak.txt")
    local = tmp_path / "local" / "p"
    local.parent.mkdir()
    try:
        download_tree(sftp_link, str(run), local)
    except (OSError, ValueError):
        return  # refused: fine
    assert not (local / "leak.txt").exists(), "a file outside REMOTE_DIR was downloaded through a symlink"
