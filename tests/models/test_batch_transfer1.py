"""Cosmos-Transfer1's batch contract (docs/upstream/transfer1.md#batch-mode): what may share an invocation, its argv and JSONL."""

from __future__ import annotations

import json

from cosmos_assets.models.base import BatchItem
from cosmos_assets.models.registry import backend_named
from cosmos_assets.models.transfer1 import BatchLine
from cosmos_assets.models.transfer1_cli import TransferInvocation
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.prompts.spec import TransferSpec, parse_spec

T1 = backend_named("cosmos-transfer1")


def item(prompt: str, spec: TransferSpec, **flags) -> BatchItem:
    request = T1.generation(prompt, spec, f"run_{prompt}", 1)
    if flags:
        settings = TransferInvocation.model_validate({**request.invocation.settings, **flags})
        request = type(request)(
            spec=request.spec, spec_remote=request.spec_remote, invocation=T1.invocation(spec, settings)
        )
    return BatchItem(prompt=prompt, spec=spec, request=request)


def with_keys(spec: TransferSpec, **keys) -> TransferSpec:
    return parse_spec({**spec.to_json_dict(), **keys})


def test_what_may_share_an_invocation() -> None:
    a, b = new_prompt_spec("shot_a", "a street"), new_prompt_spec("shot_b", "a harbour")
    assert T1.batch_key(item("a", a)) == T1.batch_key(item("b", b))  # other text, other videos: one load
    different = {
        "seed": with_keys(b, seed=7),
        "weights": new_prompt_spec("shot_b", "a harbour", weights={"depth": 0.9}),
        "control set": new_prompt_spec("shot_b", "a harbour", weights={"seg": None}),
        "negative prompt": with_keys(b, negative_prompt="blurry"),
    }
    for what, spec in different.items():
        assert T1.batch_key(item("b", spec)) != T1.batch_key(item("a", a)), what
    assert T1.batch_key(item("b", b, num_steps=10)) != T1.batch_key(item("a", a))  # a per-invocation flag
    assert T1.batch_key(item("b", b, num_gpus=2)) != T1.batch_key(item("a", a))


def test_the_batch_invocation_reads_a_jsonl_of_each_items_prompt_and_videos() -> None:
    items = [item("a", new_prompt_spec("shot_a", "a street")), item("b", new_prompt_spec("shot_b", "a harbour"))]
    batch = T1.batch_generation("B1", items, 1, batch_size=4)
    argv = list(batch.request.invocation.argv)
    assert argv[argv.index("--batch_input_path") + 1] == "inputs/batches/B1.jsonl"
    assert argv[argv.index("--batch_size") + 1] == "2"  # never more than the items
    assert argv[argv.index("--video_save_folder") + 1] == "outputs/.batches/B1"
    assert argv[argv.index("--controlnet_specs") + 1] == "inputs/batches/B1.json"
    remote, content = batch.batch_file
    lines = [BatchLine.model_validate(json.loads(line)) for line in content.splitlines()]
    assert remote == "inputs/batches/B1.jsonl" and [line.prompt for line in lines] == ["a street", "a harbour"]
    assert lines[1].visual_input == "inputs/videos/shot_b/color.mp4"
    assert lines[1].control_overrides["depth"] == {"input_control": "inputs/videos/shot_b/depth.mp4"}
    assert lines[1].control_overrides["vis"] == {"input_control": None}
    assert batch.item_folders == ("video_0", "video_1") and batch.item_texts == ("a street", "a harbour")


def test_an_upsampled_prompt_is_checked_by_position_at_batch_size_1() -> None:
    items = [item(p, new_prompt_spec("shot_a", p), extra={"upsample_prompt": True}) for p in ("one", "two")]
    batch = T1.batch_generation("B2", items, 1, batch_size=2)
    argv = list(batch.request.invocation.argv)
    assert argv[0] == "torchrun" and argv[argv.index("--batch_size") + 1] == "1"
    assert batch.item_texts == (None, None) and batch.batch_size == 1


def upscale_item(prompt: str, weight: float = 0.5, text: str | None = "a street") -> BatchItem:
    request = T1.upscale(prompt, f"inputs/generated/{prompt}/r/output.mp4", f"r_{prompt}_up", 1, weight)
    return BatchItem(prompt=prompt, spec=parse_spec({**request.spec, "prompt": text}), request=request)


def test_upscales_share_a_load_with_upscales_of_the_same_weight_only() -> None:
    # docs/upstream/transfer1-batch-upscale.md: one invocation with the spec's upscale control runs every JSONL line
    a, b = upscale_item("a"), upscale_item("b", text="a harbour")
    assert T1.batch_key(a) is not None and T1.batch_key(a) == T1.batch_key(b)
    assert T1.batch_key(upscale_item("c", weight=0.8)) != T1.batch_key(a)  # the weight is the spec's, shared
    generation = item("g", new_prompt_spec("shot_a", "a street"))
    assert T1.batch_key(generation) != T1.batch_key(a)  # an item cannot add upscale to a generation's controls
    assert T1.batch_text(a) is None and T1.batch_text(generation) == "a street"  # upscales map by position


def test_an_upscale_batch_is_batch_size_1_with_the_top_level_input_video_and_one_line_per_video() -> None:
    items = [upscale_item("a"), upscale_item("b", text=None)]
    batch = T1.batch_generation("20261207_200000_0000000a_batch0", items, 1, batch_size=4)
    argv = list(batch.request.invocation.argv)
    assert batch.batch_size == 1 and argv[argv.index("--batch_size") + 1] == "1"  # transfer.py:290-293 forces it
    assert batch.item_texts == (None, None) and batch.item_folders == ("video_0", "video_1")
    assert batch.request.spec == {
        "input_video_path": "inputs/generated/a/r/output.mp4",
        "upscale": {"control_weight": 0.5},
    }
    assert "--num_steps" in argv and argv[argv.index("--num_steps") + 1] == "10"
    assert batch.batch_file is not None
    lines = [json.loads(line) for line in batch.batch_file[1].splitlines()]
    assert lines == [
        {"prompt": "a street", "visual_input": "inputs/generated/a/r/output.mp4", "control_overrides": {}},
        {"prompt": "", "visual_input": "inputs/generated/b/r/output.mp4", "control_overrides": {}},
    ]
