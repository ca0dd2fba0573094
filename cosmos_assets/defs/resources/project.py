"""Dagster resources that are not GPU hosts: where the project lives and the run defaults."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from cosmos_assets.layout import ProjectLayout


class ProjectResource(dg.ConfigurableResource):
    """The project root holding the seed's working folders (art/, inputs/, outputs/, notes/)."""

    root: str = Field(description="Project root; the seed's working folders live under it.")
    num_gpus: int = Field(default=1, ge=1, description="GPUs per run when the run config gives none (NUM_GPU).")
    model_silence_minutes: float = Field(
        default=0.0,
        ge=0,
        description="A model silent this long is hung: stopped and failed (COSMOS_MODEL_SILENCE_MINUTES; 0 = off).",
    )
    gpu_price_per_hour: float | None = Field(
        default=None,
        ge=0,
        description="Price of one GPU hour, any currency (COSMOS_GPU_PRICE_PER_HOUR); unset: no cost recorded.",
    )
    oom_retry_offload: bool = Field(
        default=False,
        description="A run out of GPU memory is retried once, as a new run, with the model's offload flags (COSMOS_OOM_RETRY_OFFLOAD).",
    )

    batch_window_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Seconds the run holding a free host waits for prompts to share its model load (COSMOS_BATCH_WINDOW; docs/batching.md).",
    )
    batch_max_prompts: int = Field(
        default=16,
        ge=1,
        description="Most prompts in one invocation of a gathered batch (COSMOS_BATCH_MAX; 1: each prompt alone).",
    )

    @property
    def layout(self) -> ProjectLayout:
        return ProjectLayout(root=Path(self.root).resolve())
