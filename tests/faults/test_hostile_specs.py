"""Hostile prompt files: paths that leave the project (``../``, absolute, symlinks out), prompt texts with quotes,
newlines, shell metacharacters, NUL, U+2028 and invalid UTF-8, and failure messages holding any of them.

Paths that leave are refused with one line naming the file and the field, for every model, before anything is sent.
Texts are carried literally into the model's spec and outputs, or refused clearly. A failure's message reaches the
history line (still one JSON line) and Dagster's failure description and metadata as the text it is.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.cli import main
from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.assets.gpu_step import failure_from
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import check_prompt_file, new_prompt_spec, write_spec
from cosmos_assets.prompts.spec import SpecError, load_spec
from cosmos_assets.runs.history import HistoryRecord, append_history, read_history
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.runner import InferenceFailed
from tests.faults.test_hostile_names import (
    HOSTILE_PROMPT,
    OutsideSnapshot,
    assert_no_canary,
    failure_messages,
    preview_resources,
)
from tests.project_factory import make_project

SHOT = "shot_a"
MODELS = ("cosmos-transfer1", "cosmos-transfer2.5", "cosmos3", "preview")
HOSTILE_TEXT = (
    "He said \"stop\" and 'went'; $(touch /tmp/x) `id` | rm -rf / & > out < in \\ * ? [a] {b} ~ # !\n"
    "second line\ttab \0 NUL, U+2028 [\u2028] U+0085 [\x85], café ☕ 東京 \U0001f600"
)
NASTY_MESSAGE = "quote \" ' newline\nNUL \0 tab\t cr\r u2028 \u2028 nel \x85 $(x) `y`; \\ lone \udcff end"


@pytest.fixture(scope="module")
def outer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-specs")


@pytest.fixture(scope="module")
def layout(outer: Path) -> ProjectLayout:
    return make_project(outer / "project", shot=SHOT, prompt="plain_prompt")


@pytest.fixture(scope="module")
def outside_video(outer: Path, layout: ProjectLayout) -> Path:
    """A real control video outside the project, and symlinks to it (and to its folder) inside."""
    outside = outer / "outside" / "depth.mp4"
    outside.parent.mkdir()
    outside.write_bytes((layout.shot_videos_dir(SHOT) / "depth.mp4").read_bytes())
    os.symlink(outside, layout.shot_videos_dir(SHOT) / "linked_out.mp4")
    os.symlink(outside.parent, layout.videos_dir / "linked_shot")
    os.symlink("depth.mp4", layout.shot_videos_dir(SHOT) / "linked_in.mp4")  # inside: fine
    return outside


def _prompt_with_depth(layout: ProjectLayout, name: str, depth_path: str) -> Path:
    spec = new_prompt_spec(SHOT, "a street").to_json_dict()
    spec["depth"]["input_control"] = depth_path
    path = layout.prompt_file(name)
    path.write_text(json.dumps(spec))
    return path


ESCAPES = {
    "dotdot": ("../outside/depth.mp4", "'..'"),
    "dotdot_inside_path": ("inputs/videos/../../../outside/depth.mp4", "'..'"),
    "absolute": ("/etc/passwd", "is absolute"),
    "absolute_workspace": ("/workspace/inputs/videos/shot_a/depth.mp4", "is absolute"),
    "symlink_file_out": (f"inputs/videos/{SHOT}/linked_out.mp4", "outside"),
    "symlink_dir_out": ("inputs/videos/linked_shot/depth.mp4", "outside"),
}


def _model_cases() -> list[object]:
    cases = []
    for case in ESCAPES:
        for model in MODELS:
            cases.append(pytest.param(case, model, id=f"{case}-{model}"))
    return cases


@pytest.mark.parametrize(("case", "model"), _model_cases())
def test_spec_paths_leaving_the_project_are_refused_by_each_model_naming_file_and_field(
    case: str, model: str, layout: ProjectLayout, outside_video: Path
) -> None:
    value, reason = ESCAPES[case]
    path = _prompt_with_depth(layout, f"escape_{case}", value)
    with pytest.raises(SpecError) as caught:
        backend_named(model).check_prompt(load_spec(path), path, layout.root)
    lines = [line for line in str(caught.value).splitlines() if "depth.input_control" in line]
    assert lines and str(path) in lines[0] and reason in lines[0], str(caught.value)


@pytest.mark.parametrize("case", ESCAPES, ids=ESCAPES.keys())
def test_spec_paths_leaving_the_project_are_refused_by_the_run_check_and_the_cli(
    case: str, layout: ProjectLayout, outside_video: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value, reason = ESCAPES[case]
    path = _prompt_with_depth(layout, f"escape_{case}", value)
    with pytest.raises(SpecError):
        check_prompt_file(path, layout.root)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and any(
        str(path) in line and "depth.input_control" in line for line in err.splitlines()
    )


def test_a_symlink_that_stays_inside_the_project_is_fine(layout: ProjectLayout, outside_video: Path) -> None:
    path = _prompt_with_depth(layout, "linked_inside", f"inputs/videos/{SHOT}/linked_in.mp4")
    check_prompt_file(path, layout.root)


def test_a_symlinked_input_is_neither_uploaded_nor_run(outer: Path, layout: ProjectLayout, outside_video: Path) -> None:
    name = "escape_through_dagster"
    _prompt_with_depth(layout, name, f"inputs/videos/{SHOT}/linked_out.mp4")
    remote = outer / "remote"
    watch = OutsideSnapshot([outer], allowed=[layout.root, remote])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [name])
        result = dg.materialize(
            ALL_ASSETS,
            selection=["generated_videos"],
            partition_key=name,
            instance=instance,
            resources=preview_resources(layout.root, remote),
            raise_on_error=False,
        )
    assert not result.success
    message = failure_messages(result)[0]
    assert "depth.input_control" in message and "outside" in message, message
    assert not (remote / "inputs").exists(), "an input was uploaded"
    watch.assert_unchanged()


# ------------------------------------------------------------------------------------------------ prompt texts


def test_a_prompt_text_with_quotes_newlines_metacharacters_and_nul_runs_literally(
    outer: Path, layout: ProjectLayout
) -> None:
    name = "hostile_text"
    write_spec(new_prompt_spec(SHOT, HOSTILE_TEXT), layout.prompt_file(name))
    assert load_spec(layout.prompt_file(name)).prompt == HOSTILE_TEXT
    remote = outer / "remote-text"
    watch = OutsideSnapshot([outer], allowed=[layout.root, remote])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [name])
        result = dg.materialize(
            ALL_ASSETS,
            selection=["prompt_specs", "generated_videos"],
            partition_key=name,
            instance=instance,
            resources=preview_resources(layout.root, remote),
        )
        assert result.success
        metadata = result.asset_materializations_for_node("prompt_specs")[0].metadata
        stored = instance.fetch_materializations(dg.AssetKey("prompt_specs"), limit=1).records[0]
    assert metadata["prompt"].value == HOSTILE_TEXT
    assert stored.asset_materialization.metadata["prompt"].value == HOSTILE_TEXT  # through the sqlite event log
    out = layout.output_dir(name)
    used = json.loads((out / "spec_used.json").read_text())
    assert used["spec"]["prompt"] == HOSTILE_TEXT
    assert HOSTILE_TEXT not in used["command"]  # the text travels in the spec file, never in argv
    # The preview writes the prompt it was given beside the video: the model read the text as it is.
    assert (out / "output.txt").read_text() == HOSTILE_TEXT
    watch.assert_unchanged()
    assert_no_canary(outer, remote)


BAD_FILES = {
    "invalid_utf8": (b'{"prompt": "caf\xe9", "edge": {"control_weight": 0.5}}', "not UTF-8"),
    "lone_surrogate_escape": (b'{"prompt": "a \\ud800 b", "edge": {"control_weight": 0.5}}', "unpaired surrogate"),
    "raw_nul_in_string": (b'{"prompt": "a \x00 b", "edge": {"control_weight": 0.5}}', "invalid JSON"),
    "raw_newline_in_string": (b'{"prompt": "a \n b", "edge": {"control_weight": 0.5}}', "invalid JSON"),
    "deeply_nested": (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=BAD_FILES.keys())
def test_an_unreadable_prompt_text_is_refused_in_one_line(
    case: str, layout: ProjectLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    data, reason = BAD_FILES[case]
    path = layout.prompts_dir / f"bad_{case}.json"
    path.write_bytes(data)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert reason in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and reason in err


def test_an_unreadable_prompt_fails_its_asset_with_the_message(outer: Path, layout: ProjectLayout) -> None:
    name = "bad_bytes"
    layout.prompt_file(name).write_bytes(b'{"prompt": "caf\xe9 \xff", "edge": {"control_weight": 0.5}}')
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [name])
        result = dg.materialize(
            ALL_ASSETS,
            selection=["prompt_specs"],
            partition_key=name,
            instance=instance,
            resources=preview_resources(layout.root, outer / "remote-bad"),
            raise_on_error=False,
        )
    assert not result.success
    assert failure_messages(result) == [
        f"cosmos_assets.prompts.spec.SpecError: {layout.prompt_file(name)}: not UTF-8 text "
        "(invalid continuation byte); save it as UTF-8"
    ]


# ------------------------------------------------------------------------------------------------ failure messages


def test_a_failure_message_with_any_characters_stays_one_history_line_and_reads_back(tmp_path: Path) -> None:
    record = HistoryRecord(
        when=datetime.now(UTC),
        run_id="r1",
        stage="generate",
        prompt=HOSTILE_PROMPT,
        shot=None,
        host="h",
        backend="preview",
        command="(not started)",
        status="failed",
        error=NASTY_MESSAGE,
    )
    log = tmp_path / "run_history.log"
    append_history(log, record)
    append_history(log, record.model_copy(update={"run_id": "r2"}))
    raw = log.read_bytes()
    assert raw.count(b"\n") == 2 and all(json.loads(line) for line in raw.split(b"\n") if line)
    lines = read_history(log)  # before the fix: cut at U+2028/U+0085 (and the surrogate made the write raise)
    assert [h.run_id for h in lines] == ["r1", "r2"]
    assert lines[0].error == NASTY_MESSAGE.replace("\udcff", "\\udcff")  # every character kept, the undecodable shown
    assert lines[0].prompt == HOSTILE_PROMPT


def test_a_run_record_with_a_nasty_error_and_log_is_saved_and_derived(tmp_path: Path) -> None:
    record = RunRecord(
        run_id="r1",
        stage="generate",
        prompt=HOSTILE_PROMPT,
        host="h",
        runtime="process",
        model="preview",
        model_label="preview",
        preview=True,
        remote_output_folder="outputs/x/r1",
        spec={"prompt": "p"},
        spec_remote_path="s.json",
        spec_sha256="0",
    )
    record.state = "failed"
    record.error = NASTY_MESSAGE
    record.log_tail = [NASTY_MESSAGE, "HF_TOKEN=hf_secret_value in a log line"]
    text = record.model_dump_json()
    assert json.loads(text)["error"] == NASTY_MESSAGE.replace("\udcff", "\\udcff")
    assert "hf_secret_value" not in text
    append_history(tmp_path / "h.log", record.history())
    assert read_history(tmp_path / "h.log")[0].error == record.error


def test_a_failure_message_reaches_dagster_description_and_metadata_intact(tmp_path: Path) -> None:
    message = "generate for p failed on h: exit code 1. Log: /x/run.log\n" + NASTY_MESSAGE
    tail = [NASTY_MESSAGE.replace("\n", " "), "last line ` $(x) \u2028 \0"]

    @dg.asset
    def failing() -> None:
        raise failure_from(InferenceFailed(message, tail, False, tmp_path / "run.log"))

    with dg.instance_for_test() as instance:
        result = dg.materialize([failing], instance=instance, raise_on_error=False)
        assert not result.success
        failure = next(
            e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.is_step_failure
        )
    data = failure.dagster_event.event_specific_data
    assert data.user_failure_data.description == message.splitlines()[0]
    log_tail = data.user_failure_data.metadata["log_tail"].value
    assert log_tail == "```\n" + "\n".join(tail) + "\n```"  # read back from the sqlite event log as written
    assert data.user_failure_data.metadata["cause"].value == "model_exit"


def test_a_real_failing_run_with_a_hostile_name_writes_one_parseable_history_line(
    outer: Path, layout: ProjectLayout
) -> None:
    write_spec(new_prompt_spec(SHOT, "FAIL_TEST_EXIT " + HOSTILE_TEXT), layout.prompt_file(HOSTILE_PROMPT))
    remote = outer / "remote-fail"
    before = len(read_history(layout.history_log))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, [HOSTILE_PROMPT])
        result = dg.materialize(
            ALL_ASSETS,
            selection=["generated_videos"],
            partition_key=HOSTILE_PROMPT,
            instance=instance,
            resources=preview_resources(layout.root, remote),
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    description = failure.event_specific_data.user_failure_data.description
    assert description.startswith(f"generate for {HOSTILE_PROMPT} failed on ")
    history = read_history(layout.history_log)[before:]
    assert [(h.prompt, h.status) for h in history] == [(HOSTILE_PROMPT, "failed")]
    record = json.loads((layout.runs_dir / f"{history[0].run_id}.json").read_text())
    assert history[0].error == record["error"] and "FAIL_TEST_EXIT" in history[0].error
    assert_no_canary(outer, remote)
