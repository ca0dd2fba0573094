"""At the asset edge (issue 11): a skipped generation still materializes, says why, and keeps its data version;
a price per GPU hour reaches the record and the metadata."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.definitions import build_definitions
from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.settings import Settings
from tests.project_factory import make_project


def _materialize(
    layout: ProjectLayout, instance: dg.DagsterInstance, settings: Settings, config: dict | None = None
) -> dg.AssetMaterialization:
    result = dg.materialize(
        ALL_ASSETS,
        selection=["generated_videos"],
        partition_key="tiny_prompt",
        instance=instance,
        resources=build_definitions(settings).resources,
        run_config=config,
    )
    assert result.success
    [event] = result.asset_materializations_for_node("generated_videos")
    return event


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COSMOS_GPU_PRICE_PER_HOUR", "2.5")
    layout = make_project(tmp_path / "project")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(PROMPTS.name, ["tiny_prompt"])
    settings = Settings.from_env().model_copy(
        update={"project_root": layout.root, "preview_dir": str(tmp_path / "host")}
    )
    return layout, instance, settings


def test_a_second_materialization_is_skipped_with_the_same_data_version(setup) -> None:
    layout, instance, settings = setup
    first = _materialize(layout, instance, settings)
    assert first.metadata["skipped"].value is False
    assert first.metadata["cost"].value == 0.0  # the preview holds no GPU: its cost is always 0
    second = _materialize(layout, instance, settings)
    meta = {k: v.value for k, v in second.metadata.items()}
    assert meta["skipped"] is True and meta["matches_run_id"] == first.metadata["run_id"].value
    assert "same inputs as run" in meta["skipped_because"] and meta["gpu_seconds"] == 0.0
    version = first.tags["dagster/data_version"]
    assert second.tags["dagster/data_version"] == version and len(version) == 64
    [record] = RunStore(layout.runs_dir).all()  # no second run
    assert record.gpu_price_per_hour == 2.5 and record.inputs_digest() == version
    assert [h.status for h in read_history(layout.history_log)] == ["success", "skipped"]

    forced = _materialize(layout, instance, settings, {"ops": {"generated_videos": {"config": {"force": True}}}})
    assert forced.metadata["skipped"].value is False and len(RunStore(layout.runs_dir).all()) == 2
    assert forced.tags["dagster/data_version"] == version  # the same work, so the same version


def test_a_skipped_generation_leaves_its_upscale_fresh(setup) -> None:
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    layout, instance, settings = setup
    resources = build_definitions(settings).resources
    result = dg.materialize(
        ALL_ASSETS,
        selection=["generated_videos", "upscaled_videos"],
        partition_key="tiny_prompt",
        instance=instance,
        resources=resources,
    )
    assert result.success
    skipped = _materialize(layout, instance, settings)
    assert skipped.metadata["skipped"].value is True, skipped.metadata.get("skipped_because")
    resolver = get_stale_status_resolver(instance, ALL_ASSETS)
    assert resolver.get_status(dg.AssetKey("upscaled_videos"), "tiny_prompt") == StaleStatus.FRESH
