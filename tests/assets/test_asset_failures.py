"""Bad input fails the asset, through Dagster, with a message naming the file and the frame or field."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.partitions import PROMPTS, SHOTS
from cosmos_assets.defs.resources import LocalPreviewHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.media import write_png
from tests.project_factory import TINY, make_project


@pytest.fixture
def setup(tmp_path: Path):
    layout = make_project(tmp_path / "project")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SHOTS.name, ["tiny_shot"])
    instance.add_dynamic_partitions(PROMPTS.name, ["tiny_prompt", "bad_prompt"])
    resources = {
        "project": ProjectResource(root=str(layout.root)),
        "gpu_host": LocalPreviewHost(remote_dir=str(tmp_path / "host")),
    }
    return layout, instance, resources


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [event for event in result.all_events if event.is_step_failure]
    assert failures, "the step did not fail"
    return failures[0].step_failure_data.error.to_string()


def materialize(setup, selection: list[str], key: str) -> dg.ExecuteInProcessResult:
    _, instance, resources = setup
    return dg.materialize(
        ALL_ASSETS, selection=selection, partition_key=key, instance=instance, resources=resources, raise_on_error=False
    )


def test_a_frame_gap_fails_shots_naming_the_file_and_frame(setup) -> None:
    layout = setup[0]
    frames = sorted(layout.render_dir("tiny_shot").glob("color.*.png"))
    frames[3].unlink()
    result = materialize(setup, ["shots"], "tiny_shot")
    assert not result.success
    message = failure_message(result)
    assert frames[3].name in message


def test_a_modality_of_another_size_fails_naming_the_file(setup) -> None:
    layout = setup[0]
    depth = sorted(layout.render_dir("tiny_shot").glob("depth.*.png"))[2]
    write_png(depth, np.zeros((TINY["height"], TINY["width"] + 4), np.uint16))
    result = materialize(setup, ["shots", "control_videos"], "tiny_shot")
    assert not result.success
    assert depth.name in failure_message(result)


def test_a_bad_spec_fails_prompt_specs_naming_the_field_and_stops_generation(setup) -> None:
    layout = setup[0]
    spec = json.loads(layout.prompt_file("tiny_prompt").read_text())
    spec["seg"]["control_weight"] = -1
    layout.prompt_file("bad_prompt").write_text(json.dumps(spec))
    result = materialize(setup, ["prompt_specs", "generated_videos"], "bad_prompt")
    assert not result.success
    message = failure_message(result)
    assert "bad_prompt.json" in message and "seg.control_weight" in message
    assert not layout.output_dir("bad_prompt").exists()
    assert not (Path(setup[2]["gpu_host"].remote_dir) / "inputs").exists(), "nothing may reach the host"
