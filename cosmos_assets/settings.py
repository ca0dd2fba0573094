"""Every setting the README lists, in one object, read once where the definitions are built.

The seed's ``scripts/config.sh`` names are kept (``REMOTE_HOST``, ``REMOTE_USER``, ``REMOTE_PORT``,
``SSH_KEY``, ``REMOTE_DIR``, ``CHECKPOINT_DIR_REMOTE``, ``DOCKER_IMAGE``, ``NUM_GPU``); ours start with
``COSMOS_``. Secrets are never values here: ``HF_TOKEN`` reaches the SSH host resource as a
``dg.EnvVar`` and the key passphrase is read by name (``COSMOS_SSH_KEY_PASSPHRASE``) where the key is
opened. A bad value fails with one line naming the variable and what it takes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cosmos_assets.models.names import canonical_name
from cosmos_assets.runs.priority import parse_priority

KEY_PASSPHRASE_ENV = "COSMOS_SSH_KEY_PASSPHRASE"
_ON = frozenset({"1", "on", "true", "yes"})
_OFF = frozenset({"0", "off", "false", "no"})
SECONDS_PER_DAY = 24 * 3600
MAX_GPUS = 64  # per run: more than any one machine holds
MAX_FOLDERS_PER_TICK = 100_000
RESOURCE_VARIABLES = {
    "host": "REMOTE_HOST", "user": "REMOTE_USER", "port": "REMOTE_PORT", "ssh_key": "SSH_KEY", "key_file": "SSH_KEY",
    "known_hosts": "COSMOS_KNOWN_HOSTS", "trust_on_first_use": "COSMOS_SSH_TRUST_ON_FIRST_USE",
    "remote_dir": "REMOTE_DIR", "checkpoint_dir": "CHECKPOINT_DIR_REMOTE", "docker_image": "DOCKER_IMAGE",
    "docker_gpus": "COSMOS_DOCKER_GPUS", "container_user": "COSMOS_CONTAINER_USER", "min_free_gb": "COSMOS_MIN_FREE_GB",
    "busy_wait_minutes": "COSMOS_HOST_BUSY_WAIT_MINUTES",
    "model": "COSMOS_MODEL", "model_dirs.cosmos-transfer2.5": "REMOTE_DIR_TRANSFER2_5",
    "model_dirs.cosmos3": "REMOTE_DIR_COSMOS3", "model_images.cosmos-transfer2.5": "DOCKER_IMAGE_TRANSFER2_5",
    "model_images.cosmos3": "DOCKER_IMAGE_COSMOS3", "serve": "COSMOS_SERVE", "serve_idle_minutes": "COSMOS_SERVE_IDLE_MINUTES",
    "serve_load_minutes": "COSMOS_SERVE_LOAD_MINUTES",
}  # fmt: skip
"""The variable behind each field of the SSH host resource and its machine models, to name it when they refuse it."""


class SettingsError(ValueError):
    """Settings with values they cannot take; the message has one line per bad setting, naming its variable and the
    fix (``lines``)."""

    def __init__(self, lines: list[str] | str) -> None:
        self.lines = lines.split("\n") if isinstance(lines, str) else lines  # a str: unpickled (args hold the text)
        super().__init__("\n".join(self.lines))


def _on_off(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _ON:
            return True
        if text in _OFF:
            return False
        raise ValueError("is not on/off (use on, off, true, false, yes, no, 1 or 0)")
    return value


def default_checkpoint_dir(remote_dir: str) -> str:
    """The seed's checkpoint folder on a host: ``REMOTE_DIR/../checkpoints`` (one for every model, so one cache)."""
    return f"{remote_dir.rstrip('/')}/../checkpoints"


class Settings(BaseSettings):
    """The deployment's settings (the environment, by the names in the README)."""

    # allow_inf_nan=False: "inf" or "nan" is refused for every float (a disk check or a price that can never hold)
    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        case_sensitive=True,
        env_ignore_empty=True,
        populate_by_name=True,
        allow_inf_nan=False,
    )

    # where things live and what runs
    project_root: Path | None = Field(
        None, validation_alias="COSMOS_PROJECT_ROOT", description="project root; default the current directory"
    )
    host: Literal["preview", "ssh"] = Field(
        "preview", validation_alias="COSMOS_HOST", description="preview (this machine, no GPU) or ssh (a GPU host)"
    )
    model: str | None = Field(
        None,
        validation_alias="COSMOS_MODEL",
        description="model backend; default preview on the preview host, cosmos-transfer1 over ssh",
    )
    preview_dir: str | None = Field(
        None, validation_alias="COSMOS_PREVIEW_DIR", description="the preview host's model root"
    )
    num_gpus: int = Field(
        1, ge=1, le=MAX_GPUS, validation_alias="NUM_GPU", description="GPUs per run (the seed's NUM_GPU)"
    )

    # the GPU host (the seed's config.sh)
    remote_host: str | None = Field(None, validation_alias="REMOTE_HOST")
    remote_user: str | None = Field(None, validation_alias="REMOTE_USER")
    remote_port: int | None = Field(None, ge=1, le=65535, validation_alias="REMOTE_PORT")
    ssh_key: str | None = Field(None, validation_alias="SSH_KEY")
    remote_dir: str = Field("~/cosmos-transfer1", validation_alias="REMOTE_DIR")
    checkpoint_dir: str | None = Field(None, validation_alias="CHECKPOINT_DIR_REMOTE")
    docker_image: str | None = Field(None, validation_alias="DOCKER_IMAGE")
    # the newer models' own checkouts and images on the same host (default: beside REMOTE_DIR; docs/gpu-host.md)
    remote_dir_transfer2_5: str | None = Field(None, validation_alias="REMOTE_DIR_TRANSFER2_5")
    docker_image_transfer2_5: str | None = Field(None, validation_alias="DOCKER_IMAGE_TRANSFER2_5")
    remote_dir_cosmos3: str | None = Field(None, validation_alias="REMOTE_DIR_COSMOS3")
    docker_image_cosmos3: str | None = Field(None, validation_alias="DOCKER_IMAGE_COSMOS3")
    docker_gpus: str = Field("all", validation_alias="COSMOS_DOCKER_GPUS")
    known_hosts: str | None = Field(None, validation_alias="COSMOS_KNOWN_HOSTS")
    trust_on_first_use: bool = Field(False, validation_alias="COSMOS_SSH_TRUST_ON_FIRST_USE")
    container_user: str | None = Field(None, validation_alias="COSMOS_CONTAINER_USER")
    min_free_gb: float = Field(20.0, ge=0, validation_alias="COSMOS_MIN_FREE_GB")
    # a model container of ours running on the host (whoever started it): a new run waits this long, then is refused
    host_busy_wait_minutes: float = Field(60.0, ge=0, validation_alias="COSMOS_HOST_BUSY_WAIT_MINUTES")
    # a model that prints nothing this long is hung: its run fails and its container is stopped (0 = never)
    model_silence_minutes: float = Field(45.0, ge=0, validation_alias="COSMOS_MODEL_SILENCE_MINUTES")
    # what a GPU hour costs (any currency): runs then record a cost; unset, they record GPU seconds only
    gpu_price_per_hour: float | None = Field(None, ge=0, validation_alias="COSMOS_GPU_PRICE_PER_HOUR")
    # a pool of GPU hosts in one file (docs/hosts.md); unset: the single host above (COSMOS_HOST)
    hosts_file: Path | None = Field(None, validation_alias="COSMOS_HOSTS_FILE")
    # a run out of GPU memory is retried once, as a new run, with the model's offload flags (runs/oom.py)
    oom_retry_offload: bool = Field(False, validation_alias="COSMOS_OOM_RETRY_OFFLOAD")
    # the run holding a free host takes the prompts waiting for it into one invocation (docs/batching.md): it waits
    # at most this many seconds for them, and runs at most this many prompts in one invocation (1: off)
    batch_window: float = Field(10.0, ge=0, le=3600, validation_alias="COSMOS_BATCH_WINDOW")
    batch_max: int = Field(16, ge=1, le=256, validation_alias="COSMOS_BATCH_MAX")
    # the resident model service (docs/serving.md): auto serves what the serving app can finish, never/always
    serve: Literal["auto", "always", "never"] = Field("auto", validation_alias="COSMOS_SERVE")
    serve_idle_minutes: float = Field(15.0, gt=0, le=SECONDS_PER_DAY / 60, validation_alias="COSMOS_SERVE_IDLE_MINUTES")
    serve_load_minutes: float = Field(60.0, gt=0, le=SECONDS_PER_DAY / 60, validation_alias="COSMOS_SERVE_LOAD_MINUTES")

    # sensors
    sensors: bool = Field(False, validation_alias="COSMOS_SENSORS")
    sensor_interval: int = Field(30, ge=1, le=SECONDS_PER_DAY, validation_alias="COSMOS_SENSOR_INTERVAL")
    render_settle_seconds: float = Field(30.0, ge=0, validation_alias="COSMOS_RENDER_SETTLE_SECONDS")
    auto_generate: bool = Field(False, validation_alias="COSMOS_AUTO_GENERATE")
    render_scan_budget: int = Field(200, ge=1, le=MAX_FOLDERS_PER_TICK, validation_alias="COSMOS_RENDER_SCAN_BUDGET")
    render_deep_checks: int = Field(100, ge=0, le=MAX_FOLDERS_PER_TICK, validation_alias="COSMOS_RENDER_DEEP_CHECKS")
    # run priority of the sensors' runs: urgent, high, normal, low, backfill/wedge or an integer (docs/hosts.md)
    sensor_priority: int = Field(0, validation_alias="COSMOS_SENSOR_PRIORITY")

    @field_validator("sensor_priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return parse_priority(value) if isinstance(value, str) else value

    @field_validator("trust_on_first_use", "sensors", "auto_generate", "oom_retry_offload", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        return _on_off(value)

    @field_validator("host", "model", "serve", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        return canonical_name(value) if value else value

    def serve_defaults(self) -> dict[str, Any]:
        """The model service settings every SSH host takes unless its pool-file entry says otherwise."""
        return {
            "serve": self.serve,
            "serve_idle_minutes": self.serve_idle_minutes,
            "serve_load_minutes": self.serve_load_minutes,
        }

    def model_places(self) -> tuple[dict[str, str], dict[str, str]]:
        """(checkouts, images) of the newer models that are set, by backend name."""
        dirs = {"cosmos-transfer2.5": self.remote_dir_transfer2_5, "cosmos3": self.remote_dir_cosmos3}
        images = {"cosmos-transfer2.5": self.docker_image_transfer2_5, "cosmos3": self.docker_image_cosmos3}
        return {k: v for k, v in dirs.items() if v}, {k: v for k, v in images.items() if v}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings from the environment (or ``env``); a bad value raises :class:`SettingsError` naming it."""
        try:
            if env is None:
                return cls()
            return cls.model_validate({name: value for name, value in env.items() if value.strip()})
        except ValidationError as error:
            raise settings_error(error, env) from None

    @property
    def root(self) -> Path:
        return (self.project_root or Path(os.getcwd())).resolve()

    @property
    def model_name(self) -> str:
        """The model backend to run: COSMOS_MODEL, else the host's natural one."""
        return self.model or ("preview" if self.host == "preview" else "cosmos-transfer1")

    @property
    def image(self) -> str:
        """DOCKER_IMAGE, else the seed's default ``nvcr.io/$USER/cosmos-transfer1:latest``."""
        return self.docker_image or f"nvcr.io/{os.environ.get('USER', 'cosmos')}/cosmos-transfer1:latest"

    @property
    def checkpoint_dir_or_default(self) -> str:
        """CHECKPOINT_DIR_REMOTE, else the seed's default ``REMOTE_DIR/../checkpoints``."""
        return self.checkpoint_dir or default_checkpoint_dir(self.remote_dir)


def settings_error(
    error: ValidationError, env: Mapping[str, str] | None = None, names: Mapping[str, str] | None = None
) -> SettingsError:
    """One line per refused variable (its first problem), from the errors of :class:`Settings` or, with ``names``
    mapping field paths to variables (:data:`RESOURCE_VARIABLES`), of a resource built from the settings."""
    env = env if env is not None else os.environ
    lines: dict[str, str] = {}
    for problem in error.errors():
        loc = [str(part) for part in problem["loc"]]
        name = _variable(loc, names) if loc else "a setting"
        if name in lines:
            continue
        if names is not None:  # the value the resource got from that variable (none shown for an unmapped field)
            raw = problem.get("input") if name in names.values() and isinstance(problem.get("input"), str) else None
        else:
            raw = env.get(name)
        shown = "" if raw is None else f"={raw!r}" if len(raw) <= 80 else f"={raw[:77]!r}..."
        message = problem["msg"].removeprefix("Value error, ")
        lines[name] = f"{name}{shown}: {message}; fix the variable (see the README's settings table)"
    return SettingsError(list(lines.values()) or ["the settings were refused; see the README's settings table"])


def _variable(loc: list[str], names: Mapping[str, str] | None) -> str:
    if names is None:
        return loc[0]
    return names.get(".".join(loc[:2])) or names.get(loc[0]) or loc[0]
