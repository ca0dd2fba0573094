"""What model runs: the interface every model backend implements.

A backend knows its model's contract and nothing about where it runs: the spec it accepts (checked
with file/field/fix errors before any GPU time), the spec file it writes from the artist's prompt
file, the argv of its entry point for N GPUs, the checkpoints that spec needs, where it writes its
outputs and how they map back to a prompt, how a guardrail block shows, and whether it can batch
and upscale. The prompt files stay in the seed's form (a Cosmos-Transfer1 spec,
:class:`cosmos_assets.prompts.spec.TransferSpec`); each backend translates it to its own.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cosmos_assets.files import copy_verified
from cosmos_assets.machines.job import Invocation, RunOutcome, StagedFile
from cosmos_assets.models.invocation_keys import InvocationKey
from cosmos_assets.prompts.spec import TransferSpec

OUTPUT_VIDEO = "output.mp4"


@dataclass(frozen=True)
class ModelRequest:
    """One stage of one prompt as a backend would run it: the spec file to write, the invocation, extra files."""

    spec: dict[str, Any]
    spec_remote: str
    invocation: Invocation
    program_files: list[StagedFile] = field(default_factory=list)


@dataclass(frozen=True)
class BatchItem:
    """One prompt of a batch: its name, the spec the backend checked, and the request it would run alone."""

    prompt: str
    spec: TransferSpec
    request: ModelRequest


@dataclass(frozen=True)
class BatchRequest:
    """One invocation for several prompts after one model load: the shared request, and what maps outputs back.

    ``item_folders[i]`` is where item ``i``'s outputs should be (relative to the invocation's output folder) and
    ``item_texts[i]`` what its ``prompt_file`` must hold for the folder to be its own (None: not checkable, e.g.
    the prompt upsampler rewrites it; then ``batch_size`` is 1 and a folder is written only by its own item).
    ``batch_file`` (the JSONL) is written locally and staged with the request's spec and the items' videos.
    """

    request: ModelRequest
    item_folders: tuple[str, ...]
    item_texts: tuple[str | None, ...]
    prompt_file: str
    batch_size: int
    batch_file: tuple[str, str] | None = None  # (remote path, content) of the item list the model reads
    # Flat layouts (Transfer2.5): item i's files sit in the output folder itself, its video ``<name>.mp4``; the
    # names are unique in the invocation, so they map outputs without a text check. ``item_files[i]``: every file
    # name item i may own, exactly (upstream's naming pattern spelled out, never a prefix); ``shared_files``: the
    # invocation's own (logs, config), nobody's.
    item_names: tuple[str, ...] | None = None
    item_files: tuple[tuple[str, ...], ...] | None = None
    shared_files: tuple[str, ...] = ()
    item_video: str = OUTPUT_VIDEO  # the video in an item's folder that says it was written
    nested: bool = False  # an item's folder stays a folder of its fetched outputs (Cosmos 3: <name>/vision.mp4)

    def __post_init__(self) -> None:
        if (self.item_names is None) != (self.item_files is None):
            raise ValueError("a flat batch layout names its items and their files together (item_names, item_files)")


class ModelBackend(ABC):
    """A model's contract. Stateless; one instance per backend in :func:`cosmos_assets.models.registry.backends`."""

    name: ClassVar[str]
    description: ClassVar[str]
    # Its upstream repository: the checkout's default folder name beside REMOTE_DIR on a host, and its image's name
    # (``<checkout>:latest``). None: it lives in REMOTE_DIR and DOCKER_IMAGE (Transfer1, the upscaler's home, and the
    # preview that stands in for it).
    checkout: ClassVar[str | None] = None
    is_preview: ClassVar[bool] = False
    can_batch: ClassVar[bool] = False
    can_upscale: ClassVar[bool] = False

    @property
    def label(self) -> str:
        """How the UI, logs and records name the backend; a preview always says it is not the model."""
        return f"{self.name} (pipeline preview, not the model)" if self.is_preview else self.name

    @abstractmethod
    def check_prompt(self, spec: TransferSpec, prompt_path: Path, project_root: Path) -> None:
        """Raise :class:`cosmos_assets.prompts.spec.SpecError` (file, field, fix) if this backend cannot run the prompt."""

    def prompt_warnings(self, spec: TransferSpec, project_root: Path | None = None) -> list[str]:
        """Fields of the prompt file this backend does not carry over (each message names the field)."""
        return []

    @abstractmethod
    def generation(
        self, prompt: str, spec: TransferSpec, run_id: str, num_gpus: int, project_root: Path | None = None
    ) -> ModelRequest:
        """The generation of ``prompt`` into a folder of its own (``outputs/<prompt>/<run_id>``).

        ``project_root`` lets a backend read facts of the staged videos (size, fps) its spec needs.
        """

    def upscale(
        self, prompt: str, generated_remote: str, run_id: str, num_gpus: int, control_weight: float
    ) -> ModelRequest:
        """The 4K upscale of a generated video (``generated_remote``, relative to the model root)."""
        raise NotImplementedError(f"{self.name} has no 4K upscaler; the upscale runs on Cosmos-Transfer1")

    def invocation_keys(self) -> Mapping[str, InvocationKey]:
        """Keys a prompt file may not carry (top level, or in this model's ``cosmos_assets`` block; ``<block>.<key>``
        one level down): they set how the model is invoked (mode, paths, checkpoints, GPUs), which the project
        owns. Derived from the model's contract; :mod:`cosmos_assets.prompts.spec` refuses them when a prompt file loads."""
        return {}

    def output_video(self, fetched: Path, name: str | None = None) -> Path:
        """The run's video in its downloaded output folder, always ``output.mp4`` once it exists.

        A backend whose model writes another layout keeps the model's files and adds ``output.mp4`` (a hard
        link, else a copy) here: the runner calls this after the download, and the checks and the upscale
        read ``outputs/<prompt>/output.mp4`` whichever model wrote it. Missing video: the path it should be at.
        ``name``: the sample's name (the prompt) where the model names its outputs after it; without it the
        folder's own files are read (exactly one sample). A path that is not here yet (on the host) needs it.
        """
        return fetched / OUTPUT_VIDEO

    def batch_key(self, item: BatchItem) -> str | None:
        """What prompts must share to run in one invocation (control set, per-invocation settings); None: never
        batched. Prompts with equal keys go to one batch, the others to separate invocations."""
        return None

    def batch_text(self, item: BatchItem) -> str | None:
        """The text that ties an item's output to it (two items of one invocation never share one); None: its
        outputs are mapped by position, which the backend makes safe (batch size 1)."""
        return (item.spec.prompt or "").strip()

    def shares_batch_with(self, item: BatchItem, others: list[BatchItem]) -> bool:
        """Whether ``item`` may join ``others`` (equal :meth:`batch_key`) in one invocation: False where their outputs
        could not be told apart."""
        return True

    def batch_generation(
        self, batch_id: str, items: list[BatchItem], num_gpus: int, batch_size: int = 1
    ) -> BatchRequest:
        """One invocation generating every item (equal :meth:`batch_key`) into ``outputs/.batches/<batch_id>``."""
        raise NotImplementedError(f"{self.name} does not batch here: its prompts run one invocation each")

    def guardrail_blocked(self, outcome: RunOutcome, fetched: Path | None) -> bool:
        """Whether the run was stopped by the model's guardrail (retrying the same input will not help)."""
        return outcome.guardrail_blocked


def link_output(model_video: Path, fetched: Path) -> Path:
    """``fetched/output.mp4`` as a hard link to (else a copy of) the model's own video; the model's file stays.

    A hard link shares the model file's inode, so its mode: that file is our own download (made with the mode the
    umask allows, never the host's). The copy is made the same way (``copy_verified``, never ``copy2``'s source mode).
    """
    target = fetched / OUTPUT_VIDEO
    if target.exists() or not model_video.is_file():
        return target if target.exists() else model_video
    try:
        os.link(model_video, target)
    except OSError:
        copy_verified(model_video, target)
    return target
