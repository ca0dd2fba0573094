"""What runs where on an SSH host: its model root and checkpoints, image, GPUs, container user and environment, free
disk floor, reconnects, the resident model service's settings and the wait for a busy engine. Checked when made (no
secret in the container environment; a GPU list and a user docker accepts)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cosmos_assets.machines.docker_run import parse_gpus
from cosmos_assets.machines.host_facts import parse_user
from cosmos_assets.redaction import is_secret_name


class SshHostSettings(BaseModel):
    """What runs where on an SSH host (no secrets here: they are passed to :class:`SshHost` by name and value)."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    remote_dir: str = Field(
        default="~/cosmos-transfer1", description="REMOTE_DIR: the model's code, mounted at /workspace"
    )
    checkpoint_dir: str | None = Field(
        default=None, description="CHECKPOINT_DIR_REMOTE; default REMOTE_DIR/../checkpoints"
    )
    docker_image: str = Field(description="DOCKER_IMAGE; built from REMOTE_DIR/Dockerfile when missing")
    docker_gpus: str = Field(default="all", description="'all', 'none' (no NVIDIA runtime) or device ids '0,1'")
    container_user: str | None = Field(
        default=None, description="uid:gid; default the remote user's, or REMOTE_DIR's owner for root"
    )
    container_env: dict[str, str] = Field(default_factory=dict, description="extra non-secret container variables")
    min_free_gb: float = Field(default=20.0, description="preflight: free space needed on REMOTE_DIR's disk")
    reconnect_attempts: int = Field(
        default=6,
        ge=0,
        description="reconnects tried in a row (with backoff) when the link "
        "drops; once data flows again the count starts over",
    )
    name: str | None = Field(default=None, description="host name in tags and metadata; default ssh@<host>")
    serve: Literal["auto", "always", "never"] = (
        "auto"  # COSMOS_SERVE* (docs/serving.md); 360 s without an answer: wedged
    )
    serve_idle_minutes: float = Field(default=15.0, gt=0)
    serve_load_minutes: float = Field(default=60.0, gt=0)
    serve_request_seconds: float = Field(default=360.0, gt=0)
    busy_wait_minutes: float = Field(
        default=60.0,
        ge=0,
        description="COSMOS_HOST_BUSY_WAIT_MINUTES: how long a run "
        "waits for a model container of ours already running on the host",
    )

    @field_validator("docker_gpus")
    @classmethod
    def _valid_gpus(cls, v: str) -> str:
        parse_gpus(v)
        return v

    @field_validator("container_user")
    @classmethod
    def _valid_user(cls, v: str | None) -> str | None:
        if v is not None:
            parse_user(v)
        return v

    @field_validator("container_env")
    @classmethod
    def _no_secrets_in_env(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if is_secret_name(name):
                raise ValueError(f"container_env {name}: secrets do not go in config; set hf_token=dg.EnvVar(...)")
        return v
