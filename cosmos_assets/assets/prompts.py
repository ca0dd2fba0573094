"""Stage 3: prompt specs. ``inputs/prompts/<prompt>.json``, a Cosmos-Transfer1 spec, validated."""

import hashlib

import dagster as dg

from cosmos_assets.assets.controls import control_videos
from cosmos_assets.partitions import PROMPTS
from cosmos_assets.resources import ProjectResource
from cosmos_assets.spec import check_for_run, load_spec, referenced_paths, shot_of

def spec_data_version(spec_bytes: bytes, input_files: list) -> str:
    """Changes when the spec or any file it points at changes (size and mtime), so downstream shows stale."""
    digest = hashlib.sha256(spec_bytes)
    for path in input_files:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]

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
    spec = load_spec(path)
    check_for_run(spec, path, layout.root)
    shot = shot_of(spec)
    inputs = [layout.root / rel for rel in referenced_paths(spec)]
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
        data_version=dg.DataVersion(spec_data_version(path.read_bytes(), inputs)),
    )
