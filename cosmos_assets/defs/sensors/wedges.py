"""``wedge_sensor``: a wedge whose variants all have a generated video starts its comparison (docs/wedges.md)."""

from typing import Any

import dagster as dg

from cosmos_assets.defs.partitions import WEDGES
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.prompts.wedges import wedge_names
from cosmos_assets.runs.wedge_comparison import ready_version


def build_wedge_sensor(job: Any, interval_seconds: int, default_status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    """Starts ``job`` for a registered wedge whose variants all have a generated video; ``run_key`` is the variants'
    run ids, so each new set is compared once."""

    @dg.sensor(
        name="wedge_sensor",
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=default_status,
        description="A wedge whose variants all have a generated video -> a wedge_comparisons run (again "
        "when a variant is generated anew). See docs/wedges.md.",
    )
    def wedge_sensor(context: dg.SensorEvaluationContext, project: ProjectResource) -> dg.SensorResult:
        layout = project.layout
        registered = set(context.instance.get_dynamic_partitions(WEDGES.name))
        requests, waiting = [], 0
        for wedge in wedge_names(layout):
            if wedge not in registered:
                continue
            version = ready_version(layout, wedge)
            if version is None:
                waiting += 1
                continue
            requests.append(dg.RunRequest(partition_key=wedge, run_key=f"{wedge}:{version}"))
        return dg.SensorResult(
            run_requests=requests, skip_reason=None if requests else f"{waiting} wedge(s) waiting for their variants"
        )

    return wedge_sensor
