"""The one place that wires assets, jobs, sensors and resources together, from the one settings object.

The settings (:class:`~cosmos_assets.settings.Settings`) are read here, when a code location loads the
definitions, and nowhere else: importing this module reads no environment until Dagster asks for ``defs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import dagster as dg

from cosmos_assets.assets import (
    ALL_ASSETS,
    control_videos,
    generated_videos,
    prompt_inputs,
    prompt_specs,
    shots,
    upscaled_videos,
    wedge_comparisons,
)
from cosmos_assets.assets.wedges import build_wedge_sensor
from cosmos_assets.checks import ALL_CHECKS
from cosmos_assets.dead_runs import build_dead_run_sensor
from cosmos_assets.hosts import gpu_host_from_settings
from cosmos_assets.notify import build_notification_sensors
from cosmos_assets.resources import ProjectResource
from cosmos_assets.sensor_state import SensorSettings
from cosmos_assets.sensors import build_sensors
from cosmos_assets.settings import Settings

if TYPE_CHECKING:  # what `dg.define_asset_job` returns; Dagster does not export the class itself
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


class CosmosJobs(NamedTuple):
    """The jobs, built once; a sequence of job objects for ``Definitions(jobs=...)`` and named for the sensors."""

    shot: UnresolvedAssetJobDefinition
    prompt: UnresolvedAssetJobDefinition
    full_cycle: UnresolvedAssetJobDefinition
    generate: UnresolvedAssetJobDefinition


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
    )


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """Everything, for these settings (default: the environment, by the names in the README)."""
    settings = settings or Settings.from_env()
    host = gpu_host_from_settings(settings)
    jobs = build_jobs(host.label, host.queue_tags())
    sensors = build_sensors(SensorSettings.from_settings(settings), shot_job=jobs.shot, prompt_job=jobs.prompt,
                            gpu_job=jobs.full_cycle)  # fmt: skip
    wedge_job = dg.define_asset_job("wedge_job", selection=dg.AssetSelection.assets(wedge_comparisons),
                                    description="Tile a wedge's generated variants into its comparison grid. No GPU.")
    sensors = [*sensors, build_wedge_sensor(wedge_job, settings.sensor_interval,
                                            dg.DefaultSensorStatus.RUNNING if settings.sensors else dg.DefaultSensorStatus.STOPPED)]
    sensors = [*sensors, build_dead_run_sensor(settings.sensor_interval)]  # always on: a dead run must not hold the GPU host (docs/runs.md)
    sensors = [*sensors, *build_notification_sensors(settings.sensor_interval)]  # only with COSMOS_WEBHOOK_URL (docs/hosts.md)
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        sensors=sensors,
        jobs=[*jobs, wedge_job],
        resources={"project": ProjectResource(root=str(settings.root), num_gpus=settings.num_gpus,
                                              model_silence_minutes=settings.model_silence_minutes,
                                              gpu_price_per_hour=settings.gpu_price_per_hour,
                                              oom_retry_offload=settings.oom_retry_offload,
                                              batch_window_seconds=settings.batch_window,
                                              batch_max_prompts=settings.batch_max), "gpu_host": host},
        # The steps of one shot or prompt run one after another anyway; in-process saves a Python start-up and
        # a code import per step (bench: 11.3 s -> 2.5 s overhead per prompt through `dagster asset materialize`).
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
