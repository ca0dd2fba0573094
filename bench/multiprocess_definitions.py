"""A reference code location for the orchestration bench: cosmos_assets.definitions exactly, except
for the executor, which is Dagster's own default (``multi_or_in_process_executor``) instead of the
project's ``in_process_executor``. With run config ``{"execution": {"config": {"multiprocess": {}}}}``
it runs the way ``dagster asset materialize`` ran before the project chose in-process (one Python
subprocess per step). Nothing in cosmos_assets is patched.
"""

from __future__ import annotations

import dagster as dg

from cosmos_assets.definitions import build_definitions


def _with_dagster_default_executor() -> dg.Definitions:
    project = build_definitions()
    return dg.Definitions(
        assets=project.assets,
        asset_checks=project.asset_checks,
        sensors=project.sensors,
        schedules=project.schedules,
        jobs=project.jobs,
        resources=project.resources,
        executor=dg.multi_or_in_process_executor,
    )


defs = _with_dagster_default_executor()
