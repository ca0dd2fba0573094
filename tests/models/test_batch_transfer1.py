"""Cosmos-Transfer1's batch contract (docs/upstream/transfer1.md#batch-mode): what may share an invocation, its argv and JSONL."""

from __future__ import annotations

import json

from cosmos_assets.models.registry import backend_named
from cosmos_assets.models.base import BatchItem
from cosmos_assets.models.transfer1 import BatchLine
from cosmos_assets.models.transfer1_cli import TransferInvocation
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.prompts.spec import TransferSpec, parse_spec

T1 = backend_named("cosmos-transfer1")


def item(prompt: str, spec: TransferSpec, **flags) -> BatchItem:  # noqa: ANN003
    request = T1.generation(prompt, spec, f"run_{prompt}", 1)
    if flags:
        settings = TransferInvocation.model_validate({**request.invocation.settings, **flags})
        request = type(request)(spec=request.spec, spec_remote=request.spec_remote,
                                invocation=T1.invocation(spec, settings))  # fmt: skip
    return BatchItem(prompt=prompt, spec=spec, request=request)


def with_keys(spec: TransferSpec, **keys) -> TransferSpec:  # noqa: ANN003
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


def test_the_upscale_is_never_batched() -> None:
    request = T1.upscale("a", "outputs/a/r/output.mp4", "r_up", 1, 0.5)
    spec = parse_spec(request.spec)
    assert T1.batch_key(BatchItem(prompt="a", spec=spec, request=request)) is None
