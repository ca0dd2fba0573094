"""The team deployment's files agree with each other and with Dagster (deploy/, docs/team.md).

compose.yaml cannot be run here (no registry, no `docker compose`): it is parsed and checked against deploy/dagster.yaml
(the services, the variables run workers get, the mounts, the network), the Dockerfile and workspace.yaml.
deploy/dagster.yaml itself is loaded by Dagster's own instance schema. The real daemon, PostgreSQL and
DockerRunLauncher run in tests/integration/test_team_deployment.py with the same dagster.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SECRETS_READ_BY_NAME = {"HF_TOKEN", "COSMOS_SSH_KEY_PASSPHRASE"}
SETTINGS_SOURCE = REPO / "cosmos_assets" / "settings.py"
# Settings the documentation lists that the deploy files deliberately do not pass, and why.
NOT_FROM_COMPOSE = {"DAGSTER_HOME": "set by the image (deploy/Dockerfile ENV), the same path in every container"}
NOT_TO_RUN_WORKERS = {
    "COSMOS_WEBHOOK_URL": "a secret only the daemon's notification sensors use; a run worker posts nothing"
}
DOCUMENTED_IN = [REPO / "README.md", REPO / "docs" / "gpu-host.md", REPO / "docs" / "sensors.md"]


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _env_refs(node: object) -> set[str]:
    """Every `{env: NAME}` in a dagster.yaml tree."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(_env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_refs(v) for v in node)) if node else set()
    return set()


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def _docker_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", _dockerfile())
    assert match, f"deploy/Dockerfile sets no {name}"
    return match.group(1).rstrip("\\").strip()


@pytest.fixture(scope="module")
def instance_yaml() -> dict:
    return _load("dagster.yaml")


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load("compose.yaml")


def test_dagster_accepts_the_deployment_instance(instance_yaml: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.instance.ref import InstanceRef
    from dagster_docker import DockerRunLauncher

    for name in _env_refs(instance_yaml):
        monkeypatch.setenv(name, "5432" if name.endswith("_PORT") else "x")
    config, _ = dagster_instance_config(str(DEPLOY))
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_POSTGRES_PASSWORD"}
    ref = InstanceRef.from_dir(str(DEPLOY))
    assert (
        ref.storage_data.module_name == "dagster_postgres" and ref.storage_data.class_name == "DagsterPostgresStorage"
    )
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    assert isinstance(ref.run_launcher, DockerRunLauncher)  # the launcher's own config schema accepted it


def test_monitoring_and_retries_fit_the_projects_executor(instance_yaml: dict) -> None:
    from cosmos_assets.definitions import build_definitions
    from cosmos_assets.settings import Settings

    monitoring, retries = instance_yaml["run_monitoring"], instance_yaml["run_retries"]
    assert monitoring["enabled"] is True and retries["enabled"] is True and retries["max_retries"] >= 1
    assert retries["retry_on_asset_or_op_failure"] is False  # the GPU steps' own RetryPolicy decides those
    executor = build_definitions(Settings.from_env({})).resolve_job_def("generate_job").executor_def
    if executor.name == "in_process":  # Dagster resumes a run in place only with a step-per-container executor
        assert monitoring["max_resume_run_attempts"] == 0
    demo = _load_repo_instance()["concurrency"]  # the same per-host limits as the single-machine instance
    assert instance_yaml["concurrency"]["runs"]["tag_concurrency_limits"] == demo["runs"]["tag_concurrency_limits"]
    assert instance_yaml["concurrency"]["pools"] == demo["pools"]


def _load_repo_instance() -> dict:
    return yaml.safe_load((REPO / "dagster_home" / "dagster.yaml").read_text())


def test_the_demo_instance_stays_embedded() -> None:
    demo = _load_repo_instance()
    assert "storage" not in demo and "run_storage" not in demo and "event_log_storage" not in demo  # SQLite
    assert "run_launcher" not in demo  # runs are processes on this machine


def test_every_setting_reaches_the_run_workers(instance_yaml: dict) -> None:
    from cosmos_assets.settings import Settings

    passed = set(instance_yaml["run_launcher"]["config"]["env_vars"])
    settings = {field.validation_alias for field in Settings.model_fields.values()}
    storage = _env_refs(instance_yaml["storage"])
    missing = (settings | SECRETS_READ_BY_NAME | storage) - passed
    assert not missing, f"deploy/dagster.yaml run_launcher.config.env_vars lacks {sorted(missing)}"
    assert all("=" not in name for name in passed)  # values come from the environment, never this file


@pytest.mark.parametrize("service", ["webserver", "daemon"])
def test_compose_gives_the_dagster_services_what_the_instance_reads(
    service: str, compose: dict, instance_yaml: dict
) -> None:
    spec = compose["services"][service]
    env = spec["environment"]
    needed = set(instance_yaml["run_launcher"]["config"]["env_vars"]) | _env_refs(instance_yaml)
    missing = needed - set(env)
    assert not missing, f"compose.yaml {service} does not set {sorted(missing)} (Dagster refuses a run without them)"
    assert spec["image"] == compose["services"]["webserver"]["image"] and "COSMOS_RUN_IMAGE" in spec["image"]
    assert env["DAGSTER_POSTGRES_HOST"] in compose["services"]  # the database service, by name
    assert "/var/run/docker.sock:/var/run/docker.sock" in spec["volumes"]
    assert env["COSMOS_RUN_NETWORK"] in {net["name"] for net in compose["networks"].values()}
    assert set(spec["networks"]) == {
        key for key, net in compose["networks"].items() if net["name"] == env["COSMOS_RUN_NETWORK"]
    }
    assert env["COSMOS_PROJECT_ROOT"] + ":" + env["COSMOS_PROJECT_ROOT"] in spec["volumes"]
    for path_setting in ("SSH_KEY", "COSMOS_KNOWN_HOSTS"):
        assert any(env[path_setting].startswith(v.split(":")[1] + "/") for v in spec["volumes"]), path_setting
    assert spec["entrypoint"][-1] == "workspace.yaml"


def test_run_workers_mount_what_the_services_mount(compose: dict, instance_yaml: dict) -> None:
    kwargs = instance_yaml["run_launcher"]["config"]["container_kwargs"]
    named = {key: vol["name"] for key, vol in compose["volumes"].items()}
    home = _docker_env("DAGSTER_HOME")
    for service in ("webserver", "daemon"):
        mounts = compose["services"][service]["volumes"]
        for volume in kwargs["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("/"):  # a host path: the same on both sides
                assert volume in mounts, f"{service} lacks the run workers' mount {volume}"
            else:  # a named volume: compose must name it exactly, or Docker makes a second empty one
                assert source in named.values(), f"compose.yaml names no volume {source!r}"
                key = next(k for k, v in named.items() if v == source)
                assert f"{key}:{target}" in mounts
    assert f"{home}/storage" in {v.split(":")[1] for v in kwargs["volumes"]}  # compute logs the webserver shows
    uid, gid = _docker_env("COSMOS_UID"), _docker_env("COSMOS_GID")
    assert kwargs["user"] == f"{uid}:{gid}"  # the artists' uid: outputs are never root's


def test_the_image_and_workspace(compose: dict) -> None:
    dockerfile = _dockerfile()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert "pip install --no-cache-dir ." in dockerfile
    assert 'COPY deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"' in dockerfile
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.M).group(1)
    (location,) = _load("workspace.yaml")["load_from"]
    assert location["python_module"] == {"module_name": "cosmos_assets.definitions", "working_directory": workdir}
    for service in ("webserver", "daemon"):  # one image, the run workers' too (COSMOS_RUN_IMAGE)
        build = compose["services"][service]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert compose["services"]["webserver"]["ports"] == ["127.0.0.1:3000:3000"]  # no login in Dagster OSS
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:") and "healthcheck" in postgres
    for service in ("webserver", "daemon"):
        assert compose["services"][service]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def _documented_settings() -> dict[str, str]:
    """Every variable in the settings tables (header ``| variable | ...``) of the README and the docs it points to,
    with the file that lists it."""
    found: dict[str, str] = {}
    for doc in DOCUMENTED_IN:
        in_table = False
        for line in doc.read_text().splitlines():
            if re.match(r"^\|\s*variable\s*\|", line):
                in_table = True
            elif in_table and line.startswith("|"):
                for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]):
                    found.setdefault(name, doc.name)
            else:
                in_table = False
    return found


def _settings_source_names() -> set[str]:
    """Every COSMOS_*, REMOTE_*, DOCKER_* and HF_TOKEN name cosmos_assets/settings.py spells out."""
    return set(re.findall(r"\b((?:COSMOS|REMOTE|DOCKER)_[A-Z0-9_]*[A-Z0-9]|HF_TOKEN)\b", SETTINGS_SOURCE.read_text()))


def test_the_documented_tables_are_found() -> None:
    documented = _documented_settings()
    assert documented["COSMOS_WEBHOOK_URL"] == "README.md" and documented["REMOTE_DIR_COSMOS3"] == "README.md"
    assert {"COSMOS_SENSOR_INTERVAL", "COSMOS_KNOWN_HOSTS", "NUM_GPU", "HF_TOKEN", "DAGSTER_HOME"} <= set(documented)
    assert "COSMOS_SKIP_INTEGRATION" not in documented  # prose, not a settings table


def test_every_documented_setting_reaches_the_dagster_services_and_the_run_workers(
    compose: dict, instance_yaml: dict
) -> None:
    from cosmos_assets.settings import Settings

    settings = set(_documented_settings()) | _settings_source_names() | SECRETS_READ_BY_NAME
    settings |= {field.validation_alias for field in Settings.model_fields.values()}
    passed_to_workers = set(instance_yaml["run_launcher"]["config"]["env_vars"])
    for service in ("webserver", "daemon"):
        missing = settings - set(NOT_FROM_COMPOSE) - set(compose["services"][service]["environment"])
        assert not missing, f"deploy/compose.yaml {service} does not pass {sorted(missing)}"
    missing = settings - set(NOT_FROM_COMPOSE) - set(NOT_TO_RUN_WORKERS) - passed_to_workers
    assert not missing, f"deploy/dagster.yaml run_launcher.config.env_vars lacks {sorted(missing)}"
    assert not set(NOT_TO_RUN_WORKERS) & passed_to_workers  # deliberately kept from them: never passed after all
    assert set(NOT_FROM_COMPOSE) | set(NOT_TO_RUN_WORKERS) <= settings  # no stale exception
    assert _docker_env("DAGSTER_HOME").startswith("/")


def test_secrets_come_from_the_sites_env_file_never_a_value_in_compose(compose: dict) -> None:
    env = compose["services"]["daemon"]["environment"]
    for name in (*SECRETS_READ_BY_NAME, "COSMOS_WEBHOOK_URL", "DAGSTER_POSTGRES_PASSWORD"):
        assert re.fullmatch(rf"\$\{{{name}:[-?][^}}]*\}}", env[name]), (
            f"compose.yaml sets {name} to a value, not ${{{name}...}}"
        )


def test_every_variable_of_the_env_example_is_read_by_compose() -> None:
    compose_text = (DEPLOY / "compose.yaml").read_text()
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (DEPLOY / "env.example").read_text(), re.M)
    assert "COSMOS_WEBHOOK_URL" in names
    unread = [name for name in names if f"${{{name}:" not in compose_text]
    assert not unread, f"deploy/env.example sets {unread}, which compose.yaml never reads (silently ignored)"
