"""The render and prompt sensors, evaluated the way the daemon does (``evaluate_tick``) on a real instance.

Time is controlled through file mtimes (``os.utime``) or the ``now`` argument of the pure planner; no test
sleeps or times anything.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.instance.ref import InstanceRef
from dagster._utils.test.data_versions import get_stale_status_resolver

from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.jobs import CosmosJobs, build_jobs
from cosmos_assets.defs.resources import LocalPreviewHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.defs.sensors.folders import build_sensors
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media import scan_render_folder, write_png
from cosmos_assets.media.sample_render import make_sample_render
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.settings import Settings
from cosmos_assets.watch.cursors import PromptCursor, RenderCursor, SensorSettings
from cosmos_assets.watch.plans import plan_prompt_tick, plan_render_tick, stat_render_folder
from tests.project_factory import make_project

REPO = Path(__file__).resolve().parents[1]
HOST_LABEL = "preview@local"
SMALL = {"frames": 3, "width": 32, "height": 16}


class Project:
    """A project root, a DAGSTER_HOME with the repo's dagster.yaml, the instance and the sensors' Definitions."""

    def __init__(self, root: Path, settings: SensorSettings):
        self.root = root
        self.layout = ProjectLayout(root=root)
        self.layout.ensure_working_folders()
        self.home = root / "dagster_home"
        self.home.mkdir()
        shutil.copy(REPO / "dagster_home" / "dagster.yaml", self.home / "dagster.yaml")
        self.instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home)))
        self.use(settings)

    def use(self, settings: SensorSettings) -> None:
        self.resources = {
            "project": ProjectResource(root=str(self.root)),
            "gpu_host": LocalPreviewHost(remote_dir=str(self.root / ".preview_host" / "cosmos-transfer1")),
        }
        self.jobs = build_jobs(HOST_LABEL)
        self.defs = dg.Definitions(
            assets=ALL_ASSETS, jobs=self.jobs, sensors=sensors_for(settings, self.jobs), resources=self.resources
        )

    def tick(self, sensor: str, cursor: str | None) -> SensorExecutionData:
        """One evaluation as the daemon runs it; the asset events it reports are then recorded and the partitions it
        asks for added, as the daemon does (both before any run starts)."""
        sensor_def = self.defs.resolve_sensor_def(sensor)
        with dg.build_sensor_context(
            instance=self.instance,
            instance_ref=InstanceRef.from_dir(str(self.home)),
            cursor=cursor,
            definitions=self.defs,
            resources={"project": self.resources["project"]},
        ) as context:
            data = sensor_def.evaluate_tick(context)
        for event in data.asset_events or []:
            self.instance.report_runless_asset_event(event)
        for request in data.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return data

    def materialize(self, selection: list[str], partition: str) -> dg.ExecuteInJobResult:
        result = dg.materialize(
            ALL_ASSETS, selection=selection, partition_key=partition, instance=self.instance, resources=self.resources
        )
        assert result.success
        return result


def sensors_for(settings: SensorSettings, jobs: CosmosJobs) -> list[dg.SensorDefinition]:
    """The sensors wired as ``definitions.build_definitions`` wires them: job objects, no names."""
    return build_sensors(settings, shot_job=jobs.shot, prompt_job=jobs.prompt, gpu_job=jobs.full_cycle)


@pytest.fixture()
def project(tmp_path: Path) -> Project:
    return Project(tmp_path, SensorSettings())


def age(path: Path, seconds: float = 120.0) -> None:
    """Make a folder and everything in it look written ``seconds`` ago (a settled render)."""
    then = time.time() - seconds
    for file in path.iterdir():
        os.utime(file, (then, then))
    os.utime(path, (then, then))


def settled_render(layout: ProjectLayout, shot: str) -> str:
    """A small valid render, settled; returns its fingerprint as the sensor keys runs with."""
    folder = layout.render_dir(shot)
    make_sample_render(folder, **SMALL)
    age(folder)
    return scan_render_folder(folder).fingerprint()[:16]


def rewrite_frame_atomically(folder: Path, name: str, value: int) -> None:
    import numpy as np

    write_png(folder / name, np.full((SMALL["height"], SMALL["width"], 3), value, dtype=np.uint8))


# ------------------------------------------------------------------------------------------------
# Render sensor
# ------------------------------------------------------------------------------------------------


def test_new_folder_adds_its_partition_and_runs_shot_job(project: Project) -> None:
    fingerprint = settled_render(project.layout, "shot_a")
    data = project.tick("render_sensor", None)

    assert [(r.partition_key, r.run_key) for r in data.run_requests] == [("shot_a", f"shot_a:{fingerprint}")]
    assert data.run_requests[0].tags["dagster/partition"] == "shot_a"
    assert [list(r.partition_keys) for r in data.dynamic_partitions_requests] == [["shot_a"]]
    assert project.instance.has_dynamic_partition("shots", "shot_a")
    sensor = project.defs.resolve_sensor_def("render_sensor")
    assert sensor.job_name == "shot_job"


def test_unchanged_folder_starts_no_run_and_is_not_opened(project: Project) -> None:
    settled_render(project.layout, "shot_a")
    first = project.tick("render_sensor", None)
    second = project.tick("render_sensor", first.cursor)
    assert second.run_requests == []
    assert "1 render folders, 0 new or changed, 1 re-checked, 0 runs" in second.skip_message

    plan = plan_render_tick(project.layout, RenderCursor.load(first.cursor), time.time(), deep_checks=0)
    assert (plan.examined, plan.deep_checked, plan.runs, plan.problems) == (0, 0, [], [])


@pytest.mark.parametrize("change", ["rewritten", "added", "removed"])
def test_changed_frames_run_again_with_a_new_run_key(project: Project, change: str) -> None:
    folder = project.layout.render_dir("shot_a")
    before = settled_render(project.layout, "shot_a")
    cursor = project.tick("render_sensor", None).cursor
    if change == "rewritten":  # temp file + rename, as renderers and write_png do
        rewrite_frame_atomically(folder, "color.1002.png", 200)
    elif change == "added":
        for modality in ("color", "depth", "segmentation"):
            shutil.copy(folder / f"{modality}.1003.png", folder / f"{modality}.1004.png")
    else:
        for modality in ("color", "depth", "segmentation"):
            (folder / f"{modality}.1003.png").unlink()
    age(folder, 60)
    after = scan_render_folder(folder).fingerprint()[:16]

    data = project.tick("render_sensor", cursor)
    assert after != before
    assert [(r.partition_key, r.run_key, r.tags["cosmos/trigger"]) for r in data.run_requests] == [
        ("shot_a", f"shot_a:{after}", "frames changed")
    ]


def test_frame_rewritten_in_place_is_found_by_the_round_robin_deep_check(project: Project) -> None:
    folder = project.layout.render_dir("shot_a")
    settled_render(project.layout, "shot_a")
    cursor = RenderCursor.load(project.tick("render_sensor", None).cursor)
    dir_mtime = folder.stat().st_mtime_ns
    frame = folder / "depth.1001.png"
    data = frame.read_bytes()
    with open(frame, "r+b") as handle:  # in place: the folder's own mtime does not change
        handle.write(data)
    then = time.time() - 60
    os.utime(frame, (then, then))
    assert folder.stat().st_mtime_ns == dir_mtime

    cheap = plan_render_tick(project.layout, cursor, time.time(), deep_checks=0)
    assert cheap.runs == []
    deep = plan_render_tick(project.layout, cursor, time.time(), deep_checks=1)
    assert [run.shot for run in deep.runs] == ["shot_a"]


def test_half_written_folder_waits_then_runs_once_settled(project: Project) -> None:
    folder = project.layout.render_dir("shot_a")
    make_sample_render(folder, **SMALL)
    (folder / "segmentation.1003.png").unlink()  # the renderer has not written the last seg frame yet
    now = time.time()

    plan = plan_render_tick(project.layout, RenderCursor(), now)
    assert (plan.waiting, plan.runs, plan.shots_to_add, plan.problems) == (["shot_a"], [], [], [])

    shutil.copy(folder / "segmentation.1002.png", folder / "segmentation.1003.png")  # the frame lands
    still = plan_render_tick(project.layout, plan.cursor, now + 5)
    assert still.waiting == ["shot_a"] and still.runs == []

    settled = plan_render_tick(project.layout, still.cursor, now + 31)
    assert [run.shot for run in settled.runs] == ["shot_a"] and settled.shots_to_add == ["shot_a"]
    again = plan_render_tick(project.layout, settled.cursor, now + 62)
    assert again.runs == [] and again.waiting == []


def test_half_written_folder_through_the_sensor_waits_for_the_settle_time(project: Project) -> None:
    make_sample_render(project.layout.render_dir("shot_a"), **SMALL)  # written just now
    data = project.tick("render_sensor", None)
    assert data.run_requests == [] and "waiting to settle: shot_a" in data.skip_message
    assert not project.instance.has_dynamic_partition("shots", "shot_a")
    age(project.layout.render_dir("shot_a"))
    assert [r.partition_key for r in project.tick("render_sensor", data.cursor).run_requests] == ["shot_a"]


def test_settled_folder_with_a_missing_pass_frame_is_reported_not_run(project: Project) -> None:
    folder = project.layout.render_dir("shot_a")
    make_sample_render(folder, **SMALL)
    (folder / "depth.1002.png").unlink()
    age(folder)
    data = project.tick("render_sensor", None)
    assert data.run_requests == []
    assert "problems: shot_a" in data.skip_message
    plan = plan_render_tick(project.layout, RenderCursor(), time.time())
    assert "depth.1002.png is missing" in plan.problems[0].message


def test_bad_folder_is_reported_and_the_good_one_still_runs(project: Project) -> None:
    good = settled_render(project.layout, "good_shot")
    bad = project.layout.render_dir("bad_shot")
    make_sample_render(bad, **SMALL)
    truncated = bad / "color.1002.png"
    truncated.write_bytes(truncated.read_bytes()[:40])  # a render killed mid-frame
    age(bad)

    plan = plan_render_tick(project.layout, RenderCursor(), time.time())
    assert [p.name for p in plan.problems] == ["bad_shot"] and "truncated" in plan.problems[0].message
    data = project.tick("render_sensor", None)
    assert [r.run_key for r in data.run_requests] == [f"good_shot:{good}"]
    assert project.instance.has_dynamic_partition("shots", "bad_shot")  # listed in the UI, not run

    quiet = plan_render_tick(project.layout, plan.cursor, time.time())
    assert quiet.problems == [] and quiet.still_bad == ["bad_shot"]  # reported once, remembered
    make_sample_render(bad, **SMALL)  # re-rendered: fixed
    age(bad)
    fixed = plan_render_tick(project.layout, quiet.cursor, time.time())
    assert [(r.shot, r.reason) for r in fixed.runs] == [("bad_shot", "frames changed")]


def test_unreadable_folder_does_not_stop_the_tick(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    settled_render(project.layout, "good_shot")
    settled_render(project.layout, "locked_shot")
    import cosmos_assets.watch.plans as sensors

    real = sensors.stat_render_folder

    def failing(folder: Path, mtime: int):
        if folder.name == "locked_shot":
            raise PermissionError(13, "Permission denied", str(folder))
        return real(folder, mtime)

    monkeypatch.setattr(sensors, "stat_render_folder", failing)
    plan = plan_render_tick(project.layout, RenderCursor(), time.time())
    assert [r.shot for r in plan.runs] == ["good_shot"]
    assert [p.name for p in plan.problems] == ["locked_shot"] and "Permission denied" in plan.problems[0].message


def test_removed_folder_keeps_partition_and_outputs_and_starts_nothing(project: Project) -> None:
    settled_render(project.layout, "shot_a")
    cursor = project.tick("render_sensor", None).cursor
    videos = project.layout.shot_videos_dir("shot_a")
    videos.mkdir(parents=True)
    (videos / "color.mp4").write_bytes(b"kept")
    shutil.rmtree(project.layout.render_dir("shot_a"))

    data = project.tick("render_sensor", cursor)
    assert data.run_requests == []
    assert "removed (partition and outputs kept): shot_a" in data.skip_message
    assert project.instance.has_dynamic_partition("shots", "shot_a")
    assert (videos / "color.mp4").read_bytes() == b"kept"
    assert "shot_a" not in RenderCursor.load(data.cursor).shots


def test_empty_and_hidden_folders_are_not_shots(project: Project) -> None:
    (project.layout.renders_dir / "not_yet").mkdir()
    make_sample_render(project.layout.renders_dir / ".shot_a.partial", **SMALL)
    plan = plan_render_tick(project.layout, RenderCursor(), time.time() + 3600)
    assert (plan.runs, plan.shots_to_add, plan.problems) == ([], [], [])


def test_already_encoded_shot_is_not_run_again_on_a_fresh_cursor(project: Project) -> None:
    """First deployment over a project whose controls were made by the CLI: no re-encode."""
    fingerprint = settled_render(project.layout, "shot_a")
    project.instance.add_dynamic_partitions("shots", ["shot_a"])
    project.materialize(["shots", "control_videos"], "shot_a")
    data = project.tick("render_sensor", None)
    assert data.run_requests == []
    assert RenderCursor.load(data.cursor).shots["shot_a"].f == fingerprint


def test_stat_fingerprint_matches_the_render_sequence_fingerprint(project: Project) -> None:
    folder = project.layout.render_dir("shot_a")
    make_sample_render(folder, frames=12, width=16, height=8, start=998)  # 998..1009: digit widths mixed
    stat = stat_render_folder(folder, folder.stat().st_mtime_ns)
    assert stat.fingerprint == scan_render_folder(folder).fingerprint()[:16]
    assert stat.counts == {"color": 12, "depth": 12, "segmentation": 12}


def test_scan_budget_defers_the_rest_to_the_next_tick(project: Project) -> None:
    for shot in ("s1", "s2", "s3"):
        settled_render(project.layout, shot)
    first = plan_render_tick(project.layout, RenderCursor(), time.time(), scan_budget=2)
    assert [r.shot for r in first.runs] == ["s1", "s2"] and first.deferred == 1
    second = plan_render_tick(project.layout, first.cursor, time.time(), scan_budget=2)
    assert [r.shot for r in second.runs] == ["s3"]


def test_large_cursor_round_trips_compressed() -> None:
    from cosmos_assets.watch.cursors import ShotState

    cursor = RenderCursor(
        shots={f"shot_{i:05d}": ShotState(1_700_000_000_000_000_000 + i, f"{i:016x}", "ok") for i in range(2000)}
    )
    raw = cursor.dump()
    assert raw.startswith("z1:") and len(raw) < len(cursor.model_dump_json())
    assert RenderCursor.load(raw) == cursor
    assert RenderCursor.load("not a cursor") == RenderCursor()


# ------------------------------------------------------------------------------------------------
# Prompt sensor
# ------------------------------------------------------------------------------------------------


def _prompt_project(project: Project) -> ProjectLayout:
    layout = make_project(project.root)
    project.instance.add_dynamic_partitions("shots", ["tiny_shot"])
    return layout


def test_new_prompt_runs_prompt_specs_only_when_auto_generate_is_off(project: Project) -> None:
    _prompt_project(project)
    data = project.tick("prompt_sensor", None)
    assert [(r.partition_key, r.asset_selection) for r in data.run_requests] == [
        ("tiny_prompt", [dg.AssetKey("prompt_specs")])
    ]
    assert "gpu_host" not in data.run_requests[0].tags
    assert project.instance.has_dynamic_partition("prompts", "tiny_prompt")
    assert project.tick("prompt_sensor", data.cursor).run_requests == []


def test_auto_generate_on_runs_generation_on_the_gpu_host_queue(project: Project) -> None:
    _prompt_project(project)
    project.use(SensorSettings(auto_generate=True))
    data = project.tick("prompt_sensor", None)
    request = data.run_requests[0]
    assert request.asset_selection == [dg.AssetKey(k) for k in ("prompt_specs", "generated_videos", "upscaled_videos")]
    assert request.tags["gpu_host"] == HOST_LABEL


def test_edited_prompt_runs_again_and_a_touch_does_not(project: Project) -> None:
    layout = _prompt_project(project)
    cursor = project.tick("prompt_sensor", None).cursor
    path = layout.prompt_file("tiny_prompt")

    os.utime(path, (time.time() + 5, time.time() + 5))  # saved without a change
    touched = project.tick("prompt_sensor", cursor)
    assert touched.run_requests == []

    write_spec(new_prompt_spec("tiny_shot", "the same street in the rain"), path)
    edited = project.tick("prompt_sensor", touched.cursor)
    assert [(r.partition_key, r.tags["cosmos/trigger"]) for r in edited.run_requests] == [
        ("tiny_prompt", "prompt file edited")
    ]


def test_invalid_prompt_is_reported_and_not_run(project: Project) -> None:
    layout = _prompt_project(project)
    layout.prompt_file("broken").write_text('{"prompt": "x",, }')
    data = project.tick("prompt_sensor", None)
    assert [r.partition_key for r in data.run_requests] == ["tiny_prompt"]
    assert project.instance.has_dynamic_partition("prompts", "broken")  # shown in the UI as missing
    plan = plan_prompt_tick(layout, PromptCursor(), set())
    assert [p.name for p in plan.problems] == ["broken"] and "invalid JSON" in plan.problems[0].message
    second = project.tick("prompt_sensor", data.cursor)
    assert second.run_requests == [] and "problems" not in second.skip_message  # reported once


def test_prompt_waiting_for_its_control_videos_runs_when_they_are_encoded(project: Project) -> None:
    fingerprint = settled_render(project.layout, "new_shot")
    write_spec(new_prompt_spec("new_shot", "fog rolling in"), project.layout.prompt_file("fog"))
    first = project.tick("prompt_sensor", None)
    assert first.run_requests == [] and "problems: fog" in first.skip_message

    render = project.tick("render_sensor", None)
    assert [r.run_key for r in render.run_requests] == [f"new_shot:{fingerprint}"]
    project.materialize(["shots", "control_videos"], "new_shot")  # what the render run does
    second = project.tick("prompt_sensor", first.cursor)
    assert [(r.partition_key, r.tags["cosmos/trigger"]) for r in second.run_requests] == [
        ("fog", "control videos of shot new_shot re-encoded")
    ]


def test_removed_prompt_keeps_partition_and_outputs(project: Project) -> None:
    layout = _prompt_project(project)
    cursor = project.tick("prompt_sensor", None).cursor
    layout.output_dir("tiny_prompt").mkdir(parents=True)
    (layout.output_dir("tiny_prompt") / "output.mp4").write_bytes(b"kept")
    layout.prompt_file("tiny_prompt").unlink()
    data = project.tick("prompt_sensor", cursor)
    assert data.run_requests == [] and "removed (partition and outputs kept): tiny_prompt" in data.skip_message
    assert project.instance.has_dynamic_partition("prompts", "tiny_prompt")
    assert (layout.output_dir("tiny_prompt") / "output.mp4").read_bytes() == b"kept"
    assert "tiny_prompt" not in PromptCursor.load(data.cursor).prompts


def test_prompt_sensor_observes_prompt_inputs_for_exactly_the_prompts_it_runs(project: Project) -> None:
    """Each run comes with an observation of prompt_inputs at the data version the run's prompt_specs will record;
    a tick that runs nothing observes nothing."""
    layout = _prompt_project(project)
    data = project.tick("prompt_sensor", None)
    [request] = data.run_requests
    [observation] = data.asset_events
    assert isinstance(observation, dg.AssetObservation)
    assert (observation.asset_key, observation.partition) == (dg.AssetKey("prompt_inputs"), "tiny_prompt")
    assert observation.data_version == PromptCursor.load(data.cursor).prompts["tiny_prompt"].v
    assert request.run_key.startswith(f"tiny_prompt:{observation.data_version}:")
    assert observation.metadata["shot"].value == "tiny_shot"
    recorded = project.instance.fetch_observations(dg.AssetKey("prompt_inputs"), limit=5).records
    assert [(r.partition_key, r.asset_observation.data_version) for r in recorded] == [
        ("tiny_prompt", observation.data_version)
    ]

    os.utime(layout.prompt_file("tiny_prompt"), (time.time() + 5, time.time() + 5))  # saved without a change
    unchanged = project.tick("prompt_sensor", data.cursor)
    assert (unchanged.run_requests, unchanged.asset_events) == ([], [])

    project.materialize(["prompt_specs"], "tiny_prompt")  # what the run does
    materialized = project.instance.fetch_materializations(dg.AssetKey("prompt_specs"), limit=1).records[0]
    assert materialized.asset_materialization.tags["dagster/data_version"] == observation.data_version


def test_sensors_start_the_job_objects_they_are_given(project: Project) -> None:
    """No job is found by name: the sensors' targets, run jobs and run tags come from the objects handed to them."""
    jobs = build_jobs(HOST_LABEL)
    renamed = jobs._replace(
        shot=dg.define_asset_job("encode_shot", selection=jobs.shot.selection),
        full_cycle=dg.define_asset_job("gpu_cycle", selection=jobs.full_cycle.selection, tags={"gpu_host": "gpu-7"}),
    )
    off = {s.name: s for s in sensors_for(SensorSettings(), renamed)}
    on = {s.name: s for s in sensors_for(SensorSettings(auto_generate=True), renamed)}
    assert off["render_sensor"].job_name == "encode_shot" and on["render_sensor"].job_name == "encode_shot"
    assert off["prompt_sensor"].job_name == "prompt_job" and on["prompt_sensor"].job_name == "gpu_cycle"

    _prompt_project(project)
    project.defs = dg.Definitions(
        assets=ALL_ASSETS, jobs=list(renamed), sensors=list(on.values()), resources=project.resources
    )
    [request] = project.tick("prompt_sensor", None).run_requests
    assert request.tags["gpu_host"] == "gpu-7"
    assert request.asset_selection == [dg.AssetKey(k) for k in ("prompt_specs", "generated_videos", "upscaled_videos")]
    settled_render(project.layout, "shot_a")
    [shot_request] = project.tick("render_sensor", None).run_requests
    assert shot_request.partition_key == "shot_a"
    assert project.defs.resolve_sensor_def("render_sensor").job_name == "encode_shot"


def test_definitions_hand_the_built_jobs_to_the_sensors() -> None:
    from cosmos_assets.definitions import build_definitions

    defs = build_definitions(Settings(project_root=REPO))
    jobs = {job.name: job for job in defs.jobs}
    assert set(jobs) == {"shot_job", "prompt_job", "full_cycle_job", "generate_job", "wedge_job"}
    sensors = {sensor.name: sensor for sensor in defs.sensors}
    assert sensors["render_sensor"].job_name == "shot_job"
    assert sensors["wedge_sensor"].job_name == "wedge_job" and jobs["wedge_job"].tags.get("gpu_host") is None
    assert sensors["prompt_sensor"].job_name in {"prompt_job", "full_cycle_job"}
    assert jobs["prompt_job"].tags.get("gpu_host") is None and jobs["full_cycle_job"].tags["gpu_host"]


@pytest.mark.integration
def test_reencoded_controls_make_the_generated_video_stale(project: Project) -> None:
    """shots -> controls -> prompt -> generated through Dagster; re-encode; the sensor's prompt_specs run makes
    generated_videos STALE (and a fresh cursor does not re-run an up-to-date prompt)."""
    layout = _prompt_project(project)
    age(layout.render_dir("tiny_shot"))
    project.instance.add_dynamic_partitions("prompts", ["tiny_prompt"])
    project.materialize(["shots", "control_videos"], "tiny_shot")
    project.materialize(["prompt_specs", "generated_videos"], "tiny_prompt")

    def status() -> StaleStatus:
        return get_stale_status_resolver(project.instance, ALL_ASSETS).get_status(
            dg.AssetKey("generated_videos"), "tiny_prompt"
        )

    assert status() == StaleStatus.FRESH
    first = project.tick("prompt_sensor", None)
    assert first.run_requests == []  # prompt_specs already materialized at the current data version

    color = layout.shot_videos_dir("tiny_shot") / "color.mp4"
    before = color.stat().st_mtime_ns
    project.materialize(["control_videos"], "tiny_shot")  # re-encode
    assert color.stat().st_mtime_ns != before
    assert status() == StaleStatus.FRESH  # Dagster cannot see it before the sensor observes prompt_inputs

    second = project.tick("prompt_sensor", first.cursor)
    [request] = second.run_requests
    assert (
        request.partition_key == "tiny_prompt"
        and request.tags["cosmos/trigger"] == "control videos of shot tiny_shot re-encoded"
    )
    project.materialize([k.to_user_string() for k in request.asset_selection], request.partition_key)

    assert status() == StaleStatus.STALE
    causes = get_stale_status_resolver(project.instance, ALL_ASSETS).get_stale_causes(
        dg.AssetKey("generated_videos"), "tiny_prompt"
    )
    assert any(cause.dependency and cause.dependency.asset_key == dg.AssetKey("prompt_specs") for cause in causes)
    assert project.tick("prompt_sensor", second.cursor).run_requests == []


def test_settings_from_environment() -> None:
    settings = SensorSettings.from_env(
        {
            "COSMOS_SENSORS": "on",
            "COSMOS_SENSOR_INTERVAL": "5",
            "COSMOS_RENDER_SETTLE_SECONDS": "1.5",
            "COSMOS_AUTO_GENERATE": "true",
        }
    )
    assert (settings.enabled, settings.interval_seconds, settings.render_settle_seconds, settings.auto_generate) == (
        True,
        5,
        1.5,
        True,
    )
    assert SensorSettings.from_env({}) == SensorSettings()
    assert SensorSettings().enabled is False and SensorSettings().auto_generate is False
    with pytest.raises(ValueError, match="COSMOS_AUTO_GENERATE"):
        SensorSettings.from_env({"COSMOS_AUTO_GENERATE": "maybe"})
    sensors = {s.name: s for s in sensors_for(settings, build_jobs(HOST_LABEL))}
    assert sensors["render_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["render_sensor"].minimum_interval_seconds == 5
    off = {s.name: s for s in sensors_for(SensorSettings(), build_jobs(HOST_LABEL))}
    assert off["prompt_sensor"].default_status == dg.DefaultSensorStatus.STOPPED
