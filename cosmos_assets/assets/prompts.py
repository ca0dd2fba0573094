"""Stage 3: prompt specs. ``inputs/prompts/<prompt>.json``, a Cosmos-Transfer1 spec, validated."""

import dagster as dg

from cosmos_assets.assets.controls import control_videos
from cosmos_assets.partitions import PROMPTS
from cosmos_assets.resources import ProjectResource
from cosmos_assets.spec import check_prompt_file


@dg.asset(
    partitions_def=PROMPTS,
    # Dagster has no one-to-many partition mapping: the prompt -> shot link is read from the spec and
    # shown as the `shot` metadata entry; this dependency draws the edge in the asset graph.
    deps=[control_videos],
    group_name="prompts",
    kinds={"json"},
    description=(
        "A Cosmos-Transfer1 prompt spec `inputs/prompts/<prompt>.json`. Validated before any GPU time: keys and "
        "weights as upstream accepts them, control videos that exist, paths relative to the cosmos-transfer1 root."
    ),
)
def prompt_specs(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    layout = project.layout
    path = layout.prompt_file(context.partition_key)
    checked = check_prompt_file(path, layout.root)
    spec, shot, inputs = checked.spec, checked.shot, checked.inputs
    controls = {name: control.control_weight for name, control in spec.controls()}
    context.log.info(f"{path.name}: shot {shot}, controls {controls}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "shot": shot or "(none)",
            "prompt": (spec.prompt or "")[:500],
            "controls": dg.MetadataValue.json({k: v for k, v in controls.items()}),
            "inputs": dg.MetadataValue.json([str(p.relative_to(layout.root)) for p in inputs]),
        },
        data_version=dg.DataVersion(checked.data_version),
    )
