"""The run record: written before the run, updated as it goes; spec_used.json and the history line derive from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cosmos_assets.machines.job import InferenceJob, RunOutcome, StagedFile
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore

SECRET = "hf_never_recorded_123"


def _record(tmp_path: Path, video: bytes = b"video-bytes", model: str = "cosmos-transfer1") -> RunRecord:
    backend = backend_named(model)
    spec = new_prompt_spec("shot_a", "a street")
    request = backend.generation("p1", spec, "20260101_000000_abcd1234", num_gpus=2)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "spec.json").write_text("{}")
    (tmp_path / "color.mp4").write_bytes(video)
    job = InferenceJob(
        run_id="20260101_000000_abcd1234",
        dagster_run_id="abcd1234-dagster",
        stage="generate",
        prompt="p1",
        invocation=request.invocation,
        inputs=[
            StagedFile(local=tmp_path / "spec.json", remote=request.spec_remote),
            StagedFile(local=tmp_path / "color.mp4", remote="inputs/videos/shot_a/color.mp4"),
        ],
    )
    return RunRecord.plan(
        job,
        shot="shot_a",
        host="ssh@gpu1",
        runtime="docker",
        model_label=backend.label,
        preview=backend.is_preview,
        spec=request.spec,
        spec_remote_path=request.spec_remote,
        project_root=tmp_path,
    )


def test_a_planned_record_names_placement_spec_and_input_contents(tmp_path: Path) -> None:
    record = _record(tmp_path)
    assert (record.state, record.host, record.runtime, record.model) == (
        "planned",
        "ssh@gpu1",
        "docker",
        "cosmos-transfer1",
    )
    assert record.remote_output_folder == "outputs/p1/20260101_000000_abcd1234"
    assert [i.path for i in record.inputs] == ["inputs/prompts/p1.json", "inputs/videos/shot_a/color.mp4"]
    assert record.spec_sha256 == record.inputs[0].sha256 and len(record.spec_sha256) == 64
    assert record.num_gpus == 2 and record.settings["num_gpus"] == 2


def test_the_inputs_digest_follows_content_not_names(tmp_path: Path) -> None:
    first = _record(tmp_path / "a")
    same = _record(tmp_path / "b")
    changed = _record(tmp_path / "c", video=b"other-bytes")
    assert first.inputs_digest() == same.inputs_digest() != changed.inputs_digest()
    assert _record(tmp_path / "d", model="preview").inputs_digest() != first.inputs_digest()


def test_spec_used_and_history_are_derived_and_redacted(tmp_path: Path) -> None:
    record = _record(tmp_path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    command = ["docker", "run", "-d", "--name", "cosmos-x", "-e", f"HF_TOKEN={SECRET}", "img", "python3", "x.py"]
    record.ran(
        command,
        RunOutcome(
            exit_code=0,
            command=command,
            environment={"HF_TOKEN": SECRET, "A": "1"},
            container={"runtime": "docker", "name": "cosmos-x", "user": "1000:1000"},
            started_at=start,
            finished_at=start + timedelta(seconds=90),
        ),
    )
    record.state = "succeeded"
    used = record.spec_used()
    assert (used.backend, used.run_id, used.video_save_folder, used.exit_code) == (
        "cosmos-transfer1",
        record.run_id,
        record.remote_output_folder,
        0,
    )
    assert used.container["name"] == "cosmos-x" and used.inputs == record.inputs
    history = record.history()
    assert (history.status, history.inference_seconds, history.gpu_seconds) == ("success", 90.0, 180.0)
    record.error = f"docker said HF_TOKEN={SECRET} was refused"
    store = RunStore(tmp_path / "runs")
    store.save(record)
    for text in (store.path(record.run_id).read_text(), used.model_dump_json(), record.history().model_dump_json()):
        assert SECRET not in text
    assert store.load(record.run_id).state == "succeeded" and [r.run_id for r in store.all()] == [record.run_id]


def test_the_preview_holds_no_gpu_seconds(tmp_path: Path) -> None:
    record = _record(tmp_path, model="preview")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    record.ran(
        [], RunOutcome(exit_code=0, command=["python3"], started_at=start, finished_at=start + timedelta(seconds=5))
    )
    assert record.preview and "not the model" in record.model_label
    assert record.inference_seconds == 5.0 and record.gpu_seconds == 0.0
