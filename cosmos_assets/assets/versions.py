"""Each partition of a multi-partition step materialized with its own data version, as Dagster would write it alone.

Dagster 1.13.27 has no public way to give each partition of a multi-partition step its own data version (an
output's data version and tags are shared by all its partitions): these tags are what it writes itself
(``execute_step._build_data_version_tags``), put on one ``AssetMaterialization`` per partition. Used by the assets
with a single-run backfill policy (``prompt_specs``, ``generated_videos``).
"""

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG as _CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG as _USER_PROVIDED_TAG,
    DATA_VERSION_TAG as _DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION as _DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER as _NULL_EVENT_POINTER,
    get_input_data_version_tag as _input_data_version_tag,
    get_input_event_pointer_tag as _input_event_pointer_tag,
)


def data_version_tags(context: dg.AssetExecutionContext, partition: str, version: str) -> dict[str, str]:
    """The data-version tags Dagster would write for ``partition`` alone: its version, and each upstream asset's data
    version and event of the same partition (identity mappings; the latest materialization, else observation, as
    Dagster reads an observed upstream), so staleness is judged per partition."""
    tags = {_CODE_VERSION_TAG: context.run.run_id, _DATA_VERSION_TAG: version, _USER_PROVIDED_TAG: "true"}
    for dep in context.assets_def.asset_deps[context.asset_key]:
        found = context.instance.get_latest_data_version_record(dep, partition_key=partition)
        event = (found.asset_materialization or found.asset_observation) if found is not None else None
        dep_version = (event.tags or {}).get(_DATA_VERSION_TAG) if event is not None else None
        tags[_input_data_version_tag(dep)] = dep_version or _DEFAULT_DATA_VERSION.value
        tags[_input_event_pointer_tag(dep)] = str(found.storage_id) if found is not None else _NULL_EVENT_POINTER
    return tags
