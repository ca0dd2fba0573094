"""`cosmos-assets generate --priority` and `cosmos-assets hosts` on the default preview host (a pool of one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.cli import main
from cosmos_assets.defs.resources.slots import host_pool
from tests.project_factory import make_project

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("COSMOS_HOSTS_FILE", "COSMOS_HOST", "COSMOS_MODEL", "REMOTE_HOST"):
        monkeypatch.delenv(name, raising=False)
    make_project(tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(tmp_path))
    return tmp_path


def test_generate_at_urgent_priority_tags_the_run_and_names_its_host(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "tiny_prompt", "--priority", "urgent"]) == 0
    out = capsys.readouterr().out
    assert "tiny_prompt: succeeded on preview@local" in out and "priority 100" in out
    with dg.DagsterInstance.get() as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.tags["dagster/priority"] == "100"
        assert record.dagster_run.tags["cosmos/host"] == "preview@local"
        info = instance.event_log_storage.get_concurrency_info(host_pool("preview@local"))
        assert info.slot_count == 1 and info.claimed_slots == []  # the pool of one's slot, given back

    assert main(["hosts"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["NAME", "TARGET", "STATE"]
    assert table[1].split()[:4] == ["preview@local", "this", "machine", "reachable"] and table[1].split()[-1] == "0"


def test_a_bad_priority_is_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "tiny_prompt", "--priority", "asap"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: priority 'asap' is not one of urgent, high, normal, low, backfill, wedge or an integer"
    )


def test_hosts_lists_an_unreachable_host_with_its_reason_and_the_others_state(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    (project / "known_hosts").write_text("")
    hosts = project / "hosts.yaml"
    hosts.write_text(f"""hosts:
  - {{name: gone, ssh: "root@127.0.0.1:{port}", known_hosts: {project / "known_hosts"}, models: [preview], price_per_gpu_hour: 2}}
  - {{name: cpu, ssh: local, remote_dir: {project / "preview-root"}, models: [preview]}}
""")
    monkeypatch.setenv("COSMOS_HOSTS_FILE", str(hosts))
    assert main(["hosts", "--json"]) == 0
    gone, cpu = json.loads(capsys.readouterr().out)
    assert (gone["name"], gone["reachable"], gone["price_per_gpu_hour"]) == ("gone", False, 2.0)
    assert gone["problem"].startswith("cannot connect to gone") and gone["runs_in_flight"] == []
    assert (cpu["name"], cpu["reachable"], cpu["models"]) == ("preview@cpu", True, ["preview"])
    assert main(["hosts"]) == 0
    out = capsys.readouterr().out
    assert "UNREACHABLE" in out and "gone: cannot connect to gone" in out


BAD_POOL = "hosts:\n  - {name: gpu-a, ssh: 'u@h', container_user: 'root;id', min_free_gb: 20}\n"
BAD_POOL_LINE = "host gpu-a, field container_user: container_user 'root;id' must be numeric uid:gid"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (BAD_POOL, BAD_POOL_LINE),
        (
            "hosts:\n  - {name: gpu-a, ssh: 'u@h', min_free_gb: .inf}\n",
            "host gpu-a, field min_free_gb: Input should be a finite number",
        ),
        ("hosts:\n  - {name: gpu-a, ssh: 'u@h:70000'}\n", "host gpu-a, field ssh: port 70000 is not a TCP port"),
    ],
)
def test_hosts_with_a_bad_pool_file_is_one_error_line(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    hosts = project / "hosts.yaml"
    hosts.write_text(text)
    monkeypatch.setenv("COSMOS_HOSTS_FILE", str(hosts))
    assert main(["hosts"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {hosts}: {says}" + err[0].split(says, 1)[1]] and err[0].endswith(
        "fix the file (docs/hosts.md)"
    )


def test_dagster_shows_a_bad_pool_file_as_its_one_line(project: Path) -> None:
    """`dagster definitions validate` and `dagster asset materialize` load the definitions: the file, host and field,
    not pydantic's dump of GpuHostPool's internals."""
    import os
    import subprocess
    import sys

    hosts = project / "hosts.yaml"
    hosts.write_text(BAD_POOL)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "REMOTE_"))},
        "COSMOS_HOSTS_FILE": str(hosts),
        "COSMOS_PROJECT_ROOT": str(project),
        "PYTHONPATH": str(REPO),
    }
    dagster = str(Path(sys.executable).with_name("dagster"))
    for args in (
        ["definitions", "validate"],
        ["asset", "materialize", "--select", "prompt_specs", "--partition", "tiny_prompt"],
    ):
        result = subprocess.run(
            [dagster, *args, "-m", "cosmos_assets.definitions"],
            env=env,
            cwd=project,
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = result.stdout + result.stderr
        assert result.returncode != 0
        assert f"cosmos_assets.machines.pool_file.PoolFileError: {hosts}: {BAD_POOL_LINE}" in out
        assert "validation error for" not in out and "errors.pydantic.dev" not in out
