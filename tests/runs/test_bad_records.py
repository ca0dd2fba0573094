"""Issue 17: one bad file in outputs/.runs never stops a run, and a record is held on read to the rules it was saved
under. A bad file (truncated, not UTF-8, macOS's ``._<id>.json``, a pipe, a foreign or hostile record) is named once
in a one-line warning and left out; a real preview generation goes on beside it, locally and through Dagster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.resources import LocalPreviewHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.machines.job import InferenceJob
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs import runner
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.ids import new_run_id
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_rules import RecordFileError
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_generation
from tests.project_factory import make_project
from tests.runs.test_record import _record

PREVIEW = backend_named("preview")
GOOD_ID = "20260101_000000_abcd1234"  # tests.runs.test_record._record's run, prompt p1
OTHER_ID = "20260101_000001_0bad0bad"
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\x09\x00\x00\x00\x32" + b"\xff" * 40


def _good(tmp_path: Path) -> RunRecord:
    return _record(tmp_path / "inputs")


def _json(record: RunRecord, **changes) -> str:
    return json.dumps({**json.loads(record.model_dump_json()), **changes})


def _bad_files(tmp_path: Path) -> dict[str, tuple[object, str]]:
    """name -> (content: str, bytes, or a maker(path)), the words its warning must hold."""
    good = _good(tmp_path)
    text = good.model_dump_json(indent=2)
    hostile = f"../other_prompt/{OTHER_ID}"

    def fifo(path: Path) -> None:
        os.mkfifo(path)

    def huge(path: Path) -> None:
        with open(path, "wb") as handle:
            handle.truncate(17 * 1024 * 1024)

    def link(path: Path) -> None:
        (tmp_path / "elsewhere.json").write_text(text.replace(GOOD_ID, OTHER_ID))
        path.symlink_to(tmp_path / "elsewhere.json")

    return {
        f"{OTHER_ID}.json": (text[: len(text) // 2], "not complete JSON"),  # truncated (a copy cut short, a full disk)
        f"._{GOOD_ID}.json": (APPLEDOUBLE, "macOS metadata file"),
        "20260101_000002_00000002.json": (b'{"run_id": "\xff\xfe"}', "not UTF-8"),
        "20260101_000003_00000003.json": ("", "not complete JSON"),
        "20260101_000004_00000004.json": (fifo, "not a regular file"),
        "20260101_000005_00000005.json": (huge, "larger than 16 MiB"),
        "20260101_000006_00000006.json": (link, "not a regular file"),
        "20260101_000007_00000007.json": (_json(good, run_id=hostile), "run_id '../other_prompt/"),
        "20260101_000008_00000008.json": (text, "file name is not its run id"),  # a copy under another name
        "renamed.json": (text, "not named <run_id>.json"),
        "20260101_000009_00000009.json": (
            _json(good, run_id="20260101_000009_00000009", prompt="../p1"),
            "prompt name '../p1'",
        ),
        "20260101_000010_00000010.json": (_json(good, run_id="20260101_000010_00000010", shot="a\nb"), "shot name"),
        "20260101_000011_00000011.json": (
            _json(good, run_id="20260101_000011_00000011", remote_output_folder=f"outputs/other_prompt/{OTHER_ID}"),
            "remote_output_folder 'outputs/other_prompt/",
        ),
        "20260101_000012_00000012.json": (
            _json(
                good,
                run_id="20260101_000012_00000012",
                remote_output_folder="/workspace/outputs/p1/20260101_000012_00000012",
            ),
            "remote_output_folder '/workspace",
        ),
        "20260101_000013_00000013.json": (
            _json(
                good,
                run_id="20260101_000013_00000013",
                remote_output_folder="outputs/p1/20260101_000013_00000013",
                output_files=[{"path": "outputs/p1/../../../etc/passwd", "size": 1, "sha256": "0"}],
            ),
            "output_files entry",
        ),
        "20260101_000014_00000014.json": (
            _json(
                good,
                run_id="20260101_000014_00000014_p0",
                remote_output_folder=f"outputs/.batches/{OTHER_ID}_batch0/video_0",
                batch={"batch_id": f"{OTHER_ID}_batch0", "index": 0, "items": 1},
            ),
            "file name is not its run id",
        ),
        "20260101_000015_00000015_p0.json": (
            _json(
                good,
                run_id="20260101_000015_00000015_p0",
                remote_output_folder=f"outputs/.batches/{OTHER_ID}_batch0/video_0",
                batch={"batch_id": f"{OTHER_ID}_batch0", "index": 0, "items": 1},
            ),
            "is not of the request of run",
        ),
        "20260101_000016_00000016.json": (
            _json(
                good,
                run_id="20260101_000016_00000016",
                remote_output_folder="outputs/p1/20260101_000016_00000016",
                inputs=[{"path": "../../etc/shadow", "size": 1, "sha256": "0"}],
            ),
            "leaves the model's root folder",
        ),
        "20260101_000017_00000017.json": ('{"run_id": "20260101_000017_00000017"}', "field stage: Field required"),
        # a time with no zone (hand-edited, or written by another tool) cannot be ordered beside ours
        "20260101_000018_00000018.json": (
            _json(
                good,
                run_id="20260101_000018_00000018",
                remote_output_folder="outputs/p1/20260101_000018_00000018",
                created_at="2026-01-01T00:00:00",
            ),
            "created_at",
        ),
    }


def _write(folder: Path, name: str, content: object) -> Path:
    path = folder / name
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_every_kind_of_bad_file_is_named_once_and_left_out(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    warnings: list[str] = []
    store = RunStore(folder, warn=warnings.append)
    store.save(_good(tmp_path))
    bad = _bad_files(tmp_path)
    for name, (content, _) in bad.items():
        _write(folder, name, content)
    for _ in range(2):  # every lookup reads the folder again; each file is named once
        assert [r.run_id for r in store.all()] == [GOOD_ID]
    assert len(warnings) == len(bad), "\n".join(warnings)
    for name, (_, words) in bad.items():
        (said,) = [w for w in warnings if f"{folder / name}:" in w]
        assert words in said and "\n" not in said and said.endswith("to silence this)"), said


@pytest.mark.parametrize("name", ["20260101_000001_0bad0bad", "20260101_000007_00000007", "20260101_000011_00000011"])
def test_loading_a_named_bad_record_raises_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "runs"
    content, words = _bad_files(tmp_path)[f"{name}.json"]
    folder.mkdir()
    path = _write(folder, f"{name}.json", content)
    with pytest.raises(RecordFileError) as raised:
        RunStore(folder).load(name)
    assert str(raised.value).startswith(f"run record {path}: ") and words in str(raised.value)
    assert "\n" not in str(raised.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RunStore(folder).load("20260101_000099_00000099")


def test_a_record_that_would_be_bad_on_read_is_refused_on_write(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    good = _good(tmp_path)
    for change, words in [
        ({"run_id": f"../other_prompt/{OTHER_ID}"}, "not saved: run_id .../other_prompt/"),
        ({"remote_output_folder": f"outputs/other_prompt/{GOOD_ID}"}, "remote_output_folder"),
        ({"prompt": "other prompt"}, "remote_output_folder"),
        ({"output_dir": "outputs/other_prompt"}, "output_dir"),
    ]:
        with pytest.raises(ValueError, match=words):
            store.save(good.model_copy(update=change))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --------------------------------------------------------------------------- real generations beside bad files


class _LeftOutputsMachine(LocalMachine):
    """This computer, answering what an SSH host answers for a left-behind run whose output file is there:
    "outputs" (adopt: download it, start nothing). Over SSH this is how a hostile record would pull another
    prompt's video in."""

    def job_state(self, job: InferenceJob, output_file: str) -> str:
        return "outputs" if (self.root / output_file).is_file() else "gone"


def _plant(layout, record: RunRecord, run_id: str, file_id: str, **changes) -> Path:
    """``record`` as a left-behind run of the same work whose run id is ``run_id``, in ``<file_id>.json``."""
    data = json.loads(record.model_dump_json().replace(record.run_id, run_id))  # its settings name its own id
    data.update(state="running", worker=None, detached=False, **changes)
    path = layout.runs_dir / f"{file_id}.json"
    path.write_text(json.dumps(data))
    return path


def test_a_hostile_run_id_never_makes_a_run_adopt_another_prompts_outputs(tmp_path: Path) -> None:
    layout = make_project(tmp_path / "project")
    write_spec(new_prompt_spec("tiny_shot", "another prompt's street"), layout.prompt_file("other_prompt"))
    machine = _LeftOutputsMachine(tmp_path / "host", label="preview@local")
    quiet = dict(log=lambda line: None)
    other = run_generation(layout, machine, PREVIEW, "other_prompt", **quiet)
    first = run_generation(layout, machine, PREVIEW, "tiny_prompt", **quiet)
    assert (machine.root / other.record.remote_output_folder / "output.mp4").is_file()  # what a hostile id points at
    planted = _plant(layout, first.record, f"../other_prompt/{other.record.run_id}", new_run_id())

    lines: list[str] = []
    again = run_generation(layout, machine, PREVIEW, "tiny_prompt", force=True, log=lines.append)
    assert again.record.state == "succeeded" and again.record.adopted_by == []
    assert (layout.output_dir("tiny_prompt") / "output.txt").read_text() == "a quiet street at dusk"  # its own video
    assert not any("adopting" in line for line in lines)
    said = [line for line in lines if str(planted) in line]
    assert len(said) == 1 and "run_id '../other_prompt/" in said[0] and said[0].startswith("[cosmos-assets] warning:")


def test_a_preview_generation_through_dagster_succeeds_beside_bad_records(tmp_path: Path) -> None:
    layout = make_project(tmp_path / "project")
    machine = LocalMachine(tmp_path / "host", label="preview@local")
    first = run_generation(layout, machine, PREVIEW, "tiny_prompt", log=lambda line: None)
    text = first.record.model_dump_json(indent=2)
    truncated = _write(layout.runs_dir, f"{new_run_id()}.json", text[: len(text) // 3])
    apple = _write(layout.runs_dir, f"._{first.record.run_id}.json", APPLEDOUBLE)
    hostile = _plant(layout, first.record, f"../other_prompt/{OTHER_ID}", new_run_id())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, ["tiny_prompt"])
        result = dg.materialize(
            ALL_ASSETS,
            selection=["generated_videos"],
            partition_key="tiny_prompt",
            instance=instance,
            run_config={"ops": {"generated_videos": {"config": {"force": True}}}},
            resources={
                "project": ProjectResource(root=str(layout.root)),
                "gpu_host": LocalPreviewHost(remote_dir=str(tmp_path / "host")),
            },
        )
        assert result.success
        messages = [e.message or "" for e in instance.all_logs(result.run_id)]
    for path, words in [
        (truncated, "not complete JSON"),
        (apple, "macOS metadata file"),
        (hostile, "run_id '../other"),
    ]:
        said = [m for m in messages if f"run record {path}:" in m]
        assert len(said) == 1 and words in said[0], (path, said)
    (event,) = result.asset_materializations_for_node("generated_videos")
    assert event.metadata["skipped"].value is False
    states = sorted(r.state for r in RunStore(layout.runs_dir).all())
    assert states == ["succeeded", "succeeded"]  # the two real runs; the bad files left where they were
    assert truncated.exists() and apple.exists() and hostile.exists()
    assert [h.status for h in read_history(layout.history_log)] == ["success", "success"]


def test_a_hostile_spec_used_is_never_taken_for_a_folder_name(tmp_path: Path) -> None:
    """spec_used.json's run id names folders (the earlier output moved aside, the upscale's staged input): a hostile
    one is refused in one line by the upscale, and the next generation moves that folder aside under its time."""
    layout = make_project(tmp_path / "project")
    machine = LocalMachine(tmp_path / "host", label="preview@local")
    run_generation(layout, machine, PREVIEW, "tiny_prompt", log=lambda line: None)
    used_path = layout.output_dir("tiny_prompt") / "spec_used.json"
    used = json.loads(used_path.read_text())
    used_path.write_text(json.dumps({**used, "run_id": "../../../inputs/prompts/tiny_prompt.json"}))
    with pytest.raises(FileNotFoundError) as raised:
        runner.run_upscale(layout, machine, PREVIEW, "tiny_prompt", log=lambda line: None)
    assert str(raised.value).startswith(f"{used_path} is missing or bad: run_id '../../../inputs")
    assert "\n" not in str(raised.value)
    again = run_generation(layout, machine, PREVIEW, "tiny_prompt", force=True, log=lambda line: None)
    assert (
        again.previous_moved_to is not None
        and again.previous_moved_to.parent == layout.previous_outputs_dir / "tiny_prompt"
    )
    assert again.previous_moved_to.name.endswith("_unknown")
    assert json.loads(layout.prompt_file("tiny_prompt").read_text())["prompt"] == "a quiet street at dusk"


def test_a_bad_file_met_first_by_a_reader_without_a_run_log_is_still_named_in_the_runs_log(tmp_path: Path) -> None:
    """The pool's host choice reads the records before the run does (no run log there): the run's log still says it."""
    folder = tmp_path / "runs"
    RunStore(folder).save(_good(tmp_path))
    _write(folder, f"._{GOOD_ID}.json", APPLEDOUBLE)
    assert [r.run_id for r in RunStore(folder).all()] == [GOOD_ID]  # the logger's turn
    first_run, second_run = [], []
    for said in (first_run, second_run):
        store = RunStore(folder, warn=said.append)
        store.all(), store.all()
    assert len(first_run) == 1 and len(second_run) == 1 and "macOS metadata file" in first_run[0]
