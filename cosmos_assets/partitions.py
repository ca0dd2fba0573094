"""Partition sets. Keys are added by the sensors, the CLI or the UI ("Add partition")."""

import dagster as dg

SHOTS = dg.DynamicPartitionsDefinition(name="shots")
"""One key per render folder ``art/houdini/renders/<shot>/``."""

PROMPTS = dg.DynamicPartitionsDefinition(name="prompts")
"""One key per prompt file ``inputs/prompts/<prompt>.json``; the prompt's shot is read from its spec."""
