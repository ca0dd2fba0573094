"""Stage 1: render frames. A shot is a folder of color/depth/segmentation PNG sequences."""

import dagster as dg

from cosmos_assets.defs.partitions import SHOTS
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.media import scan_render_folder


@dg.asset(
    partitions_def=SHOTS,
    group_name="renders",
    kinds={"houdini", "png"},
    description=(
        "A Houdini/Nuke render: `art/houdini/renders/<shot>/` with `color.####.png`, `depth.####.png` and "
        "`segmentation.####.png`. Materializing checks that the three passes have the same frames, no gaps, "
        "one resolution and readable PNGs."
    ),
)
def shots(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    folder = project.layout.render_dir(context.partition_key)
    sequence = scan_render_folder(folder)
    context.log.info(
        f"{folder}: {sequence.frame_count} frames {sequence.first_frame}-{sequence.last_frame}, {sequence.width}x{sequence.height}"
    )
    return dg.MaterializeResult(
        metadata={
            "folder": dg.MetadataValue.path(str(folder)),
            "frame_count": sequence.frame_count,
            "frame_range": f"{sequence.first_frame}-{sequence.last_frame}",
            "resolution": f"{sequence.width}x{sequence.height}",
            "bit_depth": dg.MetadataValue.json(dict(sequence.bit_depth)),
        },
        data_version=dg.DataVersion(sequence.fingerprint()),
    )
