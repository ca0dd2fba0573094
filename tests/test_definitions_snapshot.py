"""What the code location holds, loaded as ``dagster dev -m cosmos_assets.definitions`` loads it, against a snapshot:
the assets (partitions, group, kind), the asset checks, the jobs (and the tags that queue their GPU steps), the sensors
(and whether they start on) and the resources. A change to any of them shows here as a diff to review; when it is
meant, refresh the snapshot with ``COSMOS_UPDATE_SNAPSHOTS=1 pytest tests/test_definitions_snapshot.py``."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from dagster._core.definitions.reconstruct import repository_def_from_target_def
from dagster._core.workspace.autodiscovery import loadable_targets_from_python_module

from cosmos_assets.defs.sensors.notify import WEBHOOK_ENV
from cosmos_assets.settings import Settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
UPDATE_ENV = "COSMOS_UPDATE_SNAPSHOTS"
REFRESH = "tests/test_definitions_snapshot.py"
POOL_FILE = """hosts:
  - {name: gpu-a, ssh: "ubuntu@10.1.2.3:2222", remote_dir: /data/cosmos-transfer1, models: [transfer1]}
  - {name: cpu, ssh: local, remote_dir: /tmp/preview-root, models: [preview]}
"""
# The settings that change what the code location holds (the others only configure what it does).
DEPLOYMENTS = {
    "one host (the default: the preview on this computer)": {},
    "a host pool (COSMOS_HOSTS_FILE)": {"COSMOS_HOSTS_FILE": "{root}/hosts.yaml"},
    "webhook notifications (COSMOS_WEBHOOK_URL)": {WEBHOOK_ENV: "http://127.0.0.1:9/hook"},
}


def _listing() -> dict[str, Any]:
    (target,) = loadable_targets_from_python_module("cosmos_assets.definitions", working_directory=None)
    repo = repository_def_from_target_def(target.target_definition)
    assert repo is not None
    graph = repo.asset_graph
    assets = {
        key.to_user_string(): {
            "group": graph.get(key).group_name,
            "partitions": getattr(graph.get(key).partitions_def, "name", None),
            "observed": graph.get(key).is_observable,
        }
        for key in graph.get_all_asset_keys()
    }
    return {
        "assets": assets,
        "asset_checks": sorted(f"{key.asset_key.to_user_string()}: {key.name}" for key in graph.asset_check_keys),
        "jobs": {job.name: dict(job.tags) for job in repo.get_all_jobs() if not job.name.startswith("__")},
        "sensors": {sensor.name: sensor.default_status.value for sensor in repo.sensor_defs},
        "resources": sorted(repo.get_top_level_resources()),
    }


def test_the_definitions_match_the_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hosts.yaml").write_text(POOL_FILE)
    for field in Settings.model_fields.values():  # the developer's own settings must not change the listing
        if isinstance(field.validation_alias, str):
            monkeypatch.delenv(field.validation_alias, raising=False)
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    listings = {}
    for deployment, env in DEPLOYMENTS.items():
        with monkeypatch.context() as patched:
            for name, value in {"COSMOS_PROJECT_ROOT": str(tmp_path), **env}.items():
                patched.setenv(name, value.format(root=tmp_path))
            listings[deployment] = _listing()
    found = json.dumps(listings, indent=2, sort_keys=True) + "\n"
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(found)
    expected = SNAPSHOT.read_text() if SNAPSHOT.is_file() else ""
    diff = "".join(difflib.unified_diff(expected.splitlines(True), found.splitlines(True), str(SNAPSHOT), "loaded"))
    if diff:
        refresh = f"if that is meant, refresh the snapshot: {UPDATE_ENV}=1 pytest {REFRESH}"
        pytest.fail(f"the definitions changed:\n{diff}\n{refresh}", pytrace=False)
