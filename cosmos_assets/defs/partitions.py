"""Partition sets. Keys are added by the sensors, the CLI or the UI ("Add partition")."""

import os

import dagster as dg

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.prompts.wedges import wedge_names

SHOTS = dg.DynamicPartitionsDefinition(name="shots")
"""One key per render folder ``art/houdini/renders/<shot>/``."""

PROMPTS = dg.DynamicPartitionsDefinition(name="prompts")
"""One key per prompt file ``inputs/prompts/<prompt>.json``; the prompt's shot is read from its spec."""

NO_PARTICULAR_SHOT = dg.SpecificPartitionsPartitionMapping([])
"""The mapping of the edge ``control_videos`` (shots) -> ``prompt_inputs`` (prompts): it draws the edge and claims
no ``shots`` partition. Dagster has no one-to-many dynamic mapping, and with no mapping it would pair partitions
by identical key (a prompt would "need" a shot named like itself). Which shot a prompt reads is in its spec; the
truth reaches Dagster as ``prompt_inputs``' observed data version. See ARCHITECTURE.md, *Partitions*."""

WEDGES = dg.DynamicPartitionsDefinition(name="wedges")
"""One key per wedge ``inputs/wedges/<wedge>.json`` (``cosmos-assets wedge``); its variants are ``prompts`` keys."""

NO_PARTICULAR_PROMPT = dg.SpecificPartitionsPartitionMapping([])
"""The edge ``generated_videos`` (prompts) -> ``wedge_comparisons`` (wedges): drawn, claiming no prompt partition
(a wedge's variants are listed in its manifest, not derivable from its key); see ``NO_PARTICULAR_SHOT``."""


def register_partitions(layout: ProjectLayout) -> tuple[list[str], list[str]]:
    """Add every render folder and prompt file as a partition of the instance in DAGSTER_HOME."""
    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit(
            "error: DAGSTER_HOME is not set, so partitions would go to a throwaway instance; "
            "export DAGSTER_HOME=$PWD/dagster_home (the Makefile does)"
        )
    instance = dg.DagsterInstance.get()
    added: dict[str, list[str]] = {}
    for partitions, keys in ((SHOTS, layout.shot_names()), (PROMPTS, layout.prompt_names())):
        known = set(instance.get_dynamic_partitions(partitions.name))
        new = [key for key in keys if key not in known]
        if new:
            instance.add_dynamic_partitions(partitions.name, new)
        added[partitions.name] = new
    return added[SHOTS.name], added[PROMPTS.name]


def register_wedges(layout: ProjectLayout) -> list[str]:
    """Add every wedge manifest (inputs/wedges/*.json) as a `wedges` partition; call after register_partitions."""
    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(WEDGES.name))
    new = [name for name in wedge_names(layout) if name not in known]
    if new:
        instance.add_dynamic_partitions(WEDGES.name, new)
    return new
