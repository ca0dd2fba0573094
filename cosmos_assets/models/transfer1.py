"""Cosmos-Transfer1 (the seed's model): spec, argv, checkpoints, outputs and guardrail.

Facts from ``../shared/cosmos-transfer1/FACTS.md`` and upstream's ``cosmos_transfer1/checkpoints.py``.
"""

from __future__ import annotations

from pathlib import Path

from cosmos_assets.machines.job import Invocation
from cosmos_assets.models.base import ModelBackend, ModelRequest
from cosmos_assets.models.transfer1_cli import ENTRY_POINT, TransferInvocation, transfer_argv
from cosmos_assets.spec import ControlSpec, TransferSpec
from cosmos_assets.spec_inputs import check_for_run

GUARDRAIL_MARKER = "GUARDRAIL BLOCKED"
UPSCALE_NUM_STEPS = 10

MODEL_DIR = "nvidia/Cosmos-Transfer1-7B"
AV_MODEL_DIR = "nvidia/Cosmos-Transfer1-7B-Sample-AV"
# Checkpoint paths under the checkpoint dir, from cosmos_transfer1/checkpoints.py (see FACTS.md).
ALWAYS_NEEDED = ("nvidia/Cosmos-Tokenize1-CV8x8x8-720p", "google-t5/t5-11b", "nvidia/Cosmos-Guardrail1")
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


def generation_invocation(prompt: str, run_id: str, num_gpus: int = 1) -> TransferInvocation:
    """transfer.py for one prompt, into a folder of its own on the host (``outputs/<prompt>/<run_id>``)."""
    return TransferInvocation(
        spec_path=generation_spec_remote(prompt), video_save_folder=f"outputs/{prompt}/{run_id}", num_gpus=num_gpus
    )


def upscale_invocation(prompt: str, run_id: str, num_gpus: int = 1) -> TransferInvocation:
    """The upscaler as upstream documents it: ``--num_steps 10 --offload_text_encoder_model``."""
    return TransferInvocation(
        spec_path=upscale_spec_remote(prompt),
        video_save_folder=f"outputs/{prompt}_upscaled/{run_id}",
        num_gpus=num_gpus,
        num_steps=UPSCALE_NUM_STEPS,
        offload_guardrail_models=False,
    )


class Transfer1Backend(ModelBackend):
    """Cosmos-Transfer1 7B in its upstream container: ``transfer.py`` with python3, or torchrun for several GPUs."""

    name = "cosmos-transfer1"
    description = "Cosmos-Transfer1 7B (frozen upstream; the only one with the 4K upscaler)"
    can_batch = True
    can_upscale = True

    def check_prompt(self, spec: TransferSpec, prompt_path: Path, project_root: Path) -> None:
        check_for_run(spec, prompt_path, project_root)

    def generation(self, prompt: str, spec: TransferSpec, run_id: str, num_gpus: int,
                   project_root: Path | None = None) -> ModelRequest:
        flags = generation_invocation(prompt, run_id, num_gpus)
        # transfer.py rejects object-valued keys it does not know: the cosmos_assets block stays out of its spec.
        return ModelRequest(spec=spec.model_spec_dict(), spec_remote=flags.spec_path,
                            invocation=self.invocation(spec, flags))

    def upscale(self, prompt: str, generated_remote: str, run_id: str, num_gpus: int, control_weight: float) -> ModelRequest:
        spec = upscale_spec(generated_remote, control_weight)
        flags = upscale_invocation(prompt, run_id, num_gpus)
        return ModelRequest(spec=spec.to_json_dict(), spec_remote=flags.spec_path, invocation=self.invocation(spec, flags))

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
