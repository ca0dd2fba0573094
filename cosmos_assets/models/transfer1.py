"""Cosmos-Transfer1 (the seed's model): spec, argv, checkpoints, outputs and guardrail.

Upstream facts: docs/upstream/transfer1.md (checkpoint paths: docs/upstream/transfer1.md#checkpoints).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from cosmos_assets.machines.job import Invocation
from cosmos_assets.models.base import BatchItem, BatchRequest, ModelBackend, ModelRequest
from cosmos_assets.models.invocation_keys import InvocationKey
from cosmos_assets.models.transfer1_cli import (
    ENTRY_POINT,
    OFFLOAD_FLAGS,
    TransferInvocation,
    invocation_keys,
    transfer_argv,
)
from cosmos_assets.prompts.inputs import check_for_run
from cosmos_assets.prompts.spec import ControlSpec, TransferSpec

GUARDRAIL_MARKER = "GUARDRAIL BLOCKED"
UPSCALE_NUM_STEPS = 10

MODEL_DIR = "nvidia/Cosmos-Transfer1-7B"
AV_MODEL_DIR = "nvidia/Cosmos-Transfer1-7B-Sample-AV"
# Checkpoint paths under the checkpoint dir, from cosmos_transfer1/checkpoints.py (docs/upstream/transfer1.md#checkpoints).
# Every run: the tokenizer, the text encoder, and the guardrails (Cosmos-Guardrail1 and the text guardrail's LLM,
# docs/upstream/transfer1.md#checkpoints).
ALWAYS_NEEDED = (
    "nvidia/Cosmos-Tokenize1-CV8x8x8-720p",
    "google-t5/t5-11b",
    "nvidia/Cosmos-Guardrail1",
    "meta-llama/Llama-Guard-3-8B",
)
CONTROL_CHECKPOINTS: dict[str, tuple[str, ...]] = {
    "vis": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/vis_control.pt"),
    "edge": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/edge_control.pt"),
    "seg": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/seg_control.pt"),
    "depth": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/depth_control.pt"),
    "keypoint": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/keypoint_control.pt"),
    "upscale": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/4kupscaler_control.pt"),
    "hdmap": (f"{AV_MODEL_DIR}/base_model.pt", f"{AV_MODEL_DIR}/hdmap_control.pt"),
    "lidar": (f"{AV_MODEL_DIR}/base_model.pt", f"{AV_MODEL_DIR}/lidar_control.pt"),
}
# Models Cosmos runs to derive a control video when the spec gives none.
DERIVED_CONTROL_MODELS: dict[str, tuple[str, ...]] = {
    "depth": ("depth-anything/Depth-Anything-V2-Small-hf",),
    "seg": ("facebook/sam2-hiera-large", "IDEA-Research/grounding-dino-tiny"),
}
UPSAMPLER_MODEL = "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer"


def required_checkpoints(spec: TransferSpec, upsample_prompt: bool = False) -> list[str]:
    """Checkpoint files and folders (relative to the checkpoint dir) the spec's controls need."""
    needed: list[str] = list(ALWAYS_NEEDED)
    for key, control in spec.controls():
        needed += CONTROL_CHECKPOINTS.get(key, ())
        if not control.input_control:
            needed += DERIVED_CONTROL_MODELS.get(key, ())
    if upsample_prompt:
        needed.append(UPSAMPLER_MODEL)
    return list(dict.fromkeys(needed))


def upscale_spec(input_video_path: str, control_weight: float = 0.5) -> TransferSpec:
    """The 4K upscaler's spec for a generated video."""
    return TransferSpec(input_video_path=input_video_path, upscale=ControlSpec(control_weight=control_weight))


def generation_spec_remote(prompt: str) -> str:
    return f"inputs/prompts/{prompt}.json"


def upscale_spec_remote(prompt: str) -> str:
    return f"inputs/prompts/{prompt}_upscale.json"


def _invocation(**flags: Any) -> TransferInvocation:
    """The flags, or what they cannot be as one ValueError line (``num_gpus = 3: ... use 1, 2, 4, 8 or 16``), as the
    newer models say it, not pydantic's four lines naming TransferInvocation."""
    from pydantic import ValidationError

    try:
        return TransferInvocation(**flags)
    except ValidationError as error:
        raise ValueError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None


def generation_invocation(prompt: str, run_id: str, num_gpus: int = 1) -> TransferInvocation:
    """transfer.py for one prompt, into a folder of its own on the host (``outputs/<prompt>/<run_id>``)."""
    return _invocation(
        spec_path=generation_spec_remote(prompt), video_save_folder=f"outputs/{prompt}/{run_id}", num_gpus=num_gpus
    )


def upscale_invocation(prompt: str, run_id: str, num_gpus: int = 1) -> TransferInvocation:
    """The upscaler as upstream documents it: ``--num_steps 10 --offload_text_encoder_model``."""
    return _invocation(
        spec_path=upscale_spec_remote(prompt),
        video_save_folder=f"outputs/{prompt}_upscaled/{run_id}",
        num_gpus=num_gpus,
        num_steps=UPSCALE_NUM_STEPS,
        offload_guardrail_models=False,
    )


BATCH_INPUTS_DIR = "inputs/batches"
BATCH_OUTPUTS_DIR = "outputs/.batches"
BATCH_PROMPT_FILE = "prompt.txt"
# Per item in transfer.py's batch mode: its prompt, its visual input, and its controls' input videos. Everything
# else of the spec (control set, weights, seed, sigma_max, negative prompt...) is read once per invocation.
PER_ITEM_KEYS = ("prompt", "input_video_path")


class BatchLine(BaseModel):
    """One line of transfer.py's ``--batch_input_path`` JSONL (docs/upstream/transfer1.md#batch-mode)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    visual_input: str | None = None
    control_overrides: dict[str, dict[str, str | None]] = {}


def batch_line(spec: TransferSpec) -> BatchLine:
    """The item of ``spec``: its prompt, its visual input and every control's own input video."""
    return BatchLine(
        prompt=spec.prompt or "",
        visual_input=spec.input_video_path or None,
        control_overrides={key: {"input_control": control.input_control} for key, control in spec.controls()},
    )


def upscale_line(spec: TransferSpec) -> BatchLine:
    """An upscale item: its generated video, and a text (a line without one gives upstream a None prompt, UNVERIFIED):
    the generation's own prompt. The upscale control comes from the batch's spec; an item cannot add it
    (transfer.py:314-320 ignores an override of a control the spec lacks)."""
    return BatchLine(prompt=spec.prompt or "", visual_input=spec.input_video_path or None)


def shared_part(spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for two prompts to share one transfer.py invocation: the spec without its per-item keys
    (whether a control has its own video stays: a derived control loads another model), and the flags without
    the paths of one run."""
    shared = {key: value for key, value in spec.items() if key not in PER_ITEM_KEYS}
    for key, value in shared.items():
        if isinstance(value, dict) and "input_control" in value:
            shared[key] = {**value, "input_control": bool(value["input_control"])}
    shared["has_input_video"] = bool(spec.get("input_video_path"))
    flags = {key: value for key, value in settings.items() if key not in ("spec_path", "video_save_folder")}
    return {"spec": shared, "flags": flags}


class Transfer1Backend(ModelBackend):
    """Cosmos-Transfer1 7B in its upstream container: ``transfer.py`` with python3, or torchrun for several GPUs."""

    name = "cosmos-transfer1"
    description = "Cosmos-Transfer1 7B (frozen upstream; the only one with the 4K upscaler)"
    can_batch = True
    can_upscale = True
    # out of GPU memory (runs/oom.py): what moves to CPU memory, and how a prompt file asks for it for good
    offload_flags = tuple(f"--{name}" for name in OFFLOAD_FLAGS)
    memory_advice = (
        'to offload for good, put "offload_diffusion_transformer": true in the prompt file '
        "(a top-level key is set on transfer.py's arguments)"
    )

    def check_prompt(self, spec: TransferSpec, prompt_path: Path, project_root: Path) -> None:
        check_for_run(spec, prompt_path, project_root)

    def invocation_keys(self) -> dict[str, InvocationKey]:
        return invocation_keys(self.name)

    def generation(
        self, prompt: str, spec: TransferSpec, run_id: str, num_gpus: int, project_root: Path | None = None
    ) -> ModelRequest:
        flags = generation_invocation(prompt, run_id, num_gpus)
        if (spec.__pydantic_extra__ or {}).get("upsample_prompt") is True:
            # The prompt's own setting, made the invocation's: torchrun (the upsampler reads RANK), the upsampler's
            # checkpoint in the preflight, and a batch that maps outputs by position (prompt.txt is rewritten).
            flags = flags.model_copy(update={"extra": {**flags.extra, "upsample_prompt": True}})
        # transfer.py rejects object-valued keys it does not know: the cosmos_assets block stays out of its spec.
        return ModelRequest(
            spec=spec.model_spec_dict(), spec_remote=flags.spec_path, invocation=self.invocation(spec, flags)
        )

    def upscale(
        self, prompt: str, generated_remote: str, run_id: str, num_gpus: int, control_weight: float
    ) -> ModelRequest:
        spec = upscale_spec(generated_remote, control_weight)
        flags = upscale_invocation(prompt, run_id, num_gpus)
        return ModelRequest(
            spec=spec.to_json_dict(), spec_remote=flags.spec_path, invocation=self.invocation(spec, flags)
        )

    def invocation(self, spec: TransferSpec, flags: TransferInvocation) -> Invocation:
        """transfer.py with these flags for this spec: its argv, checkpoints and output folder."""
        return Invocation(
            model=self.name,
            argv=tuple(transfer_argv(flags)),
            entry_point=ENTRY_POINT,
            output_folder=flags.video_save_folder,
            num_gpus=flags.num_gpus,
            checkpoints=tuple(required_checkpoints(spec, flags.extra.get("upsample_prompt") is True)),
            guardrail_marker=GUARDRAIL_MARKER,
            settings=flags.model_dump(mode="json"),
        )

    def batch_key(self, item: BatchItem) -> str | None:
        if (
            "upscale" in item.request.spec
        ):  # upscales share a load with upscales only (docs/upstream/transfer1-batch-upscale.md)
            return json.dumps(
                [self.name, "upscale", shared_part(item.request.spec, item.request.invocation.settings)], sort_keys=True
            )
        if not item.spec.prompt:
            return None  # no text to check an output against
        return json.dumps([self.name, shared_part(item.request.spec, item.request.invocation.settings)], sort_keys=True)

    def batch_text(self, item: BatchItem) -> str | None:
        # upstream forces batch size 1 for the upscale (transfer.py:290-293): video_<i> is written by item i alone
        return None if "upscale" in item.request.spec else super().batch_text(item)

    def batch_generation(
        self, batch_id: str, items: list[BatchItem], num_gpus: int, batch_size: int = 1
    ) -> BatchRequest:
        """transfer.py ``--batch_input_path``: the first item's spec gives the controls and the shared settings (equal
        for all, by :meth:`batch_key`), the JSONL each item's prompt and videos; outputs in ``video_<i>/``."""
        first = items[0]
        upsampled = first.request.invocation.settings.get("extra", {}).get("upsample_prompt") is True
        upscaling = "upscale" in first.request.spec  # upstream forces batch size 1 (transfer.py:290-293)
        by_position = upsampled or upscaling
        size = 1 if by_position else max(1, min(batch_size, len(items)))  # upsampled prompt.txt: position only
        lines = [upscale_line(item.spec) if upscaling else batch_line(item.spec) for item in items]
        jsonl = "".join(line.model_dump_json() + "\n" for line in lines)
        jsonl_remote = f"{BATCH_INPUTS_DIR}/{batch_id}.jsonl"
        base = TransferInvocation.model_validate(first.request.invocation.settings)
        flags = base.model_copy(
            update={
                "spec_path": f"{BATCH_INPUTS_DIR}/{batch_id}.json",
                "video_save_folder": f"{BATCH_OUTPUTS_DIR}/{batch_id}",
                "extra": {**base.extra, "batch_input_path": jsonl_remote, "batch_size": size},
            }
        )
        request = ModelRequest(
            spec=first.request.spec,
            spec_remote=flags.spec_path,
            invocation=self.invocation(first.spec, TransferInvocation.model_validate(flags.model_dump())),
        )
        return BatchRequest(
            request=request,
            item_folders=tuple(f"video_{i}" for i in range(len(items))),
            item_texts=tuple(None if by_position else item.spec.prompt for item in items),
            prompt_file=BATCH_PROMPT_FILE,
            batch_size=size,
            batch_file=(jsonl_remote, jsonl),
        )
