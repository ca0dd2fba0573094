"""Served or one-shot as a setting: per deployment (COSMOS_SERVE*), per host in the pool file, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmos_assets.cli import main
from cosmos_assets.defs.resources import SshGpuHost
from cosmos_assets.defs.resources.host_pool import member_from_entry
from cosmos_assets.machines.pool_file import HostEntry
from cosmos_assets.settings import Settings, SettingsError


def test_the_deployment_settings_reach_the_ssh_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_HOST", "gpu1")
    monkeypatch.setenv("COSMOS_SERVE", " Never ")
    monkeypatch.setenv("COSMOS_SERVE_IDLE_MINUTES", "5")
    host = SshGpuHost.from_settings(Settings.from_env())
    settings = host.host_settings("cosmos3")
    assert (settings.serve, settings.serve_idle_minutes, settings.serve_load_minutes) == ("never", 5.0, 60.0)
    for name in ("COSMOS_SERVE", "COSMOS_SERVE_IDLE_MINUTES"):
        monkeypatch.delenv(name)
    assert (Settings.from_env().serve, Settings.from_env().serve_idle_minutes) == ("auto", 15.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [("COSMOS_SERVE", "sometimes"), ("COSMOS_SERVE_IDLE_MINUTES", "0"), ("COSMOS_SERVE_LOAD_MINUTES", "-1")],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({name: value})
    assert len(error.value.lines) == 1 and error.value.lines[0].startswith(f"{name}={value!r}: ")


def test_a_pool_host_s_own_serve_wins_over_the_deployment_s() -> None:
    defaults = Settings.from_env({"COSMOS_SERVE": "always", "COSMOS_SERVE_IDLE_MINUTES": "30"}).serve_defaults()
    own = member_from_entry(HostEntry(name="a", ssh="gpu-a", models=["cosmos3"], serve="never"), serve=defaults)
    inherited = member_from_entry(HostEntry(name="b", ssh="gpu-b", models=["cosmos3"]), serve=defaults)
    assert own.host_settings("cosmos3").serve == "never" and own.host_settings("cosmos3").serve_idle_minutes == 30.0
    assert inherited.host_settings("cosmos3").serve == "always"


def test_service_commands_name_an_unknown_host_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COSMOS_HOSTS_FILE", raising=False)
    monkeypatch.setenv("COSMOS_HOST", "preview")
    assert main(["service", "status"]) == 0  # the preview host runs no service: nothing to list
    assert main(["service", "stop", "--host", "nope"]) == 1
    assert capsys.readouterr().err.strip() == "error: --host nope: no SSH host of that name (see `cosmos-assets hosts`)"
