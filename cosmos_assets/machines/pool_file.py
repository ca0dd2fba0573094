"""The GPU host pool file (``COSMOS_HOSTS_FILE``): every host runs may go to, in one file the user edits.

YAML (``.yaml``/``.yml``) or TOML (``.toml``); the form, with every field, is in docs/hosts.md. Dagster-free. Secrets
are never in the file: a host names the environment variable holding its Hugging Face token (``hf_token_env``), and
the SSH key's passphrase is read by name where the key is opened. A bad file fails with one line naming the file, the
host and the field, and the fix.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cosmos_assets.files import UnsafeReadError, printable_path, read_bounded
from cosmos_assets.models.names import canonical_name
from cosmos_assets.redaction import is_secret_name

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SSH_TARGET = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?$"
)
LOCAL = "local"
"""The ``ssh`` value that means this machine (the preview backend as a plain process, no GPU)."""
MAX_FILE_BYTES = 1024 * 1024
"""A pool file is a few kilobytes; anything larger (or not a regular file) is refused before it is read."""
RESOURCE_FIELDS = {"host": "ssh", "user": "ssh", "port": "ssh", "key_file": "ssh_key", "docker_image": "image",
                   "checkpoint_dir": "checkpoints", "docker_gpus": "gpus"}  # fmt: skip
"""The pool-file field behind each field of the host resource and its machine models (the rest share their name)."""


class PoolFileError(ValueError):
    """The host pool file cannot be used; the message names the file, host and field, and the fix."""


class HostEntry(BaseModel):
    """One host of the pool: where it is, what it runs, and what a GPU hour there costs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(description="Short name shown in logs, metadata, the run history and Dagster's concurrency page.")
    ssh: str = Field(description="'[user@]host[:port]' or an alias from ~/.ssh/config; 'local' for this machine.")
    remote_dir: str = Field(default="~/cosmos-transfer1", description="REMOTE_DIR on that host (the model's checkout).")
    checkpoints: str | None = Field(
        default=None, description="CHECKPOINT_DIR_REMOTE; default REMOTE_DIR/../checkpoints."
    )
    image: str | None = Field(default=None, description="DOCKER_IMAGE; default cosmos-transfer1:latest.")
    gpus: str = Field(default="all", description="COSMOS_DOCKER_GPUS: 'all', 'none' or device ids '0,1'.")
    models: list[str] = Field(
        default_factory=lambda: ["cosmos-transfer1"],
        description="Model backends this host has (checkpoints and image): a run goes only to a host that has its model.",
    )
    price_per_gpu_hour: float | None = Field(
        default=None, ge=0, description="What one GPU hour costs here (any currency)."
    )
    ssh_key: str | None = Field(default=None, description="Private key file; default from ~/.ssh/config.")
    known_hosts: str | None = Field(default=None, description="known_hosts file; default ~/.ssh/known_hosts.")
    ssh_config: str | None = Field(default=None, description="ssh config file; default ~/.ssh/config.")
    trust_on_first_use: bool = False
    container_user: str | None = None
    container_env: dict[str, str] = Field(default_factory=dict, description="Extra non-secret container variables.")
    hf_token_env: str | None = Field(
        default="HF_TOKEN", description="NAME of the environment variable holding the HF token."
    )
    min_free_gb: float = Field(default=20.0, ge=0)
    model_dirs: dict[str, str] = Field(default_factory=dict, description="Checkout of each newer model on this host.")
    model_images: dict[str, str] = Field(
        default_factory=dict, description="Docker image of each newer model on this host."
    )
    reconnect_attempts: int = Field(default=6, ge=0, le=100)
    busy_wait_minutes: float = Field(
        default=60.0,
        ge=0,
        description="How long a run waits for a model container "
        "of ours already running here (whoever started it) before trying another host.",
    )
    enabled: bool = Field(default=True, description="false: kept in the file, given no runs.")
    serve: Literal["auto", "always", "never"] | None = Field(
        default=None,
        description="Cosmos 3 through this host's resident model service; default COSMOS_SERVE (docs/serving.md).",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 63), starting with a letter or digit")
        return value

    @field_validator("ssh")
    @classmethod
    def _target(cls, value: str) -> str:
        match = _SSH_TARGET.match(value)
        if value != LOCAL and not match:
            raise ValueError("is not '[user@]host[:port]', an ~/.ssh/config alias, or 'local'")
        if match and match["port"] and not 0 < int(match["port"]) < 65536:
            raise ValueError(f"port {match['port']} is not a TCP port (1 to 65535)")
        return value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one model backend (preview, cosmos-transfer1, cosmos-transfer2.5, cosmos3)")
        return list(dict.fromkeys(canonical_name(name) for name in value))

    @field_validator("remote_dir", "checkpoints", "ssh_key", "known_hosts", "ssh_config")
    @classmethod
    def _plain_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ValueError("is empty or holds a control character (a line break, a NUL); give a path")
        return value

    @field_validator("container_env")
    @classmethod
    def _no_secret_values(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if is_secret_name(name):
                raise ValueError(
                    f"{name} looks like a secret: secrets never go in this file; name its variable in hf_token_env"
                )
        return value

    @model_validator(mode="after")
    def _local_runs_the_preview(self) -> HostEntry:
        if self.is_local and self.models != ["preview"]:
            raise ValueError("ssh: local runs only the preview backend: set models: [preview]")
        return self

    @property
    def is_local(self) -> bool:
        return self.ssh == LOCAL

    def ssh_parts(self) -> tuple[str | None, str, int | None]:
        """(user, host or alias, port) of ``ssh``."""
        match = _SSH_TARGET.match(self.ssh)
        assert match is not None  # checked on the way in
        port = int(match["port"]) if match["port"] else None
        return match["user"], match["host"].strip("[]"), port

    def has(self, model: str) -> bool:
        return model in self.models


class HostPoolFile(BaseModel):
    """The whole file: its hosts, tried in file order (put the ones you prefer, e.g. the cheapest, first)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    hosts: list[HostEntry] = Field(min_length=1)
    default_model: str | None = Field(
        default=None,
        description="Model when neither the run nor the prompt names one; "
        "default COSMOS_MODEL, else the first host's first model.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> HostPoolFile:
        seen: set[str] = set()
        for host in self.hosts:
            if host.name in seen:
                raise ValueError(f"two hosts are named {host.name!r}: give each a name of its own")
            seen.add(host.name)
        if not self.enabled:
            raise ValueError("every host has enabled: false; enable at least one")
        return self

    @property
    def enabled(self) -> list[HostEntry]:
        return [host for host in self.hosts if host.enabled]

    def model_or_default(self, configured: str | None) -> str:
        return configured or self.default_model or self.enabled[0].models[0]


def load_host_pool(path: Path) -> HostPoolFile:
    """The pool file at ``path``; :class:`PoolFileError` (one line: file, host, field, fix) when it cannot be used."""
    try:
        text = read_bounded(path, MAX_FILE_BYTES, "COSMOS_HOSTS_FILE").decode("utf-8")
    except UnsafeReadError as error:
        raise PoolFileError(f"{error}, or unset COSMOS_HOSTS_FILE for the single-host settings") from None
    except UnicodeDecodeError as error:
        raise PoolFileError(
            f"COSMOS_HOSTS_FILE {printable_path(path)}: not UTF-8 text ({error.reason}); save it as UTF-8"
        ) from None
    except OSError as error:
        raise PoolFileError(
            f"COSMOS_HOSTS_FILE {printable_path(path)}: cannot read it ({error.strerror or error}); "
            "fix the path or unset COSMOS_HOSTS_FILE for the single-host settings"
        ) from None
    try:
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        where = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PoolFileError(
            f"{printable_path(path)}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'} ({where})"
        ) from None
    if not isinstance(data, dict):
        raise PoolFileError(f"{printable_path(path)}: expected a mapping with a 'hosts' list (see docs/hosts.md)")
    try:
        return HostPoolFile.model_validate(data)
    except ValidationError as error:
        raise PoolFileError(_one_line(path, data, error)) from None


def _one_line(path: Path, data: dict[str, Any], error: ValidationError) -> str:
    first = error.errors()[0]
    loc = list(first["loc"])
    where = ".".join(str(part) for part in loc) or "(top level)"
    if len(loc) >= 2 and loc[0] == "hosts" and isinstance(loc[1], int):
        hosts = data.get("hosts") or []
        entry = hosts[loc[1]] if loc[1] < len(hosts) and isinstance(hosts[loc[1]], dict) else {}
        field = ".".join(str(part) for part in loc[2:]) or "(the entry)"
        name = str(entry.get("name", "#" + str(loc[1] + 1)))
        where = f"host {name if name.isprintable() else repr(name)}, field {field}"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{printable_path(path)}: {where}: {message}{more}; fix the file (docs/hosts.md)"


def entry_error(path: Path | str, entry: HostEntry, error: ValidationError) -> PoolFileError:
    """One line naming the file, the host and its field, for what the host's resource refused of ``entry``."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    field = ".".join([RESOURCE_FIELDS.get(loc[0], loc[0]), *loc[1:]]) if loc else "(the entry)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return PoolFileError(
        f"{printable_path(path)}: host {entry.name}, field {field}: {message}{more}; fix the file (docs/hosts.md)"
    )
