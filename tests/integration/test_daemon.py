"""The real ``dagster-daemon``: a render folder renamed into the renders root becomes control videos, no command typed,
and a prompt written for that shot beforehand is observed (``prompt_inputs``) and validated (``prompt_job``) once
the videos exist: the sensors start the job objects they were given, and the daemon records the tick's observation.

A temporary DAGSTER_HOME with the repo's dagster.yaml (queued run coordinator: the daemon dequeues the run too),
sensors on with a 2 s interval and a 1 s settle time. The wait is bounded; the daemon's process group is always
stopped, and its log is printed when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media import MODALITIES, probe_video
from cosmos_assets.sample_render import make_sample_render
from cosmos_assets.prompt_files import new_prompt_spec, write_spec

REPO = Path(__file__).resolve().parents[2]
SHOT = "daemon_shot"
PROMPT = "daemon_prompt"
DEADLINE_SECONDS = 240
FRAMES, WIDTH, HEIGHT = 12, 128, 64


class Daemon:
    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = log_path

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture()
def project(tmp_path: Path) -> ProjectLayout:
    layout = ProjectLayout(root=tmp_path / "project")
    layout.ensure_working_folders()
    home = layout.root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return layout


@pytest.fixture()
def daemon(project: ProjectLayout) -> Iterator[Daemon]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(project.root / "dagster_home"),
        "COSMOS_PROJECT_ROOT": str(project.root),
        "COSMOS_HOST": "preview",
        "COSMOS_SENSORS": "on",
        "COSMOS_SENSOR_INTERVAL": "2",
        "COSMOS_RENDER_SETTLE_SECONDS": "1",
        "COSMOS_AUTO_GENERATE": "off",
    }
    log_path = project.root / "daemon.log"
    executable = Path(sys.executable).with_name("dagster-daemon")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(executable), "run", "-m", "cosmos_assets.definitions"],
            cwd=project.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the code server and run workers stop with it
        )
    running = Daemon(process, log_path)
    try:
        yield running
    finally:
        running.stop()


def _shot_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "render_sensor"})))


def _prompt_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "prompt_sensor"})))


@pytest.mark.integration
@pytest.mark.daemon
def test_daemon_turns_a_new_render_folder_into_control_videos(project: ProjectLayout, daemon: Daemon, tmp_path: Path) -> None:
    try:
        _drop_render_and_wait(project, daemon, tmp_path)
    except BaseException:
        print(f"---- dagster-daemon log ({daemon.log_path}) ----\n{daemon.log_tail()}")
        raise


def _drop_render_and_wait(project: ProjectLayout, daemon: Daemon, tmp_path: Path) -> None:
    write_spec(new_prompt_spec(SHOT, "a daemon at work"), project.prompt_file(PROMPT))  # before its videos exist
    staging = tmp_path / "renderer_scratch" / SHOT
    make_sample_render(staging, frames=FRAMES, width=WIDTH, height=HEIGHT)
    os.rename(staging, project.render_dir(SHOT))  # the renderer finishes the folder elsewhere and moves it in

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(project.root / "dagster_home")))
    videos = [project.shot_videos_dir(SHOT) / f"{m}.mp4" for m in MODALITIES]
    started = time.monotonic()
    runs: list[dg.DagsterRun] = []
    while time.monotonic() - started < DEADLINE_SECONDS:
        assert daemon.process.poll() is None, f"dagster-daemon exited with {daemon.process.returncode}"
        runs = _shot_runs(instance)
        if any(run.status == dg.DagsterRunStatus.FAILURE for run in runs):
            break
        if any(run.status == dg.DagsterRunStatus.SUCCESS for run in runs) and all(v.exists() for v in videos):
            break
        time.sleep(2)
    elapsed = time.monotonic() - started
    print(f"render folder -> control videos through the daemon in {elapsed:.1f} s")

    statuses = [(run.tags.get("dagster/partition"), run.status.value) for run in runs]
    assert statuses == [(SHOT, "SUCCESS")], f"after {elapsed:.0f} s the render sensor's runs are {statuses}"
    assert instance.has_dynamic_partition("shots", SHOT)
    for video in videos:
        info = probe_video(video)
        assert (info.frames, info.width, info.height) == (FRAMES, WIDTH, HEIGHT)
    materialization = instance.get_latest_materialization_event(dg.AssetKey("control_videos"))
    assert materialization is not None and materialization.dagster_event.partition == SHOT

    prompt_runs: list[dg.DagsterRun] = []
    while time.monotonic() - started < DEADLINE_SECONDS:
        assert daemon.process.poll() is None, f"dagster-daemon exited with {daemon.process.returncode}"
        prompt_runs = _prompt_runs(instance)
        if any(run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) for run in prompt_runs):
            break
        time.sleep(2)
    prompt_statuses = [(run.job_name, run.tags.get("dagster/partition"), run.status.value) for run in prompt_runs]
    assert prompt_statuses == [("prompt_job", PROMPT, "SUCCESS")], f"the prompt sensor's runs are {prompt_statuses}"
    assert "gpu_host" not in prompt_runs[0].tags  # auto-generate off: prompt_job, not the GPU job
    observations = instance.fetch_observations(dg.AssetKey("prompt_inputs"), limit=5).records
    assert [r.partition_key for r in observations] == [PROMPT]  # recorded by the daemon from the tick, before the run
    spec = instance.fetch_materializations(dg.AssetKey("prompt_specs"), limit=1).records
    assert [r.partition_key for r in spec] == [PROMPT]
    assert observations[0].asset_observation.data_version == spec[0].asset_materialization.tags["dagster/data_version"]
    assert observations[0].storage_id < spec[0].storage_id
