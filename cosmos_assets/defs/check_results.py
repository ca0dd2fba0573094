"""A rule's :class:`~cosmos_assets.runs.output_rules.CheckReport` as a Dagster check result (for checks and check specs)."""

import dagster as dg

from cosmos_assets.runs.output_rules import CheckReport


def to_result(report: CheckReport, ok: str, check_name: str | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=report.passed,
        description=report.description(ok),
        metadata={**report.facts, "problems": dg.MetadataValue.json(report.problems)},
    )
