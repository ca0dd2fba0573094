"""The jobs, built once per code location: a shot, a prompt, the full cycle, generation only, a wedge's comparison.

Jobs that use the GPU are tagged with their host, or wait in the host pool's Dagster pools (docs/hosts.md). Each is
handed to its sensor as an object (defs/sensors/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import dagster as dg

from cosmos_assets.defs.assets import (
    control_videos,
    generated_videos,
    prompt_inputs,
    prompt_specs,
    shots,
    upscaled_videos,
    wedge_comparisons,
)

if TYPE_CHECKING:  # what `dg.define_asset_job` returns; Dagster does not export the class itself
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


class CosmosJobs(NamedTuple):
    """The jobs, built once; a sequence of job objects for ``Definitions(jobs=...)`` and named for the sensors."""

    shot: UnresolvedAssetJobDefinition
    prompt: UnresolvedAssetJobDefinition
    full_cycle: UnresolvedAssetJobDefinition
    generate: UnresolvedAssetJobDefinition
    wedge: UnresolvedAssetJobDefinition


def build_jobs(host_label: str, gpu_tags: dict[str, str] | None = None) -> CosmosJobs:
    """Jobs that use the GPU are tagged with their host so the queue runs one at a time per host (a host pool gives
    its own ``gpu_tags``: its steps wait in Dagster's pools instead; docs/hosts.md).

    The prompt jobs start with the ``prompt_inputs`` observation, so ``prompt_specs`` is recorded against the
    inputs it was made from (observe, then materialize; see ARCHITECTURE.md, *Partitions*).
    """
    gpu_tags = dict(gpu_tags) if gpu_tags is not None else {"gpu_host": host_label}
    return CosmosJobs(
        shot=dg.define_asset_job(
            "shot_job",
            selection=dg.AssetSelection.assets(shots, control_videos),
            description="Check a render folder and encode its control videos.",
        ),
        prompt=dg.define_asset_job(
            "prompt_job",
            selection=dg.AssetSelection.assets(prompt_inputs, prompt_specs),
            description="Observe what the prompt reads (its spec and its shot's control videos) and validate the spec. No GPU.",
        ),
        full_cycle=dg.define_asset_job(
            "full_cycle_job",
            selection=dg.AssetSelection.assets(prompt_inputs, prompt_specs, generated_videos, upscaled_videos),
            tags=gpu_tags,
            description="The seed's full_cycle.sh: validate the prompt, generate on the GPU host, upscale to 4K, download.",
        ),
        generate=dg.define_asset_job(
            "generate_job",
            selection=dg.AssetSelection.assets(prompt_inputs, prompt_specs, generated_videos),
            tags=gpu_tags,
            description="full_cycle.sh --no-upscale: validate the prompt and generate, without the 4K upscale.",
        ),
        wedge=dg.define_asset_job(
            "wedge_job",
            selection=dg.AssetSelection.assets(wedge_comparisons),
            description="Tile a wedge's generated variants into its comparison grid. No GPU.",
        ),
    )
