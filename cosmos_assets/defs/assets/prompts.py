"""Stage 3: prompt specs. ``inputs/prompts/<prompt>.json``, a Cosmos-Transfer1 spec, validated.

Lineage to the shot: a prompt reads the control videos of the one shot its spec names (``inputs/videos/<shot>/``),
and Dagster has no one-to-many partition mapping. So ``prompt_inputs``, an observable asset partitioned like the
prompts, stands for "this prompt file and the files it reads": its observed data version changes exactly when the
spec or one of those files changes, and ``prompt_specs`` depends on it partition by partition (true). The edge from
``control_videos`` is drawn but maps no shot partition (see ``partitions.NO_PARTICULAR_SHOT``).
"""

import warnings

import dagster as dg

from cosmos_assets.defs.assets.controls import control_videos
from cosmos_assets.defs.partitions import NO_PARTICULAR_SHOT, PROMPTS
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import CheckedPrompt, check_prompt_file

PROMPT_INPUTS = dg.AssetKey("prompt_inputs")


def input_metadata(checked: CheckedPrompt, root) -> dict[str, object]:
    """What the UI shows for an observation of ``prompt_inputs``: the shot and the files the version covers."""
    return {
        "shot": checked.shot or "(none)",
        "inputs": dg.MetadataValue.json([str(p.relative_to(root)) for p in checked.inputs]),
    }


# Observation is beta in Dagster 1.13.27 (a BetaWarning at every import of the definitions, i.e. in every CLI call
# and daemon log). The notice is silenced for this one definition only; pytest and deprecations are untouched.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)

    @dg.multi_observable_source_asset(
        name="prompt_inputs",
        partitions_def=PROMPTS,
        specs=[
            dg.AssetSpec(
                PROMPT_INPUTS,
                partitions_def=PROMPTS,
                deps=[dg.AssetDep(control_videos, partition_mapping=NO_PARTICULAR_SHOT)],
                group_name="prompts",
                kinds={"json", "mp4"},
                description=(
                    "What a prompt reads: `inputs/prompts/<prompt>.json` and the control videos of the shot its spec "
                    "names (`inputs/videos/<shot>/*.mp4`, shown as `shot`). Observed, not materialized: the data "
                    "version covers the spec's bytes and the size and mtime of every file it points at, so "
                    "re-encoding shot S changes it for S's prompts only and marks exactly their `prompt_specs` stale. "
                    "The prompt sensor records it when it sees a change; *Observe* or `prompt_job` do it by hand. "
                    "The edge from `control_videos` maps no shot partition: the shot is read from the spec."
                ),
            )
        ],
    )
    def prompt_inputs(context: dg.AssetExecutionContext, project: ProjectResource):
        layout = project.layout
        checked = check_prompt_file(layout.prompt_file(context.partition_key), layout.root)
        yield dg.ObserveResult(
            asset_key=PROMPT_INPUTS,
            data_version=dg.DataVersion(checked.data_version),
            metadata=input_metadata(checked, layout.root),
        )


@dg.asset(
    partitions_def=PROMPTS,
    deps=[prompt_inputs],
    group_name="prompts",
    kinds={"json"},
    description=(
        "A Cosmos-Transfer1 prompt spec `inputs/prompts/<prompt>.json`, reading the control videos of its shot "
        "(`shot` in the metadata). Validated before any GPU time: keys and weights as upstream accepts them, control "
        "videos that exist, paths relative to the cosmos-transfer1 root. Stale when `prompt_inputs` (the spec and "
        "its shot's videos) was observed with a new data version."
    ),
)
def prompt_specs(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    layout = project.layout
    path = layout.prompt_file(context.partition_key)
    checked = check_prompt_file(path, layout.root)
    spec, shot, inputs = checked.spec, checked.shot, checked.inputs
    controls = {name: control.control_weight for name, control in spec.controls()}
    context.log.info(f"{path.name}: shot {shot}, controls {controls}")
    model = spec.model_block().model  # the prompt names its model: check it for that model too (docs/models.md)
    if model:
        backend = backend_named(model)
        backend.check_prompt(spec, path, layout.root)
        for warning in backend.prompt_warnings(spec, layout.root):
            context.log.warning(f"{path.name} on {model}: {warning}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "model": model or "(the run's, else COSMOS_MODEL)",
            "shot": shot or "(none)",
            "prompt": (spec.prompt or "")[:500],
            "controls": dg.MetadataValue.json({k: v for k, v in controls.items()}),
            "inputs": dg.MetadataValue.json([str(p.relative_to(layout.root)) for p in inputs]),
        },
        # The same version prompt_inputs is observed with: materialized right after an observation, it is fresh.
        data_version=dg.DataVersion(checked.data_version),
    )
