"""Property-based tests (hypothesis): no input makes the spec model, the model backends' prompt checks, the
frame-sequence scanner, the names' rule, the sensor cursors or the history line raise anything but their own
validation error.

Examples are few and derandomized (a fixed sequence, no example database), so CI time and results are stable.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosmos_assets.layout import ProjectLayout, check_name
from cosmos_assets.media import RenderSequence, RenderValidationError, scan_render_folder
from cosmos_assets.media.frames import PNG_SIGNATURE, write_png
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.inputs import validate_for_run
from cosmos_assets.prompts.model_block import MODEL_BLOCK_FIELDS
from cosmos_assets.prompts.spec import SpecError, TransferSpec, load_spec, parse_spec
from cosmos_assets.prompts.spec_values import CONTROL_FIELDS, CONTROL_KEYS, REGIONAL_PROMPT_FIELDS
from cosmos_assets.runs.history import HistoryRecord, append_history, read_history, storable_text
from cosmos_assets.watch.cursors import PromptCursor, RenderCursor
from cosmos_assets.watch.plans import plan_render_tick, stat_render_folder

FEW = settings(max_examples=40, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
SOME = settings(FEW, max_examples=80)

# ------------------------------------------------------------------------------------------------ strategies

any_char = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))  # lone surrogates too
odd_text = st.text(any_char, min_size=1, max_size=6)
any_text = st.one_of(st.text(max_size=20), odd_text)
FIELD_NAMES = ["prompt", "negative_prompt", "input_video_path", "sigma_max", "seed", "num_video_frames",
               "regional_prompts", "cosmos_assets", "guidance", "num_steps", "fps", "offload_text_encoder_model",
               *CONTROL_KEYS, *CONTROL_FIELDS, *REGIONAL_PROMPT_FIELDS, *MODEL_BLOCK_FIELDS]  # fmt: skip
PATHS = ["inputs/videos/shot_a/color.mp4", "inputs/videos/shot_a/depth.mp4", "inputs/videos/shot_b/seg.mp4",
         "../x.mp4", "/etc/passwd", "inputs/videos/../../x", "", " ", "a\0b", "w.pt", "x" * 300]  # fmt: skip
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=12))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            0,
            0.25,
            0.5,
            1,
            1.5,
            -1,
            80,
            70,
            "0.5",
            "80",
            "nan",
            "inf",
            "cosmos3",
            "cosmos-transfer2.5",
            "cosmos-transfer1",
            "preview",
            "transfer1",
        ]
    ),
    st.sampled_from(PATHS),
    st.text(max_size=20),
    odd_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=12,
)


@st.composite
def spec_like(draw: st.DrawFn) -> dict:
    """Objects shaped like prompt files (known keys, controls, regional prompts, the model block) with any values."""
    data = draw(st.dictionaries(keys, json_values, max_size=6))
    for key in draw(st.lists(st.sampled_from(CONTROL_KEYS), max_size=3, unique=True)):
        data[key] = draw(st.dictionaries(st.sampled_from(CONTROL_FIELDS) | keys, scalars | json_values, max_size=4))
    if draw(st.booleans()):
        data["regional_prompts"] = draw(
            st.lists(
                st.dictionaries(
                    st.sampled_from(REGIONAL_PROMPT_FIELDS) | keys, scalars | st.lists(scalars, max_size=5), max_size=4
                ),
                max_size=3,
            )
        )
    if draw(st.booleans()):
        data["cosmos_assets"] = draw(
            st.dictionaries(
                st.sampled_from(MODEL_BLOCK_FIELDS) | keys,
                scalars | st.dictionaries(keys, json_values, max_size=4),
                max_size=3,
            )
        )
    return data


@st.composite
def plausible_spec(draw: st.DrawFn) -> dict:
    """Specs close to valid: a prompt, controls with paths and weights, sometimes a model block with settings."""
    data: dict = {"prompt": draw(any_text)}
    if draw(st.booleans()):
        data["input_video_path"] = draw(st.sampled_from(PATHS[:3]))
    else:
        data["sigma_max"] = draw(st.sampled_from([80, 90, 70, 100.5]))
    for key in draw(st.lists(st.sampled_from(CONTROL_KEYS), min_size=1, max_size=3, unique=True)):
        control: dict = {"control_weight": draw(st.sampled_from([0, 0.3, 1, 0.5, "w.pt"]))}
        if draw(st.booleans()) or "input_video_path" not in data:
            control["input_control"] = draw(st.sampled_from(PATHS[:3]))
        data[key] = control
    if draw(st.booleans()):
        model = draw(st.sampled_from(["cosmos-transfer2.5", "cosmos3", "cosmos-transfer1"]))
        block: dict = {"model": model}
        if model != "cosmos-transfer1" and draw(st.booleans()):
            block[model] = draw(st.dictionaries(keys, scalars | st.dictionaries(keys, scalars, max_size=3), max_size=4))
        data["cosmos_assets"] = block
    for key, value in draw(
        st.dictionaries(st.sampled_from(["guidance", "num_steps", "fps", "seed", "x_flag"]), scalars, max_size=3)
    ).items():
        data[key] = value
    return data


# ------------------------------------------------------------------------------------------------ the spec model

PARSED: list[int] = []
"""Specs that parsed: the strategies must reach past the first refusal (checked below)."""


@SOME
@given(st.one_of(json_values, spec_like(), plausible_spec()))
def test_parse_spec_raises_only_spec_error(data: object) -> None:
    try:
        spec = parse_spec(data, "p.json")
    except SpecError as error:
        assert error.problems and str(error)
        return
    assert isinstance(spec, TransferSpec)
    PARSED.append(1)
    json.dumps(spec.to_json_dict())  # what loaded can be written back
    spec.warnings()


def test_the_spec_strategies_reach_valid_specs() -> None:
    if not PARSED:
        test_parse_spec_raises_only_spec_error()
    assert len(PARSED) >= 5, "the generated specs never got past validation: the property above tests too little"


@FEW
@given(
    st.one_of(st.binary(max_size=300), st.builds(lambda d: json.dumps(d).encode("utf-8", "surrogatepass"), spec_like()))
)
def test_load_spec_of_any_bytes_raises_only_spec_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.json"
        path.write_bytes(data)
        try:
            spec = load_spec(path)
        except SpecError as error:
            assert str(path) in str(error)
            return
        validate_for_run(spec, path, Path(folder))


_PROJECT = tempfile.TemporaryDirectory(prefix="cosmos-properties-")
_ROOT = Path(_PROJECT.name)
for _rel in PATHS[:3]:
    (_ROOT / _rel).parent.mkdir(parents=True, exist_ok=True)
    (_ROOT / _rel).write_bytes(b"not really a video")
(_ROOT / "w.pt").write_bytes(b"")


@FEW
@given(plausible_spec())
def test_every_model_checks_a_prompt_with_its_own_error_only(data: dict) -> None:
    try:
        spec = parse_spec(data, "p.json")
    except SpecError:
        return
    for model in ("cosmos-transfer1", "cosmos-transfer2.5", "cosmos3", "preview"):
        backend = backend_named(model)
        try:
            backend.check_prompt(spec, _ROOT / "inputs" / "prompts" / "p.json", _ROOT)
        except SpecError as error:
            assert error.problems
            continue
        backend.prompt_warnings(spec, _ROOT)
        request = backend.generation("p", spec, "20260101_000000_abcdef12", 1, project_root=_ROOT)
        json.dumps(request.spec)  # the model's spec can be written


# ------------------------------------------------------------------------------------------------ frame scanner


def _png(width: int, height: int, channels: int, deep: bool) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.png"
        shape = (height, width) if channels == 1 else (height, width, channels)
        write_png(path, np.zeros(shape, dtype=np.uint16 if deep else np.uint8))
        return path.read_bytes()


PNGS = [_png(8, 4, 3, False), _png(8, 4, 1, True), _png(4, 8, 4, False), _png(8, 4, 3, True)]
IHDR_LIE = PNG_SIGNATURE + struct.pack(">I4s", 13, b"IHDR") + struct.pack(">IIBBBBB", 0, 2**32 - 1, 8, 9, 0, 0, 0)
IHDR_LIE += struct.pack(">I", zlib.crc32(IHDR_LIE[12:]) & 0xFFFFFFFF) + b"\x00\x00\x00\x00IEND\xaeB`\x82"

frame_numbers = st.one_of(st.integers(0, 1005), st.integers(0, 10**40), st.sampled_from([1001, 1002, 1003]))
frame_names = st.one_of(
    st.builds(
        lambda m, n, w: f"{m}.{n:0{w}d}.png",
        st.sampled_from(["color", "depth", "segmentation"]),
        frame_numbers,
        st.integers(1, 6),
    ),
    st.builds(
        lambda m, n: f"{m}.{n}.png",
        st.sampled_from(["color", "depth", "segmentation", "Color", "color.1"]),
        st.sampled_from(["١٢", "１", "1\n", "", "-1", "+1", " 1", "1e3", "0x1"]),
    ),
    st.text(st.characters(exclude_characters="/\0"), min_size=1, max_size=30),
)
contents = st.one_of(
    st.sampled_from(PNGS),
    st.builds(lambda png, cut: png[:cut], st.sampled_from(PNGS), st.integers(0, 60)),
    st.builds(
        lambda png, at, byte: png[:at] + bytes([byte]) + png[at + 1 :],
        st.sampled_from(PNGS),
        st.integers(0, 40),
        st.integers(0, 255),
    ),
    st.just(IHDR_LIE),
    st.just(b""),
    st.binary(max_size=64),
)
listings = st.dictionaries(frame_names, st.one_of(contents, st.just(None)), max_size=12)
"""File name -> bytes, or None for a sub-folder of that name."""


def _creatable(name: str) -> bool:
    try:
        return name not in (".", "..") and len(os.fsencode(name)) <= 255
    except UnicodeEncodeError:  # a lone surrogate no file name can hold
        return False


def _write_listing(folder: Path, listing: dict[str, bytes | None]) -> None:
    for name, data in listing.items():
        if not _creatable(name):
            continue
        path = folder / name
        try:
            path.mkdir() if data is None else path.write_bytes(data)
        except (OSError, ValueError):  # a name this file system refuses is not a listing we can have
            continue


@SOME
@given(listings)
def test_scan_render_folder_raises_only_render_validation_error(listing: dict[str, bytes | None]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _write_listing(root, listing)
        try:
            sequence = scan_render_folder(root)
        except RenderValidationError as error:
            assert error.problems and all(isinstance(p, str) and p for p in error.problems)
            assert len(error.problems) < 200 + 3 * len(
                listing
            )  # a far frame number is never counted out frame by frame
        else:
            assert isinstance(sequence, RenderSequence) and sequence.frame_count >= 1
            assert sequence.fingerprint()
        stat_render_folder(root, 0)


@FEW
@given(st.dictionaries(st.text(st.characters(exclude_characters="/\0"), min_size=1, max_size=20), listings, max_size=3))
def test_a_render_tick_over_any_folders_never_raises(folders: dict[str, dict[str, bytes | None]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        layout = ProjectLayout(root=Path(folder))
        layout.renders_dir.mkdir(parents=True)
        for name, listing in folders.items():
            shot = layout.renders_dir / name
            if not _creatable(name):
                continue
            shot.mkdir(exist_ok=True)
            _write_listing(shot, listing)
        plan = plan_render_tick(layout, RenderCursor(), 4e9, settle_seconds=0)
        RenderCursor.load(plan.cursor.dump())


# ------------------------------------------------------------------------------------------------ names, cursors, history


@SOME
@given(st.text(any_char, max_size=260))
def test_a_name_is_a_plain_child_of_its_folder_or_a_value_error(name: str) -> None:
    layout = ProjectLayout(root=Path("/project"))
    try:
        check_name(name, "prompt")
    except ValueError as error:
        assert "\n" not in str(error) and "rename it" in str(error)
        with pytest.raises(ValueError):
            layout.output_dir(name)
        return
    for path, parent in (
        (layout.output_dir(name), layout.outputs_dir),
        (layout.prompt_file(name), layout.prompts_dir),
        (layout.render_dir(name), layout.renders_dir),
        (layout.upscaled_dir(name), layout.outputs_dir),
    ):
        assert path.parent == parent and path.name not in (".", "..")
        assert len(os.fsencode(path.name)) <= 255


@FEW
@given(
    st.one_of(
        st.none(),
        any_text,
        st.builds(lambda v: json.dumps(v, ensure_ascii=False), json_values),
        st.builds(lambda t: "z1:" + t, any_text),
    )
)
def test_sensor_cursors_load_anything(raw: str | None) -> None:
    RenderCursor.load(raw)
    PromptCursor.load(raw)


@FEW
@given(st.text(any_char, max_size=200))
def test_any_error_text_is_one_history_line_read_back_as_written(text: str) -> None:
    record = HistoryRecord(
        when=datetime.now(UTC),
        run_id="r",
        stage="generate",
        prompt="p",
        shot=None,
        host="h",
        backend="preview",
        command="c",
        status="failed",
        error=text,
    )
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "run_history.log"
        append_history(log, record)
        assert log.read_bytes().count(b"\n") == 1
        assert [h.error for h in read_history(log)] == [storable_text(text)]
    assert storable_text(text) == text or any(0xD800 <= ord(c) <= 0xDFFF for c in text)
