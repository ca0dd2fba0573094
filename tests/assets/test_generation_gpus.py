"""generated_videos takes its GPU count from the run config, else NUM_GPU (the seed's config.sh), which the
definitions read once when they load (through the one settings object), never inside the asset."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.definitions import build_definitions
from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.settings import Settings
from tests.project_factory import make_project


def _generate(tmp_path: Path, run_config: dict | None = None) -> list[str]:
    layout = make_project(tmp_path / "project")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(PROMPTS.name, ["tiny_prompt"])
    settings = Settings.from_env().model_copy(
        update={"project_root": layout.root, "preview_dir": str(tmp_path / "host")}
    )
    resources = build_definitions(settings).resources
    result = dg.materialize(
        ALL_ASSETS,
        selection=["generated_videos"],
        partition_key="tiny_prompt",
        instance=instance,
        resources=resources,
        run_config=run_config,
    )
    assert result.success
    used = json.loads((layout.output_dir("tiny_prompt") / "spec_used.json").read_text())
    return used["command"]


def _gpus(command: list[str]) -> str:
    return command[command.index("--num_gpus") + 1]


def test_num_gpu_from_the_environment_reaches_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUM_GPU", "2")
    assert _gpus(_generate(tmp_path)) == "2"


def test_the_run_config_wins_over_num_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUM_GPU", "2")
    config = {"ops": {"generated_videos": {"config": {"num_gpus": 1}}}}
    assert _gpus(_generate(tmp_path, config)) == "1"
