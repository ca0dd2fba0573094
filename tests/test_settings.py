"""The one settings object: the seed's variable names, ours, one-line errors, no secret values."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmos_assets.settings import Settings, SettingsError

SEED = {
    "REMOTE_HOST": "lambda-1", "REMOTE_USER": "ubuntu", "REMOTE_PORT": "2200", "SSH_KEY": "~/.ssh/l.pem",
    "REMOTE_DIR": "/data/cosmos-transfer1", "DOCKER_IMAGE": "nvcr.io/me/c:1", "NUM_GPU": "4",
}  # fmt: skip


def test_defaults_are_the_embedded_preview_deployment() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.model_name, settings.num_gpus) == ("preview", "preview", 1)
    assert settings.root == Path.cwd().resolve()
    assert (settings.sensors, settings.auto_generate, settings.sensor_interval) == (False, False, 30)


def test_the_seed_variables_and_ours() -> None:
    settings = Settings.from_env({**SEED, "COSMOS_HOST": "SSH", "COSMOS_SSH_TRUST_ON_FIRST_USE": "yes",
                                  "COSMOS_MIN_FREE_GB": "50", "COSMOS_SENSORS": "on", "REMOTE_USER_IGNORED": "x"})
    assert (settings.remote_host, settings.remote_user, settings.remote_port, settings.ssh_key) == (
        "lambda-1", "ubuntu", 2200, "~/.ssh/l.pem")
    assert (settings.num_gpus, settings.image, settings.host, settings.model_name) == (4, "nvcr.io/me/c:1", "ssh", "cosmos-transfer1")
    assert settings.checkpoint_dir_or_default == "/data/cosmos-transfer1/../checkpoints"
    assert settings.trust_on_first_use and settings.sensors and settings.min_free_gb == 50.0


def test_empty_values_mean_unset_as_in_the_seeds_config_sh() -> None:
    assert Settings.from_env({"REMOTE_PORT": "", "NUM_GPU": " "}) == Settings.from_env({})


@pytest.mark.parametrize(("name", "value", "says"), [
    ("COSMOS_SSH_TRUST_ON_FIRST_USE", "maybe", "is not on/off"),
    ("COSMOS_AUTO_GENERATE", "perhaps", "is not on/off"),
    ("COSMOS_MIN_FREE_GB", "lots", "valid number"),
    ("REMOTE_PORT", "twenty-two", "valid integer"),
    ("COSMOS_HOST", "gpu", "'preview' or 'ssh'"),
    ("NUM_GPU", "0", "greater than or equal to 1"),
])  # fmt: skip
def test_a_bad_value_is_one_line_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}: ") and says in message and "\n" not in message


def test_the_process_environment_is_read_by_the_same_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUM_GPU", "2")
    monkeypatch.setenv("COSMOS_MODEL", "Cosmos-Transfer1")
    settings = Settings.from_env()
    assert settings.num_gpus == 2 and settings.model_name == "cosmos-transfer1"


def test_secrets_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_keep")
    monkeypatch.setenv("COSMOS_SSH_KEY_PASSPHRASE", "pw_do_not_keep")
    dumped = Settings.from_env().model_dump_json()
    assert "hf_do_not_keep" not in dumped and "pw_do_not_keep" not in dumped
