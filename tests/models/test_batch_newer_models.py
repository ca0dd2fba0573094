"""Transfer2.5's native batch (several sample files after ONE -i, docs/upstream/transfer2.5.md#batching): its argv and what may share a load."""

from __future__ import annotations

from cosmos_assets.models.base import BatchItem
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec

T25 = backend_named("cosmos-transfer2.5")


def item(prompt: str, num_gpus: int = 1, **weights: float | None) -> BatchItem:
    spec = new_prompt_spec("shot_a", f"text of {prompt}", weights=weights or None)
    return BatchItem(prompt=prompt, spec=spec, request=T25.generation(prompt, spec, f"run_{prompt}", num_gpus))


def test_transfer2_5_puts_every_sample_file_after_one_i_and_maps_outputs_by_name() -> None:
    batch = T25.batch_generation("B1", [item("a"), item("b"), item("c")], 1)
    argv = list(batch.request.invocation.argv)
    assert argv.count("-i") == 1 and argv.count("-o") == 1
    at = argv.index("-i")
    assert argv[at + 1 : at + 4] == ["inputs/prompts/a.json", "inputs/prompts/b.json", "inputs/prompts/c.json"]
    assert argv[argv.index("-o") + 1] == "outputs/.batches/B1" == batch.request.invocation.output_folder
    assert batch.item_names == ("a", "b", "c")


def test_transfer2_5_batches_the_same_launch_and_control_set_only() -> None:
    assert T25.batch_key(item("a")) == T25.batch_key(item("b"))
    assert T25.batch_key(item("a")) != T25.batch_key(item("b", seg=None))  # another control set
    # several GPUs with guardrails on: a blocked sample can leave the ranks out of step, so never batched
    assert T25.batch_key(item("a", num_gpus=2)) is None
