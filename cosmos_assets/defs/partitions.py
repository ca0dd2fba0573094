"""Partition sets. Keys are added by the sensors, the CLI or the UI ("Add partition")."""

import dagster as dg

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
