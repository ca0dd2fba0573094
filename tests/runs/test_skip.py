"""Skip what is done (issue 11): an unchanged prompt whose outputs are in place starts nothing; any change runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cosmos_assets.machines.job import InferenceJob, LogLine, RunOutcome, StagedFile
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.models.registry import backend_named
from cosmos_assets.progress import TransferStats
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.ids import new_run_id
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_generation, run_upscale
from cosmos_assets.runs.skip import decide
from tests.project_factory import make_project

PREVIEW = backend_named("preview")


class CountingMachine(LocalMachine):
    """The local machine, counting what it was asked to upload and run."""

    uploads = 0
    runs = 0

    def upload(self, files: list[StagedFile], log: LogLine) -> TransferStats:
        self.uploads += 1
        return super().upload(files, log)

    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        self.runs += 1
        return super().run(job, log)


@pytest.fixture
def project(tmp_path: Path):
    layout = make_project(tmp_path / "project")
    return layout, CountingMachine(tmp_path / "host" / "cosmos-transfer1", label="preview@local")


def test_an_unchanged_generation_and_upscale_start_nothing_and_say_which_run_they_match(project) -> None:
    layout, host = project
    first = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    first_up = run_upscale(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    uploads, runs = host.uploads, host.runs
    lines: list[str] = []
    again = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222", log=lines.append)
    again_up = run_upscale(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222", log=lines.append)
    assert (host.uploads, host.runs) == (uploads, runs)
    assert again.skipped and first.record.run_id in again.skipped
    assert again.record.run_id == first.record.run_id and again.data_version == first.data_version
    assert again_up.skipped and again_up.record.run_id == first_up.record.run_id
    assert again.video.exists() and again.previous_moved_to is None
    assert any("skipped" in line and first.record.run_id in line for line in lines)
    history = read_history(layout.history_log)
    assert [(h.stage, h.status) for h in history][-2:] == [("generate", "skipped"), ("upscale", "skipped")]
    assert history[-2].dagster_run_id == "22222222" and history[-2].gpu_seconds == 0 and history[-2].cost == 0
    assert len(RunStore(layout.runs_dir).all()) == 2  # a skip writes no run record
    assert not list((layout.outputs_dir).glob("**/effective_spec*"))


def test_force_runs_again(project) -> None:
    layout, host = project
    run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    again = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222", force=True)
    assert again.skipped is None and host.runs == 2 and again.previous_moved_to is not None


def test_a_changed_control_video_runs_again_and_so_does_the_upscale(project) -> None:
    layout, host = project
    first = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    run_upscale(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    videos = layout.shot_videos_dir("tiny_shot")
    shutil.copyfile(videos / "color.mp4", videos / "depth.mp4")  # a valid video, other content
    again = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222")
    assert again.skipped is None and host.runs == 3 and again.data_version != first.data_version
    up = run_upscale(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222")
    assert up.skipped is None and host.runs == 4  # its input, the generated video, is new


def test_a_changed_setting_runs_again(project) -> None:
    layout, host = project
    run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    again = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222", num_gpus=2)
    assert again.skipped is None and host.runs == 2
    up = run_upscale(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222", control_weight=0.7)
    up2 = run_upscale(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="33333333", control_weight=0.8)
    assert up.skipped is None and up2.skipped is None and host.runs == 4


@pytest.mark.parametrize("damage", ["delete", "edit"])
def test_a_deleted_or_edited_local_output_runs_again(project, damage: str) -> None:
    layout, host = project
    first = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    if damage == "delete":
        first.video.unlink()
    else:
        (first.output_dir / "run.log").write_text("edited by hand\n")
    lines: list[str] = []
    again = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222", log=lines.append)
    assert again.skipped is None and host.runs == 2
    assert any("not as it left them" in line for line in lines)


def test_a_changed_model_or_image_is_other_work(project) -> None:
    layout, host = project
    first = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    store = RunStore(layout.runs_dir)
    same = first.record.model_copy()  # a probe is a planned record; only the digest is compared
    assert decide(store, layout.root, same).skip
    for change in ({"model": "cosmos-transfer1"}, {"image": "cosmos:v2"}, {"num_gpus": 2}):
        decision = decide(store, layout.root, first.record.model_copy(update=change))
        assert not decision.skip and "inputs differ" in decision.reason
    assert not decide(store, layout.root, same, force=True).skip


def test_a_failed_later_run_does_not_hide_the_last_success(project) -> None:
    layout, host = project
    first = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")
    store = RunStore(layout.runs_dir)
    later = new_run_id()
    failed = first.record.model_copy(
        update={"run_id": later, "remote_output_folder": f"outputs/tiny_prompt/{later}", "state": "failed"}
    )
    store.save(failed)
    assert decide(store, layout.root, first.record.model_copy()).skip
