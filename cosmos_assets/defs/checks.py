"""Asset checks on the outputs: the videos decode, have the frames and size they should, and belong to us.

The rules live in :mod:`cosmos_assets.runs.output_rules` (plain Python); here each check finds the files of its
partition and turns a report into a result. ``controls_match_render`` needs the encode's own settings
(``max_frames``), so it runs inside ``control_videos`` (a check spec of that asset) rather than re-reading
the asset's metadata.
"""

import warnings

import dagster as dg

from cosmos_assets.defs.assets import control_videos, generated_videos, upscaled_videos
from cosmos_assets.defs.check_results import to_result
from cosmos_assets.defs.partitions import PROMPTS, SHOTS
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.media import MODALITIES
from cosmos_assets.models.base import OUTPUT_VIDEO
from cosmos_assets.runs.output_rules import (
    check_decodable,
    check_generated_run,
    check_ownership,
    check_upscale,
    merge,
    output_files,
    read_spec_used,
    recorded_remote_user,
)

# A partitioned asset check is a preview feature in Dagster 1.13.27 (a PreviewWarning at every load of the
# definitions, i.e. in every CLI call and daemon log). Silenced for these definitions only; deprecations are not.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(
        asset=control_videos,
        partitions_def=SHOTS,
        blocking=True,
        description="Every frame of the three control videos decodes.",
    )
    def controls_decodable(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
        folder = project.layout.shot_videos_dir(context.partition_key)
        return to_result(merge({m: check_decodable(folder / f"{m}.mp4") for m in MODALITIES}), "all frames decode")

    @dg.asset_check(
        asset=control_videos,
        partitions_def=SHOTS,
        description="The control videos are owned by the user running the pipeline, not root.",
    )
    def controls_owned_by_user(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
        folder = project.layout.shot_videos_dir(context.partition_key)
        return to_result(check_ownership(output_files(folder)), "owned by the pipeline's user")

    @dg.asset_check(
        asset=generated_videos,
        partitions_def=PROMPTS,
        blocking=True,
        description="output.mp4 decodes to the end: an undecodable video is not sent to the 4K upscale.",
    )
    def generated_decodable(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
        video = project.layout.output_dir(context.partition_key) / OUTPUT_VIDEO
        return to_result(check_decodable(video), "all frames decode")

    @dg.asset_check(
        asset=generated_videos,
        partitions_def=PROMPTS,
        description="Frames and resolution as the model that ran writes them, read from its own spec in spec_used.json "
        "(Transfer1: the shortest input cut at 5000, the input's bucket, 1280x704 for 16:9; docs/models.md).",
    )
    def generated_frames_and_bucket(
        context: dg.AssetCheckExecutionContext, project: ProjectResource
    ) -> dg.AssetCheckResult:
        layout = project.layout
        folder = layout.output_dir(context.partition_key)
        report = check_generated_run(folder / OUTPUT_VIDEO, read_spec_used(folder), layout.root)
        return to_result(report, "frames and resolution as the model writes them")

    @dg.asset_check(
        asset=generated_videos,
        partitions_def=PROMPTS,
        description="Outputs owned by the pipeline's user; a remote container ran non-root.",
    )
    def generated_owned_by_user(
        context: dg.AssetCheckExecutionContext, project: ProjectResource
    ) -> dg.AssetCheckResult:
        folder = project.layout.output_dir(context.partition_key)
        remote, user = recorded_remote_user(read_spec_used(folder))
        report = check_ownership(output_files(folder), remote=remote, remote_user=user)
        return to_result(report, "owned by the pipeline's user")

    @dg.asset_check(
        asset=upscaled_videos,
        partitions_def=PROMPTS,
        description="The upscale is exactly 3x the generated video, same frame count.",
    )
    def upscale_is_3x(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
        layout, prompt = project.layout, context.partition_key
        report = check_upscale(layout.upscaled_dir(prompt) / OUTPUT_VIDEO, layout.output_dir(prompt) / OUTPUT_VIDEO)
        return to_result(report, "3x the generated video")

    @dg.asset_check(asset=upscaled_videos, partitions_def=PROMPTS, description="The 4K output.mp4 decodes to the end.")
    def upscaled_decodable(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
        video = project.layout.upscaled_dir(context.partition_key) / OUTPUT_VIDEO
        return to_result(check_decodable(video), "all frames decode")

    @dg.asset_check(
        asset=upscaled_videos,
        partitions_def=PROMPTS,
        description="Outputs owned by the pipeline's user; a remote container ran non-root.",
    )
    def upscaled_owned_by_user(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
        folder = project.layout.upscaled_dir(context.partition_key)
        remote, user = recorded_remote_user(read_spec_used(folder))
        report = check_ownership(output_files(folder), remote=remote, remote_user=user)
        return to_result(report, "owned by the pipeline's user")


ALL_CHECKS: list[dg.AssetChecksDefinition] = [
    controls_decodable,
    controls_owned_by_user,
    generated_decodable,
    generated_frames_and_bucket,
    generated_owned_by_user,
    upscale_is_3x,
    upscaled_decodable,
    upscaled_owned_by_user,
]
