"""A prompt file cannot change how a model is invoked (issue 17): every invocation-level key of every model's contract
is refused when the prompt file loads, naming the file, the key and the fix; per-item settings stay allowed; the
upstream spec examples still load. The keys are read from each backend's contract, never listed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosmos_assets.models import cosmos3_contract as cosmos3
from cosmos_assets.models import transfer1_cli
from cosmos_assets.models import transfer2_5_contract as transfer2_5
from cosmos_assets.models.invocation_keys import cli_flags
from cosmos_assets.models.refused_keys import prompt_file_invocation_keys
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.prompts.spec import SpecError, load_spec, parse_spec

T1, T25, C3 = "cosmos-transfer1", "cosmos-transfer2.5", "cosmos3"
SHARED = Path(__file__).resolve().parents[3] / "shared"
SEED = new_prompt_spec("shot_a", "a quiet street at dusk").to_json_dict()


def keys_of(model: str) -> list[str]:
    return sorted(backend_named(model).invocation_keys())


TOP_LEVEL = [(m, k) for m in (T1, T25, C3) for k in keys_of(m) if "." not in k]
IN_BLOCK = [(m, k) for m in (T25, C3) for k in keys_of(m)]


def with_block_key(model: str, key: str, value: object = "x") -> dict:
    block: dict = {}
    if "." in key:
        outer, inner = key.split(".", 1)
        block[outer] = {inner: value}
    else:
        block[key] = value
    return {**SEED, "cosmos_assets": {model: block}}


def refusal(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "bad_prompt.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    return str(error.value)


# --------------------------------------------------------------------------- the classification, from the contracts


def test_every_transfer1_flag_is_classified_once_invocation_or_item() -> None:
    flags = set(transfer1_cli.cli_flags())
    invocation, item = set(transfer1_cli.INVOCATION_FLAGS), set(transfer1_cli.ITEM_FLAGS)
    assert invocation | item == flags and not invocation & item


@pytest.mark.parametrize("model", [T25, C3])
def test_the_named_exceptions_are_real_flags_or_spec_fields(model: str) -> None:
    module, cli, schema = (
        (transfer2_5, "transfer2_5_cli.json", "transfer2_5_spec_schema.json")
        if model == T25
        else (cosmos3, "cosmos3_cli.json", "cosmos3_spec_schema.json")
    )
    contract = Path(module.__file__).parents[1] / "contract"
    flags = cli_flags(json.loads((contract / cli).read_text()))
    fields = set(json.loads((contract / schema).read_text())["properties"])
    launch = module.LAUNCH_KEYS if model == T25 else module.LAUNCH_SETTINGS
    assert set(module.SPECIAL_KEYS) <= set(flags) | fields  # no stale name in the documented list
    assert set(launch) - {"size"} <= set(flags)  # cosmos3's size is ours (it maps to --checkpoint-path)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            T1,
            {
                "batch_input_path",
                "batch_size",
                "video_save_folder",
                "video_save_name",
                "checkpoint_dir",
                "num_gpus",
                "controlnet_specs",
                "tokenizer_dir",
            },
        ),
        (
            T25,
            {
                "input_files",
                "output_dir",
                "checkpoint_path",
                "context_parallel_size",
                "name",
                "video_path",
                "prompt_path",
                "edge.control_path",
                "seg.mask_path",
                "experiment",
                "config_file",
                "keep_going",
            },
        ),
        (
            C3,
            {
                "input_files",
                "output_dir",
                "checkpoint_path",
                "parallelism_preset",
                "cp_size",
                "dp_shard_size",
                "name",
                "vision_path",
                "prompt_path",
                "blur.control_path",
                "model_mode",
                "negative_prompt_file",
                "max_num_seqs",
            },
        ),
    ],
)
def test_the_contracts_hold_the_invocation_level_keys(model: str, expected: set[str]) -> None:
    assert expected <= set(keys_of(model))


@pytest.mark.parametrize("model", [T1, T25, C3])
def test_per_item_generation_settings_are_never_invocation_level(model: str) -> None:
    item = {
        "seed",
        "guidance",
        "num_steps",
        "prompt",
        "negative_prompt",
        "sigma_max",
        "resolution",
        "fps",
        "control_weight",
        "weight",
        "max_frames",
        "shift",
        "control_guidance",
        "edge.control_weight",
        "edge.preset_edge_threshold",
        "edge.mask_prompt",
        "offload_guardrail_models",
        "disable_guardrails",
        "guardrails",
        "use_torch_compile",
    }
    assert not item & set(keys_of(model))


# --------------------------------------------------------------------------- every invocation-level key is refused


@pytest.mark.parametrize(("model", "key"), TOP_LEVEL, ids=[f"{m}:{k}" for m, k in TOP_LEVEL])
def test_an_invocation_level_key_at_the_top_level_is_refused_naming_file_key_and_fix(
    tmp_path: Path, model: str, key: str
) -> None:
    message = refusal(tmp_path, {**SEED, key: "x"})
    [line] = [line for line in message.splitlines() if f": {key} = " in line]
    assert line.startswith(f'{tmp_path / "bad_prompt.json"}: {key} = "x": sets ')
    assert "invocation, which is the project's; remove it" in line
    assert prompt_file_invocation_keys()[key].message() in line


@pytest.mark.parametrize(("model", "key"), IN_BLOCK, ids=[f"{m}:{k}" for m, k in IN_BLOCK])
def test_an_invocation_level_key_in_the_model_block_is_refused_naming_file_key_and_fix(
    tmp_path: Path, model: str, key: str
) -> None:
    message = refusal(tmp_path, with_block_key(model, key))
    expected = backend_named(model).invocation_keys()[key].message()
    assert message == f'{tmp_path / "bad_prompt.json"}: cosmos_assets.{model}.{key} = "x": {expected}'


def test_batch_input_path_the_issues_case_is_refused_with_the_batching_fix(tmp_path: Path) -> None:
    message = refusal(tmp_path, {**SEED, "batch_input_path": "inputs/batches/another.jsonl"})
    assert message == (
        f'{tmp_path / "bad_prompt.json"}: batch_input_path = "inputs/batches/another.jsonl": sets '
        "batch mode (the prompts it reads) of the cosmos-transfer1 invocation, which is the project's; "
        "remove it; the project batches prompts itself: run a partition range (docs/batching.md)"
    )


def test_a_prompt_can_no_longer_rename_its_sample_or_point_it_at_another_prompts_files(tmp_path: Path) -> None:
    """``name`` and ``video_path`` at the top level used to reach Transfer2.5's spec as they were (another sample's
    name, a path never checked nor uploaded)."""
    message = refusal(tmp_path, {**SEED, "name": "city_mask_v2", "video_path": "/workspace/outputs/city/x.mp4"})
    assert 'name = "city_mask_v2": sets the output file names' in message
    assert 'video_path = "/workspace/outputs/city/x.mp4": sets an input path' in message


def test_several_invocation_keys_are_each_named_on_their_own_line(tmp_path: Path) -> None:
    lines = refusal(tmp_path, {**SEED, "num_gpus": 2, "video_save_folder": "/tmp/x", "seed": 3}).splitlines()
    assert [line.split(": ")[1].split(" = ")[0] for line in lines] == ["num_gpus", "video_save_folder"]


# --------------------------------------------------------------------------- what stays allowed


def test_transfer1_item_flags_stay_allowed_at_the_top_level() -> None:
    values = {
        "guidance": 7.0,
        "num_steps": 30,
        "fps": 24,
        "blur_strength": "low",
        "canny_threshold": "high",
        "num_input_frames": 1,
        "upsample_prompt": True,
        "offload_diffusion_transformer": True,
    }
    assert set(values) <= set(transfer1_cli.ITEM_FLAGS)
    spec = parse_spec({**SEED, **values})
    assert spec.to_json_dict()["num_steps"] == 30


def test_an_upsampled_prompt_is_made_the_invocations_torchrun_and_the_upsamplers_checkpoint() -> None:
    spec = parse_spec({**SEED, "upsample_prompt": True})
    invocation = backend_named(T1).generation("p", spec, "r1", 1).invocation
    assert invocation.argv[0] == "torchrun" and "--upsample_prompt" in invocation.argv
    assert any("UpsamplePrompt" in path for path in invocation.checkpoints)


def test_the_model_blocks_own_settings_stay_allowed() -> None:
    spec = parse_spec(
        {
            **SEED,
            "cosmos_assets": {
                "model": T25,
                T25: {
                    "guidance": 3,
                    "seed": 1,
                    "num_steps": 20,
                    "disable_guardrails": True,
                    "edge": {"mask_prompt": "car"},
                },
                C3: {
                    "size": "super",
                    "guardrails": False,
                    "use_torch_compile": False,
                    "shift": 10.0,
                    "control_guidance": 1.5,
                },
            },
        }
    )
    assert backend_named(T25).generation("p", spec, "r1", 1).spec["edge"]["mask_prompt"] == "car"
    assert "--checkpoint-path" in backend_named(C3).generation("p", spec, "r1", 2).invocation.argv


# --------------------------------------------------------------------------- upstream's examples still load


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared contracts not present at {SHARED}")
@pytest.mark.parametrize(
    "path", sorted((SHARED / "cosmos-transfer1" / "spec-examples").glob("*.json")), ids=lambda p: p.stem
)
def test_every_transfer1_upstream_example_still_loads(path: Path) -> None:
    assert load_spec(path).to_json_dict() == json.loads(path.read_text())


def _samples(model_dir: str) -> list[tuple[str, dict]]:
    found = []
    for path in sorted((SHARED / model_dir / "spec-examples").glob("*.json*")):
        texts = (
            [path.read_text()] if path.suffix == ".json" else [t for t in path.read_text().splitlines() if t.strip()]
        )
        found += [(f"{path.name}[{i}]", json.loads(text)) for i, text in enumerate(texts)]
    return found


NEWER_SAMPLES = [
    (m, n, s)
    for m, d in ((T25, "cosmos-transfer2.5"), (C3, "cosmos3"))
    if (SHARED / d).is_dir()
    for n, s in _samples(d)
]


@pytest.mark.parametrize(("model", "name", "sample"), NEWER_SAMPLES, ids=[f"{m}:{n}" for m, n, _ in NEWER_SAMPLES])
def test_an_upstream_samples_generation_settings_load_in_the_model_block(model: str, name: str, sample: dict) -> None:
    """An upstream sample's keys the contract refuses are only those the project sets itself (its name, its mode,
    its input paths); the rest, laid in the model block, loads."""
    keys = backend_named(model).invocation_keys()
    refused = {k for k in sample if k in keys} | {
        f"{k}.{s}" for k, v in sample.items() if isinstance(v, dict) for s in v if f"{k}.{s}" in keys
    }
    assert all(k in ("name", "model_mode") or "path" in k or k.endswith("_file") for k in refused), refused
    kept = {
        k: ({s: x for s, x in v.items() if f"{k}.{s}" not in keys} if isinstance(v, dict) else v)
        for k, v in sample.items()
        if k not in keys
    }
    parse_spec({**SEED, "cosmos_assets": {model: kept}})


def test_a_run_of_such_a_prompt_stops_before_anything_is_staged_or_run(tmp_path: Path) -> None:
    """The issue's run generated another batch's prompts into this prompt's folder and recorded the wrong cause."""
    from cosmos_assets.machines.local import LocalMachine
    from cosmos_assets.runs.record_store import RunStore
    from cosmos_assets.runs.runner import run_generation
    from tests.project_factory import make_project

    layout = make_project(tmp_path / "project")
    data = json.loads(layout.prompt_file("tiny_prompt").read_text()) | {"batch_input_path": "inputs/batches/x.jsonl"}
    layout.prompt_file("tiny_prompt").write_text(json.dumps(data))
    host = tmp_path / "host"
    with pytest.raises(SpecError, match=r"tiny_prompt.json: batch_input_path = .*remove it") as error:
        run_generation(layout, LocalMachine(host), backend_named("preview"), "tiny_prompt", log=lambda line: None)
    assert str(error.value).count("\n") == 0
    assert RunStore(layout.runs_dir).all() == [] and not host.exists()
    assert not layout.output_dir("tiny_prompt").exists()


def test_every_invocation_key_is_named_once_even_beside_another_error(tmp_path: Path) -> None:
    data = {**SEED, "num_gpus": 2, "edge": {"control_weight": -1}, "cosmos_assets": {C3: {"output_dir": "/tmp"}}}
    fields = [line.split(": ")[1].split(" = ")[0] for line in refusal(tmp_path, data).splitlines()]
    assert sorted(fields) == ["cosmos_assets.cosmos3.output_dir", "edge.control_weight", "num_gpus"]


@pytest.mark.parametrize("model", ["preview", "cosmos-transfer1", T25, "cosmos3"])
def test_the_prompt_file_checks_the_keys_each_backend_owns_without_loading_a_backend(model: str) -> None:
    from cosmos_assets.models.refused_keys import model_invocation_keys

    assert model_invocation_keys(model) == dict(backend_named(model).invocation_keys())
    assert model_invocation_keys(model)  # every model owns some: an empty table would refuse nothing
