"""runner.py with the real preview backend on a local host: outputs, records, failures, no overwrites."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import pytest

from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.media import probe_video
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import write_spec
from cosmos_assets.prompts.spec import SpecError, load_spec
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import InferenceFailed, run_generation, run_upscale
from tests.project_factory import TINY, make_project


@pytest.fixture
def project(tmp_path: Path):
    layout = make_project(tmp_path / "project")
    host = LocalMachine(tmp_path / "host" / "cosmos-transfer1", label="preview@local")
    return layout, host


PREVIEW = backend_named("preview")


def test_generation_then_upscale_write_the_seed_layout(project) -> None:
    layout, host = project
    lines: list[str] = []
    gen = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="abcdef0123", log=lines.append)
    assert {p.name for p in gen.output_dir.iterdir()} >= {"output.mp4", "spec_used.json", "prompt_spec.json", "run.log"}
    assert any("[preview]" in line for line in lines)
    assert gen.shot == "tiny_shot"
    assert (
        json.loads((gen.output_dir / "prompt_spec.json").read_text())
        == load_spec(layout.prompt_file("tiny_prompt")).to_json_dict()
    )
    run_log = (gen.output_dir / "run.log").read_text()
    assert "[cosmos-assets] command:" in run_log and "preview backend" in run_log

    remote_generated = host.root / gen.spec_used.video_save_folder / "output.mp4"
    model_wrote = remote_generated.read_bytes()
    up = run_upscale(layout, host, PREVIEW, "tiny_prompt", control_weight=0.7, log=lines.append)
    assert remote_generated.read_bytes() == model_wrote  # the generation's remote folder is never written to again
    gen_info, up_info = probe_video(gen.video), probe_video(up.video)
    assert (up_info.width, up_info.height) == (3 * gen_info.width, 3 * gen_info.height)
    assert up_info.frames == gen_info.frames == TINY["frames"]
    used = json.loads((up.output_dir / "spec_used.json").read_text())
    # the local (recipe-stamped) clip is staged as an input of the upscale
    assert used["spec"] == {
        "input_video_path": f"inputs/generated/tiny_prompt/{gen.record.run_id}/output.mp4",
        "upscale": {"control_weight": 0.7},
    }
    assert "--num_steps" in used["command"] and used["command"][used["command"].index("--num_steps") + 1] == "10"

    history = read_history(layout.history_log)
    assert [(h.stage, h.status) for h in history] == [("generate", "success"), ("upscale", "success")]
    assert history[0].outputs and all(o.startswith("outputs/tiny_prompt/") for o in history[0].outputs)


def test_a_second_run_moves_the_first_aside_and_skips_unchanged_inputs(project) -> None:
    layout, host = project
    first = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    first_bytes = first.video.read_bytes()
    second = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222", force=True)  # else skipped
    assert second.previous_moved_to is not None
    assert (second.previous_moved_to / "output.mp4").read_bytes() == first_bytes
    assert second.previous_moved_to.name == first.spec_used.run_id
    assert second.upload.bytes_sent == 0 and second.upload.files_sent == 0
    assert second.upload.files_skipped == 4  # spec + color, depth, segmentation


def test_a_failing_run_fails_with_its_log_tail_and_no_outputs(project) -> None:
    layout, host = project
    spec = load_spec(layout.prompt_file("tiny_prompt"))
    write_spec(spec.model_copy(update={"prompt": "GUARDRAIL_TEST_BLOCK please"}), layout.prompt_file("blocked"))
    with pytest.raises(InferenceFailed) as caught:
        run_generation(layout, host, PREVIEW, "blocked")
    assert caught.value.guardrail_blocked
    assert "guardrail" in str(caught.value)
    assert any("GUARDRAIL BLOCKED" in line for line in caught.value.log_tail)
    assert caught.value.log_path.exists() and caught.value.log_path.parts[-4] == ".failed"
    assert not layout.output_dir("blocked").exists()
    assert read_history(layout.history_log)[-1].status == "guardrail_blocked"
    with pytest.raises(FileNotFoundError, match="generated_videos"):
        run_upscale(layout, host, PREVIEW, "blocked")


def test_a_spec_pointing_at_a_missing_control_is_refused_before_any_upload(project) -> None:
    layout, host = project
    spec = load_spec(layout.prompt_file("tiny_prompt"))
    write_spec(
        spec.model_copy(update={"input_video_path": "inputs/videos/nowhere/color.mp4"}), layout.prompt_file("broken")
    )
    with pytest.raises(SpecError) as caught:
        run_generation(layout, host, PREVIEW, "broken")
    assert "broken.json" in str(caught.value) and "inputs/videos/nowhere/color.mp4" in str(caught.value)
    assert not host.root.exists() or not any(host.root.rglob("*.mp4"))


def test_videos_subdir_override_reads_another_shot_folder(project) -> None:
    layout, host = project
    import shutil

    shutil.copytree(layout.shot_videos_dir("tiny_shot"), layout.shot_videos_dir("tiny_shot_v2"))
    result = run_generation(layout, host, PREVIEW, "tiny_prompt", videos_subdir="tiny_shot_v2")
    assert result.shot == "tiny_shot_v2"
    assert result.spec_used.spec["input_video_path"] == "inputs/videos/tiny_shot_v2/color.mp4"
    assert (host.root / "inputs/videos/tiny_shot_v2/depth.mp4").exists()


def test_a_multi_gpu_run_works_on_the_preview_host(project) -> None:
    """The real command launches torchrun; the preview process stands in for its rank 0."""
    layout, host = project
    result = run_generation(layout, host, PREVIEW, "tiny_prompt", num_gpus=2)
    assert probe_video(result.video).frames == TINY["frames"]
    assert result.spec_used.environment["WORLD_SIZE"] == "2" and result.spec_used.environment["RANK"] == "0"


class _UnreadyHost(LocalMachine):
    def preflight(self, job, log) -> None:
        log("checking the host")
        raise HostNotReadyError("no GPUs: nvidia-smi -L lists 0, NUM_GPU=1 needs 1")


def test_a_host_that_is_not_ready_leaves_a_history_line_and_its_log(project) -> None:
    layout, host = project
    unready = _UnreadyHost(host.root)
    with pytest.raises(HostNotReadyError):
        run_generation(layout, unready, PREVIEW, "tiny_prompt")
    record = read_history(layout.history_log)[-1]
    assert (record.status, record.command) == ("failed", "(not started)")
    assert "no GPUs" in record.error
    kept = layout.outputs_dir / ".failed" / "tiny_prompt" / record.run_id / "run.log"
    assert "checking the host" in kept.read_text()
    assert not (layout.staging_dir / record.run_id).exists()
    assert not layout.output_dir("tiny_prompt").exists()


def test_a_cancelled_run_is_recorded_as_cancelled(project) -> None:
    layout, host = project

    def cancel_at_first_step(line: str) -> None:
        if "step 1/" in line:
            raise KeyboardInterrupt  # what a terminated Dagster step sees: a BaseException, not an Exception

    with pytest.raises(KeyboardInterrupt):
        run_generation(layout, host, PREVIEW, "tiny_prompt", log=cancel_at_first_step)
    record = read_history(layout.history_log)[-1]
    assert record.status == "cancelled"
    assert not layout.output_dir("tiny_prompt").exists()


def test_the_run_record_is_on_disk_before_the_model_starts_and_follows_the_run(project) -> None:
    layout, host = project
    seen: dict[str, str] = {}

    def watch(line: str) -> None:
        if "step 1/" in line and not seen:
            (record,) = RunStore(layout.runs_dir).all()
            seen.update(state=record.state, command=record.command_line, folder=record.remote_output_folder)

    result = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="33333333", log=watch)
    assert seen["state"] == "running" and "preview_model.py" in seen["command"]
    record = RunStore(layout.runs_dir).load(result.record.run_id)
    assert record.state == "succeeded" and record.remote_output_folder == seen["folder"]
    assert record.outputs == read_history(layout.history_log)[-1].outputs
    assert json.loads((result.output_dir / "spec_used.json").read_text())["run_id"] == record.run_id
    assert {i.path for i in record.inputs} >= {"inputs/prompts/tiny_prompt.json", "inputs/videos/tiny_shot/depth.mp4"}
    assert (host.root / record.remote_output_folder / "output.mp4").exists()  # the run's own folder on the machine


def test_a_failed_runs_record_says_why(project) -> None:
    layout, host = project
    spec = load_spec(layout.prompt_file("tiny_prompt"))
    write_spec(spec.model_copy(update={"prompt": "GUARDRAIL_TEST_BLOCK please"}), layout.prompt_file("blocked"))
    with pytest.raises(InferenceFailed):
        run_generation(layout, host, PREVIEW, "blocked")
    (record,) = RunStore(layout.runs_dir).all()
    assert record.state == "guardrail_blocked" and record.exit_code != 0 and "GUARDRAIL" in (record.error or "")


def test_a_generation_and_its_upscale_in_the_same_second_keep_their_own_records(project) -> None:
    """Regression: one Dagster run's two stages starting within a second once shared a run id, so the upscale's
    record replaced the generation's and a later unchanged generation was not recognised as done."""
    from datetime import datetime

    layout, host = project
    now = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
    gen = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="samerun0", now=now)
    up = run_upscale(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="samerun0", now=now)
    assert gen.record.run_id != up.record.run_id
    states = {(r.stage, r.state) for r in RunStore(layout.runs_dir).all()}
    assert states == {("generate", "succeeded"), ("upscale", "succeeded")}
