"""Wedges: one prompt file per combination, named to sort and group, registered; a comparison grid after the runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from cosmos_assets.cli import main
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.media import probe_video, read_frames
from cosmos_assets.media.grid import BACKGROUND, grid_layout
from cosmos_assets.media.recipe import read_recipe
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.spec import SpecError, load_spec
from cosmos_assets.prompts.wedge_vary import WedgeError, parse_vary
from cosmos_assets.prompts.wedges import MAX_VARIANTS, WedgeManifest, manifest_path, plan_wedge, write_wedge
from cosmos_assets.runs.runner import run_generation
from cosmos_assets.runs.wedge_comparison import build_comparison, ready_version
from tests.project_factory import make_project


@pytest.fixture
def layout(tmp_path: Path) -> ProjectLayout:
    return make_project(tmp_path / "project")


def _base(layout: ProjectLayout) -> Path:
    return layout.prompt_file("tiny_prompt")


def test_a_wedge_writes_one_prompt_file_per_combination_sorted_and_grouped(layout: ProjectLayout) -> None:
    axes = [parse_vary("edge.control_weight=0.2,0.5,0.8"), parse_vary("seed=1,2")]
    written = write_wedge(layout, plan_wedge(layout, _base(layout), axes, name="look"))

    assert len(written) == 6
    names = [p.stem for p in written]
    assert names == sorted(names) and all(n.startswith("look_0") for n in names)  # sort in combination order
    assert names[0] == "look_01_edge.control_weight-0.2_seed-1"
    combos = [(load_spec(p).edge.control_weight, load_spec(p).seed) for p in written]
    assert combos == [(0.2, 1), (0.2, 2), (0.5, 1), (0.5, 2), (0.8, 1), (0.8, 2)]
    base = load_spec(_base(layout)).to_json_dict()
    for path in written:  # everything else is the base's
        data = load_spec(path).to_json_dict()
        assert {k: v for k, v in data.items() if k not in ("edge", "seed")} == {
            k: v for k, v in base.items() if k != "edge"
        }
        assert data["edge"] | {"control_weight": base["edge"]["control_weight"]} == base["edge"]
    manifest = WedgeManifest.read(manifest_path(layout, "look"))
    assert [v.prompt for v in manifest.variants] == names
    assert manifest.variants[3].values == {"edge.control_weight": 0.5, "seed": 2}
    assert manifest.variants[3].label_lines() == ["edge.control_weight=0.5", "seed=2"]
    assert set(layout.prompt_names()) == {"tiny_prompt", *names}


def test_a_wedge_never_overwrites_and_names_the_clash(layout: ProjectLayout) -> None:
    plan = plan_wedge(layout, _base(layout), [parse_vary("seed=1,2")], name="look")
    written = write_wedge(layout, plan)
    before = {p: p.read_bytes() for p in written}
    with pytest.raises(WedgeError, match="exists.*pick another wedge --name"):
        write_wedge(layout, plan_wedge(layout, _base(layout), [parse_vary("seed=1,2")], name="look"))
    assert {p: p.read_bytes() for p in written} == before


def test_varying_the_model_sets_the_prompt_files_model_block(layout: ProjectLayout) -> None:
    plan = plan_wedge(layout, _base(layout), [parse_vary("model=cosmos-transfer1,transfer2.5")], name="models")
    specs = list(plan.specs.values())
    assert [s.model_block().model for s in specs] == ["cosmos-transfer1", "cosmos-transfer2.5"]
    assert plan.manifest.variants[0].label_lines() == ["model=cosmos-transfer1"]
    assert list(plan.specs)[0] == "models_01_model-cosmos-transfer1"


def test_a_bad_value_names_the_variant_file_and_field_and_writes_nothing(layout: ProjectLayout) -> None:
    with pytest.raises(SpecError) as error:
        plan_wedge(layout, _base(layout), [parse_vary("edge.control_weight=0.5,-1")], name="bad")
    assert "bad_02_edge.control_weight--1.json" in str(error.value) and "edge.control_weight" in str(error.value)
    with pytest.raises(SpecError, match="cosmos_assets.model"):
        plan_wedge(layout, _base(layout), [parse_vary("model=cosmos-transfer9")], name="bad")
    assert layout.prompt_names() == ["tiny_prompt"] and not manifest_path(layout, "bad").exists()


@pytest.mark.parametrize(
    "option, message",
    [
        ("seed", "give PATH=V1,V2"),
        ("seed=", "an empty value"),
        ("seed=1,,2", "an empty value"),
        ("seed=1,1", "listed twice"),
        ("../x=1", "not a dotted field path"),
    ],
)
def test_vary_options_are_checked(option: str, message: str) -> None:
    with pytest.raises(WedgeError, match=message):
        parse_vary(option)


def test_too_many_combinations_and_repeated_axes_are_refused(layout: ProjectLayout) -> None:
    many = ",".join(str(i) for i in range(MAX_VARIANTS + 1))
    with pytest.raises(WedgeError, match="combinations"):
        plan_wedge(layout, _base(layout), [parse_vary(f"seed={many}")])
    with pytest.raises(WedgeError, match="given twice"):
        plan_wedge(layout, _base(layout), [parse_vary("seed=1"), parse_vary("seed=2")])


def test_cli_wedge_writes_and_registers_the_prompts_and_the_wedge(layout: ProjectLayout, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(layout.root))
    home = layout.root / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert (
        main(["wedge", "tiny_prompt", "--vary", "edge.control_weight=0.2,0.8", "--vary", "seed=1,2", "--name", "look"])
        == 0
    )
    out = capsys.readouterr().out
    assert "wedge look: 4 prompts registered" in out and "--select wedge_comparisons --partition look" in out
    instance = dg.DagsterInstance.get()
    assert sorted(instance.get_dynamic_partitions("prompts")) == sorted(layout.prompt_names())
    assert instance.get_dynamic_partitions("wedges") == ["look"]
    assert main(["wedge", "tiny_prompt", "--vary", "seed", "--name", "x"]) == 1
    assert "error: --vary 'seed': give PATH=V1,V2" in capsys.readouterr().err


def test_cli_wedge_refuses_a_throwaway_instance_before_writing(layout: ProjectLayout, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(layout.root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["wedge", "tiny_prompt", "--vary", "seed=1,2", "--name", "look"]) == 1
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err
    assert layout.prompt_names() == ["tiny_prompt"]
    assert main(["wedge", "tiny_prompt", "--vary", "seed=1,2", "--name", "look", "--no-register"]) == 0
    assert len(layout.prompt_names()) == 3


@pytest.fixture(scope="module")
def generated_wedge(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectLayout, list[str], list[str]]:
    """A wedge of three seeds, each variant generated by the preview backend (once for the module)."""
    root = tmp_path_factory.mktemp("wedge_project")
    layout = make_project(root / "project")
    plan = plan_wedge(layout, layout.prompt_file("tiny_prompt"), [parse_vary("seed=1,2,3")], name="look")
    write_wedge(layout, plan)
    host, preview = LocalMachine(root / "host", label="preview@local"), backend_named("preview")
    variants = [v.prompt for v in plan.manifest.variants]
    run_ids = [run_generation(layout, host, preview, v, log=lambda line: None).record.run_id for v in variants]
    return layout, variants, run_ids


def test_the_comparison_waits_for_every_variant_and_names_the_missing(layout: ProjectLayout) -> None:
    write_wedge(layout, plan_wedge(layout, _base(layout), [parse_vary("seed=1,2")], name="pending"))
    with pytest.raises(
        WedgeError,
        match=r"2 of 2 variants have no generated video yet \(pending_01_seed-1, "
        r"pending_02_seed-2\); materialize generated_videos",
    ):
        build_comparison(layout, "pending")
    assert ready_version(layout, "pending") is None
    assert not (layout.outputs_dir / "_wedges" / "pending").exists()


def test_the_comparison_tiles_every_variant_labelled_after_their_runs(generated_wedge) -> None:
    layout, variants, run_ids = generated_wedge
    comparison = build_comparison(layout, "look")

    record = comparison.record
    assert [t.prompt for t in record.tiles] == variants and [t.run_id for t in record.tiles] == run_ids
    assert (record.columns, record.rows) == (2, 2)  # three tiles, near-square
    clip = probe_video(layout.output_dir(variants[0]) / "output.mp4")
    grid = probe_video(comparison.grid_video)
    layout_ = grid_layout(3, clip.width, clip.height)
    assert (grid.width, grid.height) == layout_.size and grid.frames == clip.frames
    middle = read_frames(comparison.grid_video, [clip.frames // 2])[0].astype(int)
    tiles = []
    for index in range(4):
        x, y = layout_.origin(index)
        tiles.append(middle[y : y + layout_.tile_height, x : x + layout_.tile_width])
    # three tiles of picture (each a different seed's tint), the fourth cell empty background
    assert all(t.std() > 10 for t in tiles[:3]) and abs(tiles[3].mean() - BACKGROUND) < 6 and tiles[3].std() < 4
    means = [t.reshape(-1, 3).mean(axis=0) for t in tiles[:3]]
    assert min(np.abs(a - b).max() for i, a in enumerate(means) for b in means[i + 1 :]) > 1
    # each tile carries its label: white glyph pixels in the dark band at its bottom
    for tile in tiles[:3]:
        band = tile[-30:]
        assert (band.min(axis=2) > 200).sum() > 20
    tags = read_recipe(comparison.grid_video)
    assert tags["cosmos_wedge"] == "look" and all(r in tags["cosmos_tiles"] for r in run_ids)
    assert (
        comparison.preview.sheet_path == comparison.folder / "contact_sheet.png"
        and comparison.preview.sheet_path.exists()
    )
    assert json.loads((comparison.folder / "comparison.json").read_text())["version"] == ready_version(layout, "look")


def test_the_comparison_asset_shows_the_sheet_and_the_grid(generated_wedge, tmp_path: Path) -> None:
    from cosmos_assets.defs.assets import ALL_ASSETS, wedge_comparisons
    from cosmos_assets.defs.resources import LocalPreviewHost
    from cosmos_assets.defs.resources.project import ProjectResource

    layout, variants, run_ids = generated_wedge
    earlier = layout.outputs_dir / "_wedges" / "look" / "comparison.json"
    earlier_version = json.loads(earlier.read_text())["version"] if earlier.exists() else None
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("wedges", ["look"])
    resources = {
        "project": ProjectResource(root=str(layout.root)),
        "gpu_host": LocalPreviewHost(remote_dir=str(tmp_path / "host")),
    }
    result = dg.materialize(
        ALL_ASSETS, selection=[wedge_comparisons], partition_key="look", instance=instance, resources=resources
    )
    metadata = result.asset_materializations_for_node("wedge_comparisons")[0].metadata
    assert metadata["tiles"].value == 3 and metadata["grid"].value == "2x2"
    assert {k: v["run_id"] for k, v in metadata["variants"].value.items()} == dict(zip(variants, run_ids))
    assert metadata["grid_video"].value.endswith("outputs/_wedges/look/grid.mp4")
    assert "data:image/jpeg;base64," in metadata["contact_sheet_image"].value
    moved = metadata["previous_comparison_moved_to"].value  # an earlier comparison is moved aside, never overwritten
    if earlier_version is None:
        assert moved == "(none)"
    else:
        assert (
            moved.endswith(f"outputs/.previous/_wedges/look/{earlier_version}") and (Path(moved) / "grid.mp4").exists()
        )


def test_the_wedge_sensor_starts_a_comparison_once_every_variant_is_generated(generated_wedge) -> None:
    from cosmos_assets.defs.resources.project import ProjectResource
    from cosmos_assets.defs.sensors.wedges import build_wedge_sensor

    layout, variants, run_ids = generated_wedge
    write_wedge(layout, plan_wedge(layout, _base(layout), [parse_vary("seed=5,6")], name="waiting"))
    job = dg.define_asset_job("wedge_job", selection=["wedge_comparisons"])
    sensor = build_wedge_sensor(job, 30, dg.DefaultSensorStatus.STOPPED)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"project": ProjectResource(root=str(layout.root))}

    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        assert sensor(context).run_requests == []  # no wedge registered yet
    instance.add_dynamic_partitions("wedges", ["look", "waiting"])
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = sensor(context)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("look", f"look:{ready_version(layout, 'look')}")
    ]


# ---------------------------------------------------------------------------------------------------------
# --vary values holding commas, backslashes, '=' (an escape for the comma), and empty values


@pytest.mark.parametrize(
    ("option", "values"),
    [
        (r"prompt=a city\, at dusk,a forest", ["a city, at dusk", "a forest"]),
        (r"prompt=a\,b\,c", ["a,b,c"]),
        (r"prompt=\,", [","]),
        (r"prompt=ends in a backslash\\,next", ["ends in a backslash\\", "next"]),
        (r"prompt=C:\renders\shot,x", [r"C:\renders\shot", "x"]),
        (r"prompt=a\\\,b", ["a\\,b"]),
        ("prompt=x=y,a=b=c", ["x=y", "a=b=c"]),
        ("prompt= spaced , out ", ["spaced", "out"]),
        ("edge.control_weight=0.2,NaN,Infinity,1e400", [0.2, "NaN", "Infinity", "1e400"]),
    ],
)
def test_vary_values_hold_escaped_commas_backslashes_and_equals_signs(option: str, values: list) -> None:
    assert parse_vary(option).values == values


@pytest.mark.parametrize("option", ["prompt=a,,b", "prompt=,a", "prompt=a,", "prompt=a, ,b", "prompt= "])
def test_an_empty_vary_value_is_refused_naming_the_escape(option: str) -> None:
    with pytest.raises(WedgeError, match=r"an empty value; .* write a comma inside a value as \\,"):
        parse_vary(option)


def test_cli_wedge_keeps_an_escaped_comma_inside_one_prompt(layout: ProjectLayout, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(layout.root))
    assert (
        main(
            ["wedge", "tiny_prompt", "--vary", r"prompt=a city\, at dusk,a forest", "--name", "texts", "--no-register"]
        )
        == 0
    )
    made = sorted(p for p in layout.prompt_names() if p.startswith("texts_"))
    assert [load_spec(layout.prompt_file(p)).prompt for p in made] == ["a city, at dusk", "a forest"]
    assert "texts_01_prompt-a-city-at-dusk" in capsys.readouterr().out
    assert r"\," in build_parser_help()


def build_parser_help() -> str:
    from cosmos_assets.cli import build_parser

    wedge = build_parser()._subparsers._group_actions[0].choices["wedge"]
    return wedge.format_help()


# ---------------------------------------------------------------------------------------------------------
# what `validate` would refuse is refused before anything is written


def _nothing_written(layout: ProjectLayout, wedge: str) -> bool:
    return layout.prompt_names() == ["tiny_prompt"] and not manifest_path(layout, wedge).exists()


def test_a_value_validate_refuses_is_one_line_naming_the_variant_and_field_and_nothing_is_written(
    layout: ProjectLayout,
) -> None:
    with pytest.raises(WedgeError) as caught:
        plan_wedge(layout, _base(layout), [parse_vary("edge.control_weight=0.5,1.5")], name="over")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"{layout.prompt_file('over_02_edge.control_weight-1.5')}: edge.control_weight = 1.5: out of range"
    )
    assert _nothing_written(layout, "over")


def test_a_value_the_variants_model_refuses_is_refused_before_writing(layout: ProjectLayout) -> None:
    axes = [parse_vary("model=cosmos-transfer1,cosmos-transfer2.5"), parse_vary("guidance=2.5")]
    with pytest.raises(
        WedgeError, match=r"m_02_model-cosmos-transfer2.5_guidance-2.5.json: guidance = 2.5: Transfer2.5 takes"
    ):
        plan_wedge(layout, _base(layout), axes, name="m")
    assert _nothing_written(layout, "m")
    assert len(plan_wedge(layout, _base(layout), [axes[0], parse_vary("guidance=3")], name="m").specs) == 2


def test_a_schema_error_is_one_line_too(layout: ProjectLayout) -> None:
    with pytest.raises(SpecError) as caught:
        plan_wedge(layout, _base(layout), [parse_vary("edge.control_weight=NaN")], name="nan")
    assert "\n" not in str(caught.value) and "nan_01_edge.control_weight-NaN.json: edge.control_weight" in str(
        caught.value
    )
    assert _nothing_written(layout, "nan")


def test_what_the_base_itself_lacks_is_not_the_wedges_to_refuse(layout: ProjectLayout) -> None:
    """A wedge made before the shot's control videos are encoded: validate will say so, the values are fine."""
    for video in layout.shot_videos_dir("tiny_shot").glob("*.mp4"):
        video.unlink()
    plan = plan_wedge(layout, _base(layout), [parse_vary("seed=1,2")], name="early")
    assert len(write_wedge(layout, plan)) == 2


def test_cli_wedge_with_a_refused_value_prints_one_line_and_writes_nothing(
    layout: ProjectLayout, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(layout.root))
    assert (
        main(["wedge", "tiny_prompt", "--vary", "edge.control_weight=0.5,1.5", "--name", "over", "--no-register"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("error: ")
        and "over_02_edge.control_weight-1.5.json: edge.control_weight" in err[0]
    )
    assert _nothing_written(layout, "over")


def test_a_manifest_that_is_a_fifo_is_refused_not_waited_on(layout: ProjectLayout) -> None:
    path = manifest_path(layout, "piped")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    with pytest.raises(OSError, match="the wedge manifest .* is a FIFO"):
        WedgeManifest.read(path)
    assert ready_version(layout, "piped") is None  # the sensor skips it


def test_a_model_wedge_before_the_videos_are_encoded_is_not_refused_for_what_the_base_lacks(
    layout: ProjectLayout,
) -> None:
    """The CLI help's own example on a base whose control videos are not encoded yet: the model a variant names says
    the same as validate about the missing files, in its own words; that is the base's lack, not the value's."""
    for video in layout.shot_videos_dir("tiny_shot").glob("*.mp4"):
        video.unlink()
    plan = plan_wedge(
        layout, _base(layout), [parse_vary("model=cosmos-transfer1,cosmos-transfer2.5")], name="early_models"
    )
    assert len(write_wedge(layout, plan)) == 2


def test_a_wedge_runs_every_variant_under_one_diffusion_cache_setting(layout: ProjectLayout) -> None:
    with pytest.raises(WedgeError, match=r"cosmos_assets.cosmos3.diffusion_cache to false and true: a wedge compares"):
        plan_wedge(
            layout,
            _base(layout),
            [parse_vary("model=cosmos3"), parse_vary("cosmos_assets.cosmos3.diffusion_cache=true,false")],
            name="dc",
        )
    assert not list(layout.prompts_dir.glob("dc_*"))
    with pytest.raises(WedgeError, match="checkpoint_revision"):
        plan_wedge(
            layout,
            _base(layout),
            [parse_vary(f"cosmos_assets.cosmos3.checkpoint_revision={'a' * 40},{'b' * 40}")],
            name="rev",
        )
    base = json.loads(_base(layout).read_text())  # set once in the base, every variant shares it: fine
    base["cosmos_assets"] = {"model": "cosmos3", "cosmos3": {"diffusion_cache": True}}
    _base(layout).write_text(json.dumps(base))
    plan = plan_wedge(layout, _base(layout), [parse_vary("seed=1,2")], name="dc")
    assert {s.model_block().settings_for("cosmos3")["diffusion_cache"] for s in plan.specs.values()} == {True}
