"""Which output is whose, by exact name for every model (issue 17): prompts whose names share a prefix (``city`` and
``city_mask_v2``, with ``_``, ``-``, ``.`` or digits) each get their own files, never another's."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cosmos_assets.models.base import BatchItem
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.runs.batch import group_for_batches
from cosmos_assets.runs.batch_files import excerpt
from cosmos_assets.runs.batch_map import map_outputs, own_files, unclaimed_files
from cosmos_assets.runs.batch_members import Member as _Member

T1, T25, C3 = backend_named("cosmos-transfer1"), backend_named("cosmos-transfer2.5"), backend_named("cosmos3")
PREFIXED = ["city", "city_mask_v2", "city-2", "city2", "city.v2", "city_control", "city_mask"]


def item(backend, prompt: str, **block: object) -> BatchItem:
    data = new_prompt_spec("shot_a", f"text of {prompt}").to_json_dict()
    if block:
        data["cosmos_assets"] = {backend.name: block}
    from cosmos_assets.prompts.spec import parse_spec

    spec = parse_spec(data)
    return BatchItem(prompt=prompt, spec=spec, request=backend.generation(prompt, spec, f"run_{prompt}", 1))


def write_flat_sample(
    folder: Path, name: str, controls: tuple[str, ...] = ("edge",), masks: tuple[str, ...] = (), blocked: bool = False
) -> set[str]:
    """Upstream's flat files of one sample (cosmos_transfer2/inference.py); the names written."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.json": json.dumps({"name": name, "prompt": f"text of {name}"})}
    if not blocked:
        files |= {f"{name}_control_{k}.mp4": f"control {k} of {name}" for k in controls}
        files |= {f"{name}_mask_{k}.mp4": f"mask {k} of {name}" for k in masks}
        files |= {f"{name}.mp4": f"video of {name}", f"{name}.txt": f"text of {name}"}
    for file, content in files.items():
        (folder / file).write_text(content)
    return set(files)


# --------------------------------------------------------------------------- Transfer2.5: one flat folder


def test_transfer2_5_gives_each_prefixed_name_exactly_its_own_files(tmp_path: Path) -> None:
    fetched = tmp_path / "fetched"
    written = {name: write_flat_sample(fetched, name, masks=("edge",) if name == "city" else ()) for name in PREFIXED}
    for shared in ("config.yaml", "console.log", "debug.log"):
        (fetched / shared).write_text("log")
    batch = T25.batch_generation("B1", [item(T25, name) for name in PREFIXED], 1)
    assert batch.item_names == tuple(PREFIXED) and batch.item_files is not None
    for index, name in enumerate(PREFIXED):
        assert {p.name for p in own_files(fetched, batch.item_files[index])} == written[name], name
    outcomes = map_outputs(fetched, batch.item_texts, batch.item_folders, "", 1, 0, False, names=batch.item_names)
    assert [(o.status, o.folder) for o in outcomes] == [("succeeded", name) for name in PREFIXED]
    assert unclaimed_files(fetched, batch.item_files, batch.shared_files) == []
    (fetched / "city_mask_v3.mp4").write_text("nobody's")
    assert unclaimed_files(fetched, batch.item_files, batch.shared_files) == ["city_mask_v3.mp4"]


def test_transfer2_5_city_does_not_take_city_mask_v2s_files_and_each_finds_its_own_video(tmp_path: Path) -> None:
    """The issue's case: ``city_mask_v2.*`` start with ``city_mask_``, which the old prefix rule gave to ``city``."""
    fetched = tmp_path / "fetched"
    write_flat_sample(fetched, "city", masks=("edge",))
    write_flat_sample(fetched, "city_mask_v2")
    batch = T25.batch_generation("B1", [item(T25, "city"), item(T25, "city_mask_v2")], 1)
    for index, name in enumerate(("city", "city_mask_v2")):
        folder = tmp_path / name
        folder.mkdir()
        for path in own_files(fetched, batch.item_files[index]):
            path.rename(folder / path.name)
        video = T25.output_video(folder)
        assert video == folder / "output.mp4" and video.read_text() == f"video of {name}"
    assert sorted(p.name for p in (tmp_path / "city").iterdir()) == [
        "city.json",
        "city.mp4",
        "city.txt",
        "city_control_edge.mp4",
        "city_mask_edge.mp4",
        "output.mp4",
    ]
    assert not list(fetched.iterdir())


def test_transfer2_5_a_blocked_sample_keeps_its_json_and_its_neighbour_its_video(tmp_path: Path) -> None:
    fetched = tmp_path / "fetched"
    write_flat_sample(fetched, "city", blocked=True)
    write_flat_sample(fetched, "city2")
    outcomes = map_outputs(fetched, (None, None), ("city", "city2"), "", 1, 0, True, names=("city", "city2"))
    assert [o.status for o in outcomes] == ["blocked", "succeeded"]


def test_transfer2_5_reads_the_sample_name_from_its_own_json_not_from_other_json_files(tmp_path: Path) -> None:
    write_flat_sample(tmp_path, "city")
    (tmp_path / "spec_used.json").write_text(json.dumps({"prompt": "city"}))
    (tmp_path / "prompt_spec.json").write_text(json.dumps({"name": "city"}))  # not its own stem: not a sample
    assert T25.output_video(tmp_path).read_text() == "video of city"


@pytest.mark.parametrize(
    ("other", "clash"),
    [
        ("city_mask_v2", False),
        ("city-2", False),
        ("city2", False),
        ("city_control", False),
        ("city_mask_edge", True),
        ("city_control_seg", True),
        ("city_mask_guided_generation", True),
    ],
)
def test_transfer2_5_never_batches_samples_whose_file_names_could_be_each_others(other: str, clash: bool) -> None:
    city, second = item(T25, "city"), item(T25, other)
    assert T25.shares_batch_with(second, [city]) is not clash
    members = [
        _Member(i.prompt, T25, SimpleNamespace(spec=i.spec, request=i.request), None, None)  # type: ignore[arg-type]
        for i in (city, second)
    ]
    assert [[m.prompt for m in g] for g in group_for_batches(members)] == (
        [["city"], [other]] if clash else [["city", other]]
    )


# --------------------------------------------------------------------------- Cosmos 3: a folder per sample


def write_c3_sample(fetched: Path, name: str) -> None:
    folder = fetched / name
    folder.mkdir(parents=True)
    (folder / "vision.mp4").write_text(f"video of {name}")
    (folder / "sample_outputs.json").write_text(json.dumps({"status": "success", "args": {"name": name}}))


def test_cosmos3_maps_each_prefixed_name_to_its_own_folder(tmp_path: Path) -> None:
    for name in PREFIXED:
        write_c3_sample(tmp_path, name)
    batch = C3.batch_generation("B1", [item(C3, name) for name in PREFIXED], 1)
    outcomes = map_outputs(
        tmp_path, batch.item_texts, batch.item_folders, batch.prompt_file, 1, 0, False, video=batch.item_video
    )
    assert [(o.status, o.folder) for o in outcomes] == [("succeeded", name) for name in PREFIXED]
    assert C3.output_video(tmp_path, "city_mask_v2").read_text() == "video of city_mask_v2"
    assert not C3.output_video(tmp_path).exists()  # several samples and no name: none is guessed


def test_cosmos3_one_sample_folder_is_found_by_upstreams_own_files(tmp_path: Path) -> None:
    write_c3_sample(tmp_path, "city")
    (tmp_path / "city_mask_v2").mkdir()  # a folder without upstream's sample files is no sample
    assert C3.output_video(tmp_path).read_text() == "video of city"


@pytest.mark.parametrize(
    ("backend", "expected"),
    [(T25, "outputs/city/r1/city.mp4"), (C3, "outputs/city/r1/city/vision.mp4"), (T1, "outputs/city/r1/output.mp4")],
)
def test_a_runs_video_on_the_host_is_named_exactly_for_adoption(backend, expected: str) -> None:
    assert backend.output_video(Path("outputs/city/r1"), "city").as_posix() == expected


# --------------------------------------------------------------------------- Transfer1: video_<i>/ and prompt.txt


def test_transfer1_maps_by_text_and_video_1_is_not_video_11(tmp_path: Path) -> None:
    prompts = [f"city{i}" if i % 2 else f"city_mask_v{i}" for i in range(12)]
    texts = tuple(f"text of {p}" for p in prompts)
    for i, text in enumerate(texts):
        if i == 1:
            continue  # item 1 wrote nothing
        (tmp_path / f"video_{i}").mkdir()
        (tmp_path / f"video_{i}" / "output.mp4").write_text("v")
        (tmp_path / f"video_{i}" / "prompt.txt").write_text(text)
    folders = tuple(f"video_{i}" for i in range(12))
    outcomes = map_outputs(tmp_path, texts, folders, "prompt.txt", 12, 0, False)
    assert outcomes[1].status == "failed" and outcomes[11].folder == "video_11"
    assert [o.folder for i, o in enumerate(outcomes) if i != 1] == [f"video_{i}" for i in range(12) if i != 1]


# --------------------------------------------------------------------------- each prompt's log excerpt


def test_a_prompts_log_excerpt_holds_its_lines_and_not_a_prefixed_neighbours(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text(
        "\n".join(
            [
                "[1/2] Processing sample city",
                "Saved arguments to /workspace/outputs/.batches/B/city.json",
                "Mask for edge saved to /workspace/outputs/.batches/B/city_mask_edge.mp4",
                "[2/2] Processing sample city_mask_v2",
                "Saved arguments to /workspace/outputs/.batches/B/city_mask_v2.json",
                "Generated video saved to /workspace/outputs/.batches/B/city_mask_v2.mp4",
                "writing video_1/output.mp4",
                "writing video_11/output.mp4",
            ]
        )
        + "\n"
    )
    files = tuple(sorted({"city.json", "city.mp4", "city_mask_edge.mp4"}))
    own = excerpt(log, "B", 0, "city", "r_city", "city", "ok", files).split(
        "lines of the invocation about this prompt:"
    )[1]
    own = own.split("[cosmos-assets] the invocation's last lines:")[0]
    assert "Processing sample city\n" in own and "city.json" in own and "city_mask_edge.mp4" in own
    assert "city_mask_v2" not in own
    first = (
        excerpt(log, "B", 1, "other", "r_other", "video_1", "ok").split("about this prompt:")[1].split("last lines")[0]
    )
    assert "video_1/output.mp4" in first and "video_11" not in first
