"""The preview backend: Cosmos-Transfer1's command line and output layout, without the model.

It runs :mod:`cosmos_assets.models.preview_model` (stdlib, numpy and PyAV; no GPU, no checkpoints), which
composites the control videos into a watermarked PREVIEW. It is a preview of the pipeline, never the
model, and says so in every log line, record and UI label. The program file is staged onto the
machine with the job (``.cosmos_assets/preview_model.py`` under the model root), so the same backend
runs on this computer as a plain process and on an SSH host in docker: a dry run of a new host that
needs no checkpoints (upload, image, container, logs, download).
"""

from __future__ import annotations

from pathlib import Path

from cosmos_assets.machines.job import Invocation, StagedFile
from cosmos_assets.models import preview_model as preview_program
from cosmos_assets.models.base import BatchItem, BatchRequest, ModelRequest
from cosmos_assets.models.transfer1 import GUARDRAIL_MARKER, Transfer1Backend
from cosmos_assets.models.transfer1_cli import ENTRY_POINT, TransferInvocation, transfer_argv
from cosmos_assets.prompts.spec import TransferSpec

PROGRAM_REMOTE = ".cosmos_assets/preview_model.py"
PROGRAM_LOCAL = Path(preview_program.__file__)


def _rank_env(flags: TransferInvocation) -> dict[str, str]:
    """torchrun's rank variables when the real command would launch with torchrun: the one preview process is rank 0."""
    if not flags.uses_torchrun:
        return {}
    return {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": str(flags.num_gpus)}


class PreviewBackend(Transfer1Backend):
    """Transfer1's spec and flags, run by the preview program as one plain ``python3`` process."""

    name = "preview"
    description = "preview backend: composites the control videos, no GPU (a preview of the pipeline, not the model)"
    is_preview = True

    def generation(
        self, prompt: str, spec: TransferSpec, run_id: str, num_gpus: int, project_root: Path | None = None
    ) -> ModelRequest:
        return self._with_program(super().generation(prompt, spec, run_id, num_gpus, project_root))

    def upscale(
        self, prompt: str, generated_remote: str, run_id: str, num_gpus: int, control_weight: float
    ) -> ModelRequest:
        return self._with_program(super().upscale(prompt, generated_remote, run_id, num_gpus, control_weight))

    def batch_generation(
        self, batch_id: str, items: list[BatchItem], num_gpus: int, batch_size: int = 1
    ) -> BatchRequest:
        batch = super().batch_generation(batch_id, items, num_gpus, batch_size)
        return BatchRequest(
            request=self._with_program(batch.request),
            item_folders=batch.item_folders,
            item_texts=batch.item_texts,
            prompt_file=batch.prompt_file,
            batch_size=batch.batch_size,
            batch_file=batch.batch_file,
        )

    def invocation(self, spec: TransferSpec, flags: TransferInvocation) -> Invocation:
        argv = transfer_argv(flags)
        program_flags = argv[argv.index(ENTRY_POINT) + 1 :]
        return Invocation(
            model=self.name,
            argv=("python3", PROGRAM_REMOTE, *program_flags),
            entry_point=PROGRAM_REMOTE,
            output_folder=flags.video_save_folder,
            num_gpus=flags.num_gpus,
            env=_rank_env(flags),
            needs_gpu=False,
            guardrail_marker=GUARDRAIL_MARKER,
            settings=flags.model_dump(mode="json"),
        )

    @staticmethod
    def _with_program(request: ModelRequest) -> ModelRequest:
        program = StagedFile(local=PROGRAM_LOCAL, remote=PROGRAM_REMOTE)
        return ModelRequest(
            spec=request.spec,
            spec_remote=request.spec_remote,
            invocation=request.invocation,
            program_files=[program, *request.program_files],
        )
