"""Partition lineage Dagster believes: a prompt's staleness and upstream follow the shot its spec reads.

Prompts (``prompts`` partitions) read the control videos of one shot (``shots`` partitions), named in the spec.
Dagster has no one-to-many mapping, so the link goes through ``prompt_inputs``, observed per prompt at a data
version covering the spec and its shot's videos; ``prompt_specs`` depends on it by identical key (true), and the
``control_videos`` -> ``prompt_inputs`` edge claims no shot partition. Checked against Dagster's own stale status
resolver and the parent-partition computation its backfills use; everything goes through the real sensors.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from cosmos_assets.defs.assets import ALL_ASSETS, PROMPT_INPUTS, control_videos
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.media import write_png
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.watch.cursors import PromptCursor
from tests.project_factory import TINY, make_project
from tests.test_sensors import Project, SensorSettings, age

PROMPT_SPECS = dg.AssetKey("prompt_specs")
GENERATED = dg.AssetKey("generated_videos")
CONTROLS = dg.AssetKey("control_videos")
PROMPTS_OF = {"shot_a": ["street_day", "street_rain"], "shot_b": ["harbour"]}
ALL_PROMPTS = [prompt for prompts in PROMPTS_OF.values() for prompt in prompts]


@pytest.fixture()
def project(tmp_path: Path) -> Project:
    """Two shots (renders + control videos on disk) and their prompts, nothing registered in Dagster yet."""
    project = Project(tmp_path, SensorSettings())
    for shot, prompts in PROMPTS_OF.items():
        make_project(tmp_path, shot=shot, prompt=prompts[0])
        for prompt in prompts[1:]:
            write_spec(new_prompt_spec(shot, f"{prompt.replace('_', ' ')}"), project.layout.prompt_file(prompt))
        age(project.layout.render_dir(shot))
    return project


def parent_claims(project: Project, asset: dg.AssetKey, partition: str) -> dict[str, tuple[list[str], list[str]]]:
    """What Dagster says ``asset``/``partition`` reads, per parent: (existing partitions, required but nonexistent),
    computed as the UI's backfill launch validates it (``compute_parent_subset_and_required_but_nonexistent_subset``)."""
    view = AssetGraphView.for_test(project.defs, project.instance)
    node = view.asset_graph.get(asset)
    subset = view.get_subset_from_partition_keys(asset, node.partitions_def, {partition})
    claims = {}
    for parent in sorted(node.parent_keys):
        have, missing = view.compute_parent_subset_and_required_but_nonexistent_subset(parent, subset)
        claims[parent.to_user_string()] = (
            sorted(have.expensively_compute_partition_keys()),
            sorted(missing.expensively_compute_partition_keys()),
        )
    return claims


def statuses(project: Project, key: dg.AssetKey) -> dict[str, StaleStatus]:
    resolver = get_stale_status_resolver(project.instance, ALL_ASSETS)
    return {prompt: resolver.get_status(key, prompt) for prompt in ALL_PROMPTS}


def causes(project: Project, key: dg.AssetKey, prompt: str) -> list[tuple[str, str]]:
    resolver = get_stale_status_resolver(project.instance, ALL_ASSETS)
    return [
        (c.reason, c.dependency.asset_key.to_user_string())
        for c in resolver.get_stale_causes(key, prompt)
        if c.dependency
    ]


def execute(project: Project, sensor: str, requests: list[dg.RunRequest]) -> None:
    """Run what a tick asked for as the daemon would: the sensor's job, the request's partition and asset subset."""
    job = project.defs.resolve_job_def(project.defs.resolve_sensor_def(sensor).job_name)
    for request in requests:
        result = job.execute_in_process(
            partition_key=request.partition_key, asset_selection=request.asset_selection, instance=project.instance
        )
        assert result.success


def run_ticks(project: Project, sensor: str, cursor: str | None) -> tuple[str | None, list[dg.RunRequest]]:
    """One tick, and its runs executed."""
    data = project.tick(sensor, cursor)
    execute(project, sensor, list(data.run_requests))
    return data.cursor, list(data.run_requests)


def registered(project: Project) -> tuple[str | None, str | None]:
    """Both shots and the three prompts through the sensors, as the daemon would; returns the sensors' cursors."""
    render_cursor, shot_runs = run_ticks(project, "render_sensor", None)
    assert sorted(r.partition_key for r in shot_runs) == ["shot_a", "shot_b"]
    prompt_cursor, prompt_runs = run_ticks(project, "prompt_sensor", None)
    assert sorted(r.partition_key for r in prompt_runs) == sorted(ALL_PROMPTS)
    return render_cursor, prompt_cursor


def test_a_prompt_claims_its_inputs_and_no_shot_partition_named_like_itself(project: Project) -> None:
    project.instance.add_dynamic_partitions("shots", ["shot_a", "shot_b", "street_day"])  # a shot named like a prompt
    project.instance.add_dynamic_partitions("prompts", ALL_PROMPTS)
    graph = project.defs.resolve_asset_graph()

    # The graph still says it: control_videos -> prompt_inputs -> prompt_specs.
    assert graph.get(PROMPT_SPECS).parent_keys == {PROMPT_INPUTS}
    assert graph.get(PROMPT_INPUTS).parent_keys == {CONTROLS}
    # Observed, never materialized: the launch dialog's "Upstream data missing" only looks at materializable
    # parents with the same partitioning, and the stale resolver never calls an observable asset MISSING.
    assert not graph.get(PROMPT_INPUTS).is_materializable and graph.get(PROMPT_INPUTS).is_observable
    assert (
        get_stale_status_resolver(project.instance, ALL_ASSETS).get_status(PROMPT_INPUTS, "harbour")
        != StaleStatus.MISSING
    )

    for prompt in ("street_day", "harbour"):
        assert parent_claims(project, PROMPT_SPECS, prompt) == {"prompt_inputs": ([prompt], [])}
        assert parent_claims(project, PROMPT_INPUTS, prompt) == {"control_videos": ([], [])}


def test_the_identity_edge_it_replaces_claimed_shot_partitions_named_like_the_prompt(project: Project) -> None:
    """The check above can see the lie: the previous model (deps=[control_videos], no mapping) claims a shot named
    like the prompt, existing or not ("depends on non-existent partitions" in a UI backfill)."""

    @dg.asset(name="prompt_specs_by_identity", partitions_def=PROMPTS, deps=[control_videos])
    def by_identity() -> None: ...

    project.instance.add_dynamic_partitions("shots", ["shot_a", "street_day"])
    project.instance.add_dynamic_partitions("prompts", ALL_PROMPTS)
    project.defs = dg.Definitions(assets=[*ALL_ASSETS, by_identity], resources=project.resources)
    key = dg.AssetKey("prompt_specs_by_identity")
    assert parent_claims(project, key, "street_day") == {"control_videos": (["street_day"], [])}
    assert parent_claims(project, key, "harbour") == {"control_videos": ([], ["harbour"])}


@pytest.mark.integration
def test_editing_a_shots_render_marks_exactly_its_prompts_stale(project: Project) -> None:
    render_cursor, prompt_cursor = registered(project)
    for prompt in ALL_PROMPTS:
        project.materialize(["generated_videos"], prompt)
    fresh = {prompt: StaleStatus.FRESH for prompt in ALL_PROMPTS}
    assert statuses(project, PROMPT_SPECS) == fresh and statuses(project, GENERATED) == fresh

    # The artist re-renders one frame of shot A (written aside and renamed over, as renderers do).
    folder = project.layout.render_dir("shot_a")
    write_png(folder / "color.1001.png", np.full((TINY["height"], TINY["width"], 3), 200, dtype=np.uint8))
    age(folder)
    render_cursor, shot_runs = run_ticks(project, "render_sensor", render_cursor)
    assert [r.partition_key for r in shot_runs] == ["shot_a"]
    # Re-encoded, not yet observed: Dagster does not know which prompts read shot A.
    assert statuses(project, PROMPT_SPECS) == fresh

    tick = project.tick("prompt_sensor", prompt_cursor)
    assert sorted((e.asset_key, e.partition) for e in tick.asset_events) == [
        (PROMPT_INPUTS, p) for p in PROMPTS_OF["shot_a"]
    ]
    assert sorted(r.partition_key for r in tick.run_requests) == PROMPTS_OF["shot_a"]
    # Observed: exactly shot A's prompts are stale, because of their inputs; shot B's prompt is not.
    assert statuses(project, PROMPT_SPECS) == {
        "street_day": StaleStatus.STALE,
        "street_rain": StaleStatus.STALE,
        "harbour": StaleStatus.FRESH,
    }
    assert causes(project, PROMPT_SPECS, "street_day") == [("has a new dependency data version", "prompt_inputs")]
    assert statuses(project, GENERATED) == fresh

    execute(project, "prompt_sensor", list(tick.run_requests))  # prompt_job runs of prompt_specs (auto-generate off)
    assert statuses(project, PROMPT_SPECS) == fresh
    assert statuses(project, GENERATED) == {
        "street_day": StaleStatus.STALE,
        "street_rain": StaleStatus.STALE,
        "harbour": StaleStatus.FRESH,
    }
    assert causes(project, GENERATED, "street_rain") == [("has a new dependency data version", "prompt_specs")]
    assert project.tick("prompt_sensor", tick.cursor).run_requests == []


def test_observing_by_hand_agrees_with_the_sensor_and_prompt_job_clears_it(project: Project) -> None:
    """Sensors off: *Observe* on prompt_inputs (its own observe function) records the version the sensor and
    prompt_specs record, so an unchanged prompt stays fresh; an edited one turns stale; prompt_job refreshes it."""
    _, prompt_cursor = registered(project)

    def observe(prompt: str) -> str | None:
        result = dg.materialize(
            ALL_ASSETS,
            selection=[PROMPT_INPUTS],
            partition_key=prompt,
            instance=project.instance,
            resources=project.resources,
        )
        assert result.success
        [observation] = [
            e.event_specific_data.asset_observation
            for e in result.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
        ]
        return observation.data_version

    sensor_versions = {name: state.v for name, state in PromptCursor.load(prompt_cursor).prompts.items()}
    assert observe("harbour") == sensor_versions["harbour"]
    assert statuses(project, PROMPT_SPECS)["harbour"] == StaleStatus.FRESH

    write_spec(new_prompt_spec("shot_b", "the harbour at night"), project.layout.prompt_file("harbour"))
    assert observe("harbour") != sensor_versions["harbour"]
    assert statuses(project, PROMPT_SPECS) == {
        "street_day": StaleStatus.FRESH,
        "street_rain": StaleStatus.FRESH,
        "harbour": StaleStatus.STALE,
    }

    job = project.defs.resolve_job_def("prompt_job")
    assert job.execute_in_process(partition_key="harbour", instance=project.instance).success  # observe, then validate
    assert statuses(project, PROMPT_SPECS)["harbour"] == StaleStatus.FRESH
