"""What model runs: the interface every model backend implements.

A backend knows its model's contract and nothing about where it runs: the spec it accepts (checked
with file/field/fix errors before any GPU time), the spec file it writes from the artist's prompt
file, the argv of its entry point for N GPUs, the checkpoints that spec needs, where it writes its
outputs and how they map back to a prompt, how a guardrail block shows, and whether it can batch
and upscale. The prompt files stay in the seed's form (a Cosmos-Transfer1 spec,
:class:`cosmos_assets.spec.TransferSpec`); each backend translates it to its own.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cosmos_assets.machines.job import Invocation, RunOutcome, StagedFile
from cosmos_assets.spec import TransferSpec

OUTPUT_VIDEO = "output.mp4"


@dataclass(frozen=True)
class ModelRequest:
    """One stage of one prompt as a backend would run it: the spec file to write, the invocation, extra files."""

    spec: dict[str, Any]
    spec_remote: str
    invocation: Invocation
    program_files: list[StagedFile] = field(default_factory=list)


class ModelBackend(ABC):
    """A model's contract. Stateless; one instance per backend in :data:`cosmos_assets.models.BACKENDS`."""

    name: ClassVar[str]
    description: ClassVar[str]
    is_preview: ClassVar[bool] = False
    can_batch: ClassVar[bool] = False
    can_upscale: ClassVar[bool] = False

    @property
    def label(self) -> str:
        """How the UI, logs and records name the backend; a preview always says it is not the model."""
        return f"{self.name} (pipeline preview, not the model)" if self.is_preview else self.name

    @abstractmethod
    def check_prompt(self, spec: TransferSpec, prompt_path: Path, project_root: Path) -> None:
        """Raise :class:`cosmos_assets.spec.SpecError` (file, field, fix) if this backend cannot run the prompt."""

    def prompt_warnings(self, spec: TransferSpec, project_root: Path | None = None) -> list[str]:
        """Fields of the prompt file this backend does not carry over (each message names the field)."""
        return []

    @abstractmethod
    def generation(self, prompt: str, spec: TransferSpec, run_id: str, num_gpus: int,
                   project_root: Path | None = None) -> ModelRequest:
        """The generation of ``prompt`` into a folder of its own (``outputs/<prompt>/<run_id>``).

        ``project_root`` lets a backend read facts of the staged videos (size, fps) its spec needs.
        """

    def upscale(self, prompt: str, generated_remote: str, run_id: str, num_gpus: int, control_weight: float) -> ModelRequest:
        """The 4K upscale of a generated video (``generated_remote``, relative to the model root)."""
        raise NotImplementedError(f"{self.name} has no 4K upscaler; the upscale runs on Cosmos-Transfer1")

    def output_video(self, fetched: Path) -> Path:
        """The run's video in its downloaded output folder, always ``output.mp4`` once it exists.

        A backend whose model writes another layout keeps the model's files and adds ``output.mp4`` (a hard
        link, else a copy) here: the runner calls this after the download, and the checks and the upscale
        read ``outputs/<prompt>/output.mp4`` whichever model wrote it. Missing video: the path it should be at.
        """
        return fetched / OUTPUT_VIDEO

    def guardrail_blocked(self, outcome: RunOutcome, fetched: Path | None) -> bool:
        """Whether the run was stopped by the model's guardrail (retrying the same input will not help)."""
        return outcome.guardrail_blocked


def link_output(model_video: Path, fetched: Path) -> Path:
    """``fetched/output.mp4`` as a hard link to (else a copy of) the model's own video; the model's file stays."""
    target = fetched / OUTPUT_VIDEO
    if target.exists() or not model_video.is_file():
        return target if target.exists() else model_video
    try:
        os.link(model_video, target)
    except OSError:
        shutil.copy2(model_video, target)
    return target
