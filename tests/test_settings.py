"""The one settings object: the seed's variable names, ours, one-line errors, no secret values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosmos_assets.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[1]
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
    settings = Settings.from_env(
        {
            **SEED,
            "COSMOS_HOST": "SSH",
            "COSMOS_SSH_TRUST_ON_FIRST_USE": "yes",
            "COSMOS_MIN_FREE_GB": "50",
            "COSMOS_SENSORS": "on",
            "REMOTE_USER_IGNORED": "x",
        }
    )
    assert (settings.remote_host, settings.remote_user, settings.remote_port, settings.ssh_key) == (
        "lambda-1",
        "ubuntu",
        2200,
        "~/.ssh/l.pem",
    )
    assert (settings.num_gpus, settings.image, settings.host, settings.model_name) == (
        4,
        "nvcr.io/me/c:1",
        "ssh",
        "cosmos-transfer1",
    )
    assert settings.checkpoint_dir_or_default == "/data/cosmos-transfer1/../checkpoints"
    assert settings.trust_on_first_use and settings.sensors and settings.min_free_gb == 50.0


def test_empty_values_mean_unset_as_in_the_seeds_config_sh() -> None:
    assert Settings.from_env({"REMOTE_PORT": "", "NUM_GPU": " "}) == Settings.from_env({})


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("COSMOS_SSH_TRUST_ON_FIRST_USE", "maybe", "is not on/off"),
        ("COSMOS_AUTO_GENERATE", "perhaps", "is not on/off"),
        ("COSMOS_MIN_FREE_GB", "lots", "valid number"),
        ("REMOTE_PORT", "twenty-two", "valid integer"),
        ("COSMOS_HOST", "gpu", "'preview' or 'ssh'"),
        ("NUM_GPU", "0", "greater than or equal to 1"),
    ],
)
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


# ---------------------------------------------------------------------------------------------------------
# every numeric setting: finite numbers only; one line per bad setting naming its variable


def _numeric_settings(kind: type) -> list[str]:
    """The variable of every setting whose value is a ``kind`` (read from the model: a new one is covered too)."""
    names = []
    for field in Settings.model_fields.values():
        annotation = field.annotation
        kinds = set(getattr(annotation, "__args__", ())) | {annotation}
        if kind in kinds and bool not in kinds:
            names.append(str(field.validation_alias))
    return names


FLOAT_SETTINGS = _numeric_settings(float)
INT_SETTINGS = _numeric_settings(int)


def test_the_numeric_settings_are_found() -> None:
    assert {"COSMOS_MIN_FREE_GB", "COSMOS_GPU_PRICE_PER_HOUR", "COSMOS_MODEL_SILENCE_MINUTES"} <= set(FLOAT_SETTINGS)
    assert {"NUM_GPU", "REMOTE_PORT", "COSMOS_SENSOR_INTERVAL", "COSMOS_SENSOR_PRIORITY"} <= set(INT_SETTINGS)


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e400"])
def test_a_float_setting_refuses_a_number_that_is_not_finite(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}: ") and "finite number" in message and "\n" not in message
    assert "fix the variable" in message


@pytest.mark.parametrize("name", INT_SETTINGS)
@pytest.mark.parametrize("value", ["inf", "nan", "1.5", "1e400", "99999999999999999999999"])
def test_an_integer_setting_refuses_what_is_not_a_usable_integer(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}: ") and "\n" not in message and "fix the variable" in message


def test_each_bad_setting_is_a_line_of_its_own() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"COSMOS_MIN_FREE_GB": "inf", "NUM_GPU": "0", "COSMOS_GPU_PRICE_PER_HOUR": "nan"})
    assert sorted(line.split("=")[0] for line in caught.value.lines) == [
        "COSMOS_GPU_PRICE_PER_HOUR",
        "COSMOS_MIN_FREE_GB",
        "NUM_GPU",
    ]
    assert str(caught.value).splitlines() == caught.value.lines


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("REMOTE_HOST", "-oProxyCommand=x", "is not a usable host or user name"),
        ("COSMOS_CONTAINER_USER", "root;id", "must be numeric uid:gid"),
    ],
)
def test_what_the_ssh_host_refuses_names_the_variable_in_one_line(name: str, value: str, says: str) -> None:
    from cosmos_assets.defs.resources import gpu_host_from_settings

    settings = Settings.from_env({"COSMOS_HOST": "ssh", "REMOTE_HOST": "gpu-1", name: value})
    with pytest.raises(SettingsError) as caught:
        gpu_host_from_settings(settings)
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}: ") and says in message and "\n" not in message
    assert "SshGpuHost" not in message and "validation error" not in message


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "REMOTE_", "NUM_GPU"))}
    return subprocess.run(
        [sys.executable, "-m", *args],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_through_the_cli_each_bad_setting_is_one_error_line(tmp_path: Path) -> None:
    result = _cli(
        {"COSMOS_MIN_FREE_GB": "inf", "COSMOS_MODEL_SILENCE_MINUTES": "nan", "COSMOS_PROJECT_ROOT": str(tmp_path)},
        "cosmos_assets.cli",
        "hosts",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: COSMOS_MIN_FREE_GB='inf': Input should be a finite number; fix the variable (see the README's settings table)",
        "error: COSMOS_MODEL_SILENCE_MINUTES='nan': Input should be a finite number; fix the variable (see the README's "
        "settings table)",
    ]


def test_through_dagster_the_settings_error_is_shown_as_its_one_line(tmp_path: Path) -> None:
    """`dagster definitions validate` prints the exception's message: the variable's line, no pydantic dump."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    result = _cli(
        {"COSMOS_GPU_PRICE_PER_HOUR": "inf", "COSMOS_PROJECT_ROOT": str(tmp_path), "DAGSTER_HOME": str(home)},
        "dagster",
        "definitions",
        "validate",
        "-m",
        "cosmos_assets.definitions",
    )
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "SettingsError: COSMOS_GPU_PRICE_PER_HOUR='inf': Input should be a finite number; fix the variable" in out
    assert "validation error for" not in out and "errors.pydantic.dev" not in out


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("preview", "must divide 16"),
        ("cosmos-transfer2.5", "use 1, 2, 4 or 8"),
        ("cosmos3", "1 or an even count"),
    ],
)
def test_a_gpu_count_the_model_cannot_split_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model: str, says: str
) -> None:
    from cosmos_assets.cli import main
    from tests.project_factory import make_project

    make_project(tmp_path)
    for name in ("COSMOS_HOSTS_FILE", "COSMOS_HOST", "COSMOS_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COSMOS_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setenv("NUM_GPU", "3")
    assert main(["command", "tiny_prompt", "--model", model]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: num_gpus = 3: ") and says in err[0]


def test_a_settings_error_survives_pickling_line_by_line() -> None:
    """Dagster sends errors between processes pickled: the lines must come back as lines, not one character each."""
    import pickle

    from cosmos_assets.settings import SettingsError

    error = pickle.loads(pickle.dumps(SettingsError(["NUM_GPU: must be 1..64", "COSMOS_MIN_FREE_GB: not a number"])))
    assert error.lines == ["NUM_GPU: must be 1..64", "COSMOS_MIN_FREE_GB: not a number"]
    assert str(error) == "NUM_GPU: must be 1..64\nCOSMOS_MIN_FREE_GB: not a number"
