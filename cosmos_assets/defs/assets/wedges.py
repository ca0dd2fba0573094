"""Wedges: a comparison of a wedge's variants, once each has a generated video (docs/wedges.md).

``wedge_comparisons`` is partitioned by wedge (``partitions.WEDGES``). It reads the manifest
``inputs/wedges/<wedge>.json`` and every variant's ``outputs/<variant>/output.mp4``, and writes
``outputs/_wedges/<wedge>/{grid.mp4, contact_sheet.png, comparison.json}``. The edge from ``generated_videos``
maps no prompt partition (the variants are in the manifest); ``wedge_sensor`` (defs/sensors/wedges.py) starts it
when a wedge's variants have all been generated, and again when one of them is generated anew.
"""

from typing import Any

import dagster as dg

from cosmos_assets.defs.assets.generation import generated_videos
from cosmos_assets.defs.partitions import NO_PARTICULAR_PROMPT, WEDGES
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media.previews import preview_markdown
from cosmos_assets.prompts.wedges import WedgeError
from cosmos_assets.runs.wedge_comparison import Comparison, build_comparison


def comparison_metadata(comparison: Comparison, layout: ProjectLayout) -> dict[str, Any]:
    record = comparison.record
    return {
        "contact_sheet_image": dg.MetadataValue.md(
            preview_markdown(
                comparison.preview, f"wedge {record.wedge}: every variant's middle frame, labelled with its values"
            )
        ),
        "grid_video": dg.MetadataValue.path(str(comparison.grid_video)),
        "contact_sheet": dg.MetadataValue.path(str(comparison.preview.sheet_path)),
        "tiles": len(record.tiles),
        "grid": f"{record.columns}x{record.rows}",
        "frame_count": record.frames,
        "variants": dg.MetadataValue.json({t.prompt: {"values": t.values, "run_id": t.run_id} for t in record.tiles}),
        "previous_comparison_moved_to": str(comparison.moved_aside) if comparison.moved_aside else "(none)",
    }


@dg.asset(
    partitions_def=WEDGES,
    deps=[dg.AssetDep(generated_videos, partition_mapping=NO_PARTICULAR_PROMPT)],
    group_name="wedges",
    kinds={"mp4", "pyav"},
    description=(
        "A wedge's comparison: every variant's generated video tiled into `outputs/_wedges/<wedge>/grid.mp4` "
        "(H.264, plays in any player; each tile labelled with its varied values) and a contact sheet of the "
        "middle frames (`contact_sheet_image`). Needs every variant's `generated_videos` first; `wedge_sensor` "
        "starts it once they are all there. An earlier comparison is moved to `outputs/.previous/_wedges/`."
    ),
)
def wedge_comparisons(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    layout = project.layout
    try:
        comparison = build_comparison(layout, context.partition_key)
    except WedgeError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    record = comparison.record
    context.log.info(
        f"wedge {record.wedge}: {len(record.tiles)} tiles ({record.columns}x{record.rows}), "
        f"{record.frames} frames -> {comparison.grid_video}"
    )
    return dg.MaterializeResult(
        metadata=comparison_metadata(comparison, layout), data_version=dg.DataVersion(record.version)
    )
