"""End to end on the preview backend: the sample render through all five assets, through Dagster.

Real files, a real Dagster instance on disk, the real preview backend program; no fakes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.cli import main as cli_main
from cosmos_assets.cli.project import DEMO_PROMPT, DEMO_SHOT
from cosmos_assets.definitions import build_definitions
from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.resources import LocalPreviewHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media import probe_video
from cosmos_assets.runs.history import read_history
from cosmos_assets.settings import Settings

REPO = Path(__file__).resolve().parents[1]
FRAMES = 121
WIDTH, HEIGHT = 1280, 704


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root with the sample render, the demo prompt and a DAGSTER_HOME using the repo's dagster.yaml."""
    root = tmp_path_factory.mktemp("project")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as env:
        for key, value in {
            "COSMOS_PROJECT_ROOT": str(root),
            "DAGSTER_HOME": str(home),
            "COSMOS_HOST": "preview",
        }.items():
            env.setenv(key, value)
        assert cli_main(["demo-setup"]) == 0
    return root


def instance_at(home: Path) -> dg.DagsterInstance:
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def _env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "COSMOS_PROJECT_ROOT": str(root),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "COSMOS_HOST": "preview",
    }


def _materialize_cli(root: Path, select: str, partition: str) -> subprocess.CompletedProcess:
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.run(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "cosmos_assets.definitions",
            "--select",
            select,
            "--partition",
            partition,
        ],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.integration
def test_dagster_cli_materializes_all_five_assets_for_the_sample_render(demo_project: Path) -> None:
    layout = ProjectLayout(root=demo_project)

    shot_run = _materialize_cli(demo_project, "shots,control_videos", DEMO_SHOT)
    assert shot_run.returncode == 0, shot_run.stderr[-3000:]
    for modality in ("color", "depth", "segmentation"):
        info = probe_video(layout.shot_videos_dir(DEMO_SHOT) / f"{modality}.mp4")
        assert (info.frames, info.width, info.height) == (FRAMES, WIDTH, HEIGHT)

    prompt_run = _materialize_cli(
        demo_project, "prompt_inputs,prompt_specs,generated_videos,upscaled_videos", DEMO_PROMPT
    )
    assert prompt_run.returncode == 0, prompt_run.stderr[-3000:]
    assert "preview" in prompt_run.stderr  # the backend announces itself in the live log

    generated = layout.output_dir(DEMO_PROMPT)
    assert {"output.mp4", "spec_used.json", "prompt_spec.json", "run.log"} <= {p.name for p in generated.iterdir()}
    gen_info = probe_video(generated / "output.mp4")
    assert (gen_info.frames, gen_info.width, gen_info.height) == (FRAMES, 1280, 704)

    upscaled = layout.upscaled_dir(DEMO_PROMPT)
    assert {"output.mp4", "spec_used.json", "upscale_run.log"} <= {p.name for p in upscaled.iterdir()}
    up_info = probe_video(upscaled / "output.mp4")
    assert (up_info.frames, up_info.width, up_info.height) == (FRAMES, 3 * 1280, 3 * 704)

    spec_used = json.loads((generated / "spec_used.json").read_text())
    assert spec_used["backend"] == "preview"
    assert "--controlnet_specs" in spec_used["command"] and not any(
        a.startswith("--controlnet_specs=") for a in spec_used["command"]
    )
    upscale_used = json.loads((upscaled / "spec_used.json").read_text())
    assert upscale_used["spec"]["upscale"]["control_weight"] == 0.5
    assert upscale_used["spec"]["input_video_path"].endswith("/output.mp4")

    history = read_history(layout.history_log)
    assert [(r.stage, r.status, r.prompt, r.shot) for r in history] == [
        ("generate", "success", DEMO_PROMPT, DEMO_SHOT),
        ("upscale", "success", DEMO_PROMPT, DEMO_SHOT),
    ]
    assert all(r.host == "preview@local" and r.outputs for r in history)

    instance = instance_at(demo_project / "dagster_home")
    for key in ("shots", "control_videos"):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None
    for key in ("prompt_specs", "generated_videos", "upscaled_videos"):
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
        assert event is not None and event.dagster_event.partition == DEMO_PROMPT


@pytest.mark.integration
def test_rerun_keeps_the_earlier_run_and_upscale_weight_is_set_per_run(demo_project: Path) -> None:
    """Second generation of the same prompt, in-process through Dagster: the first run's folder is kept."""
    layout = ProjectLayout(root=demo_project)
    first = json.loads((layout.output_dir(DEMO_PROMPT) / "spec_used.json").read_text())["run_id"]
    instance = instance_at(demo_project / "dagster_home")
    resources = {
        "project": ProjectResource(root=str(demo_project)),
        "gpu_host": LocalPreviewHost(remote_dir=str(demo_project / ".preview_host" / "cosmos-transfer1")),
    }
    result = dg.materialize(
        ALL_ASSETS,
        selection=["generated_videos", "upscaled_videos"],
        partition_key=DEMO_PROMPT,
        instance=instance,
        resources=resources,
        run_config={
            "ops": {
                "upscaled_videos": {"config": {"control_weight": 0.8}},
                "generated_videos": {"config": {"force": True}},
            }
        },  # unforced, it is skipped
    )
    assert result.success
    kept = layout.previous_outputs_dir / DEMO_PROMPT / first
    assert (kept / "output.mp4").exists(), "the earlier run's output was not kept"
    new = json.loads((layout.output_dir(DEMO_PROMPT) / "spec_used.json").read_text())["run_id"]
    assert new != first
    upscale_used = json.loads((layout.upscaled_dir(DEMO_PROMPT) / "spec_used.json").read_text())
    assert upscale_used["spec"]["upscale"]["control_weight"] == 0.8
    metadata = result.asset_materializations_for_node("generated_videos")[0].metadata
    assert metadata["host"].value == "preview@local"
    assert metadata["resolution"].value == "1280x704"


def test_definitions_load_with_every_asset_and_job() -> None:
    defs = build_definitions(Settings(project_root=REPO))
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "shots",
        "control_videos",
        "prompt_inputs",
        "prompt_specs",
        "generated_videos",
        "upscaled_videos",
        "wedge_comparisons",
    }
    assert {job.name for job in defs.jobs} >= {"shot_job", "full_cycle_job", "generate_job"}
    assert graph.get(dg.AssetKey("upscaled_videos")).parent_keys == {dg.AssetKey("generated_videos")}
