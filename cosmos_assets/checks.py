"""Asset checks on the outputs (filled in by the UI work)."""

import dagster as dg

ALL_CHECKS: list[dg.AssetChecksDefinition] = []
