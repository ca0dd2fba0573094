"""The exact host command: transfer.py argv (python3 or torchrun) and the `docker run` argv around it.

Everything here returns argv lists; `shell_join` is the only way a list becomes a shell string, and it
quotes every element. Secrets never enter an argv: they go to docker as `-e NAME` and their values travel
in the docker client's environment (`secret_env`).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENTRY_POINT = "cosmos_transfer1/diffusion/inference/transfer.py"
CONTAINER_ROOT = "/workspace"
CONTAINER_CHECKPOINTS = "/workspace/checkpoints"
VALID_GPU_COUNTS = (1, 2, 4, 8, 16)
OFFLOAD_FLAGS = (
    "offload_diffusion_transformer", "offload_text_encoder_model", "offload_guardrail_models",
    "offload_prompt_upsampler",
)  # fmt: skip
# Always on the command line, so a spec's top-level key of the same name never overrides them.
ALWAYS_PASSED_FLAGS = frozenset({"controlnet_specs", "video_save_folder", "video_save_name", "checkpoint_dir", "num_gpus"})
# Flags the invocation sets through its own fields; `extra` may not set them a second time.
RESERVED_FLAGS = ALWAYS_PASSED_FLAGS | {"num_steps", *OFFLOAD_FLAGS}

FlagValue = str | int | float | bool


# ---------------------------------------------------------------------------------------------------------
# The CLI contract (transfer_cli.json)


class CliFlag(BaseModel):
    """One argument of transfer.py as listed in transfer_cli.json."""

    model_config = ConfigDict(frozen=True)

    name: str  # without the leading "--"
    type: Literal["str", "int", "float", "flag"]
    default: Any = None
    choices: tuple[Any, ...] | None = None
    required: bool = False


@lru_cache(maxsize=1)
def cli_contract() -> dict[str, Any]:
    """The parsed transfer_cli.json shipped in cosmos_assets/contract/."""
    text = resources.files("cosmos_assets").joinpath("contract/transfer_cli.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def cli_flags() -> dict[str, CliFlag]:
    """transfer.py's flags by name (no leading dashes)."""
    flags = {}
    for dashed, info in cli_contract()["arguments"].items():
        name = dashed.removeprefix("--")
        choices = info.get("choices")
        flags[name] = CliFlag(
            name=name,
            type=info["type"],
            default=info.get("default"),
            choices=tuple(choices) if choices is not None else None,
            required=bool(info.get("required", False)),
        )
    return flags


def flag_value_problem(name: str, value: Any) -> str | None:
    """Why `value` is not a valid value for transfer.py's `--name`, or None when it is.

    Values are checked as JSON/Python types, not strings: a spec's top-level scalars reach transfer.py's
    args through setattr, bypassing argparse's type conversion, so "7" for an int flag would stay a string.
    """
    flag = cli_flags().get(name)
    if flag is None:
        return f"--{name} is not a flag of {ENTRY_POINT}"
    if flag.type == "flag":
        ok = isinstance(value, bool)
        expected = "true or false (an on/off switch)"
    elif flag.type == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "a whole number"
    elif flag.type == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    else:
        ok = isinstance(value, str)
        expected = "text"
    if not ok:
        return f"--{name} takes {expected}, not {json.dumps(value)}"
    if flag.choices is not None and value not in flag.choices:
        listed = ", ".join(json.dumps(c) for c in flag.choices)
        return f"--{name} must be one of {listed}, not {json.dumps(value)}"
    return None


# ---------------------------------------------------------------------------------------------------------
# transfer.py invocation


def _container_relative(value: str, what: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{what} is empty")
    if value.startswith("/"):
        raise ValueError(
            f"{what} {value!r} is absolute; give it relative to the cosmos-transfer1 root ({CONTAINER_ROOT})"
        )
    normal = posixpath.normpath(value)
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"{what} {value!r} leaves the cosmos-transfer1 root ({CONTAINER_ROOT}) through '..'")
    if value.startswith("-"):
        raise ValueError(f"{what} {value!r} starts with '-', which argparse would read as a flag")
    return value


def _normalise_flag_name(name: str) -> str:
    return name.removeprefix("--")


class TransferInvocation(BaseModel):
    """One run of transfer.py, with paths relative to /workspace (the cosmos-transfer1 root)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec_path: str
    video_save_folder: str
    video_save_name: str = "output"
    checkpoint_dir: str = "./checkpoints"
    num_gpus: int = 1
    # The seed's defaults: text encoder and guardrail offloaded, the rest kept in GPU memory.
    offload_diffusion_transformer: bool = False
    offload_text_encoder_model: bool = True
    offload_guardrail_models: bool = True
    offload_prompt_upsampler: bool = False
    num_steps: int | None = None
    extra: dict[str, FlagValue] = Field(default_factory=dict)

    @field_validator("spec_path")
    @classmethod
    def _spec_path_relative(cls, v: str) -> str:
        return _container_relative(v, "spec_path")

    @field_validator("video_save_folder")
    @classmethod
    def _save_folder_relative(cls, v: str) -> str:
        return _container_relative(v, "video_save_folder")

    @field_validator("checkpoint_dir")
    @classmethod
    def _checkpoint_dir_relative(cls, v: str) -> str:
        return _container_relative(v, "checkpoint_dir")

    @field_validator("video_save_name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or "/" in v or v in (".", "..") or v.startswith("-"):
            raise ValueError(f"video_save_name {v!r} must be a plain file name without '/' (the .mp4 is added)")
        return v

    @field_validator("num_gpus")
    @classmethod
    def _gpus_divide_16(cls, v: int) -> int:
        if v not in VALID_GPU_COUNTS:
            raise ValueError(
                f"num_gpus = {v}: Cosmos-Transfer1 splits the latent time axis across GPUs (context "
                "parallelism), so the GPU count must divide 16; use 1, 2, 4, 8 or 16"
            )
        return v

    @field_validator("num_steps")
    @classmethod
    def _positive_steps(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"num_steps = {v}: use at least 1 (upstream default 35, the 4K upscaler uses 10)")
        return v

    @field_validator("extra", mode="before")
    @classmethod
    def _extra_flags(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v
        out: dict[str, Any] = {}
        for raw_name, value in v.items():
            name = _normalise_flag_name(str(raw_name))
            if name in RESERVED_FLAGS:
                raise ValueError(f"extra --{name}: set it through the TransferInvocation field {name!r} instead")
            problem = flag_value_problem(name, value)
            if problem:
                raise ValueError(f"extra: {problem}")
            if isinstance(value, str) and value.startswith("-"):
                # transfer.py must see "--key value" (see FACTS), and argparse reads a value starting
                # with "-" as the next flag.
                raise ValueError(f"extra --{name} {value!r}: a value starting with '-' would be read as a flag")
            out[name] = value
        return out

    @property
    def uses_torchrun(self) -> bool:
        # --upsample_prompt reads RANK, which only torchrun sets: plain python3 fails with it.
        return self.num_gpus > 1 or self.extra.get("upsample_prompt") is True


def _format_value(value: FlagValue) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _flag_args(inv: TransferInvocation) -> list[str]:
    args = [
        "--checkpoint_dir", inv.checkpoint_dir,
        "--video_save_folder", inv.video_save_folder,
        "--video_save_name", inv.video_save_name,
        "--controlnet_specs", inv.spec_path,
    ]  # fmt: skip
    if inv.num_steps is not None:
        args += ["--num_steps", str(inv.num_steps)]
    args += [f"--{name}" for name in OFFLOAD_FLAGS if getattr(inv, name)]
    for name, value in inv.extra.items():
        if value is True:
            args.append(f"--{name}")
        elif value is not False:
            args += [f"--{name}", _format_value(value)]
    # Always explicit, even for 1 GPU: a spec's top-level "num_gpus" would otherwise override the default.
    args += ["--num_gpus", str(inv.num_gpus)]
    return args


def transfer_argv(inv: TransferInvocation) -> list[str]:
    """argv of transfer.py run from /workspace: python3 for one GPU, torchrun for several or --upsample_prompt."""
    if inv.uses_torchrun:
        launcher = ["torchrun", f"--nproc_per_node={inv.num_gpus}", "--nnodes=1", "--node_rank=0"]
    else:
        launcher = ["python3"]
    return [*launcher, ENTRY_POINT, *_flag_args(inv)]


# ---------------------------------------------------------------------------------------------------------
# docker run

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSPHRASE", "CREDENTIAL")
_PATH_LIKE_SUFFIXES = ("PATH", "_DIR", "_FILE")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret (HF_TOKEN, AWS_SECRET_ACCESS_KEY...).

    Names with KEY are secret unless they look like a path (SSH_KEY_PATH, KEY_FILE): those hold a location.
    """
    upper = name.upper()
    if any(word in upper for word in _SECRET_WORDS):
        return True
    return "KEY" in upper and not upper.endswith(_PATH_LIKE_SUFFIXES)


def _host_path(value: str, what: str) -> str:
    if not value.startswith("/"):
        raise ValueError(
            f"{what} {value!r} must be an absolute path on the GPU host (docker -v needs one; expand ~ first)"
        )
    if ":" in value or "," in value:
        raise ValueError(f"{what} {value!r} contains ':' or ',', which docker -v reads as separators")
    # The seed's default checkpoint folder is REMOTE_DIR/../checkpoints: give docker the clean path.
    return posixpath.normpath(value)


class DockerRunSettings(BaseModel):
    """How the Cosmos container is started on the GPU host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str
    container_name: str
    remote_dir: str  # host path of the cosmos-transfer1 checkout, mounted at /workspace
    checkpoint_dir_host: str  # host path mounted at /workspace/checkpoints
    uid: int | None = None
    gid: int | None = None
    gpus: Literal["all"] | tuple[int | str, ...] | None = "all"
    ipc: str | None = "host"
    shm_size: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)  # docker --label, to find a run's containers later
    detach: bool = True
    workdir: str = CONTAINER_ROOT

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not v or v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError(f"image {v!r} must be an image reference like nvcr.io/me/cosmos-transfer1:latest")
        return v

    @field_validator("container_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _CONTAINER_NAME.match(v):
            raise ValueError(f"container_name {v!r} must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (use container_name_for)")
        return v

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir(cls, v: str) -> str:
        return _host_path(v, "remote_dir")

    @field_validator("checkpoint_dir_host")
    @classmethod
    def _checkpoint_dir(cls, v: str) -> str:
        return _host_path(v, "checkpoint_dir_host")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        if isinstance(v, tuple):
            if not v:
                raise ValueError("gpus: give 'all', None, or at least one device id")
            for device in v:
                if not re.match(r"^[A-Za-z0-9-]+$", str(device)):
                    raise ValueError(f"gpus: device {device!r} must be an index or a GPU UUID")
        return v

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\d+[bkmgBKMG]?$", v):
            raise ValueError(f"shm_size {v!r} must look like 16g or 512m")
        return v

    @field_validator("ipc")
    @classmethod
    def _ipc(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9:_.-]+$", v):
            raise ValueError(f"ipc {v!r} must be a docker ipc mode such as host")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"env name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
            if name == "PYTHONPATH":
                raise ValueError("env PYTHONPATH is always /workspace (transfer.py imports cosmos_transfer1 from it)")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not re.match(r"^[a-z0-9][a-z0-9._-]*$", name):
                raise ValueError(f"label name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
            if "\n" in value or "\r" in value:
                raise ValueError(f"label {name}: value must be one line")
        return v

    @model_validator(mode="after")
    def _user(self) -> DockerRunSettings:
        if self.gid is not None and self.uid is None:
            raise ValueError("gid without uid: give uid too (docker -u uid:gid)")
        return self


def _gpus_arg(gpus: Literal["all"] | tuple[int | str, ...]) -> str:
    if gpus == "all":
        return "all"
    # docker parses --gpus as CSV: a device list needs literal double quotes around it.
    return '"device=' + ",".join(str(d) for d in gpus) + '"'


def secret_env(settings: DockerRunSettings) -> dict[str, str]:
    """Secret variables to set in the docker client's environment; the argv names them with `-e NAME` only."""
    return {name: value for name, value in settings.env.items() if is_secret_name(name)}


def docker_run_argv(settings: DockerRunSettings, inner_argv: Sequence[str]) -> list[str]:
    """`docker run ...` argv that runs `inner_argv` in the Cosmos container."""
    argv = ["docker", "run"]
    if settings.detach:
        argv.append("-d")
    argv += ["--name", settings.container_name]
    for name in sorted(settings.labels):
        argv += ["--label", f"{name}={settings.labels[name]}"]
    if settings.gpus is not None:
        argv += ["--gpus", _gpus_arg(settings.gpus)]
    if settings.ipc is not None:
        argv.append(f"--ipc={settings.ipc}")
    if settings.shm_size is not None:
        argv.append(f"--shm-size={settings.shm_size}")
    if settings.uid is not None:
        argv += ["-u", f"{settings.uid}:{settings.gid}" if settings.gid is not None else str(settings.uid)]
    argv += [
        "-v", f"{settings.remote_dir}:{CONTAINER_ROOT}",
        "-v", f"{settings.checkpoint_dir_host}:{CONTAINER_CHECKPOINTS}",
        "-w", settings.workdir,
        "-e", f"PYTHONPATH={CONTAINER_ROOT}",
    ]  # fmt: skip
    for name in sorted(settings.env):
        argv += ["-e", name if is_secret_name(name) else f"{name}={settings.env[name]}"]
    argv.append(settings.image)
    argv += list(inner_argv)
    return argv


def shell_join(argv: Sequence[str]) -> str:
    """One shell command line from argv, every element quoted."""
    return " ".join(shlex.quote(str(arg)) for arg in argv)


# ---------------------------------------------------------------------------------------------------------
# redaction

_ASSIGNMENT = re.compile(r"^(?P<prefix>-e|--env=|)(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.DOTALL)


def _redact_arg(arg: str) -> str:
    match = _ASSIGNMENT.match(arg)
    if match and is_secret_name(match["name"]):
        return f"{match['prefix']}{match['name']}=***"
    return arg


@overload
def redacted(value: Mapping[str, str]) -> dict[str, str]: ...
@overload
def redacted(value: str) -> str: ...
@overload
def redacted(value: Sequence[str]) -> list[str]: ...
def redacted(value: Mapping[str, str] | Sequence[str] | str) -> dict[str, str] | list[str] | str:
    """A copy with the values of secret-looking variables replaced by ***.

    Takes an environment mapping, an argv list, or a shell command line (re-quoted after redaction).
    """
    if isinstance(value, Mapping):
        return {name: "***" if is_secret_name(name) else v for name, v in value.items()}
    if isinstance(value, str):
        return shell_join([_redact_arg(arg) for arg in shlex.split(value)])
    return [_redact_arg(arg) for arg in value]


# ---------------------------------------------------------------------------------------------------------
# container names


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-_.")
    return slug[:limit].rstrip("-_.") or "x"


def container_name_for(run_id: str, partition_key: str, stage: str) -> str:
    """Deterministic, short, valid docker container name for one stage of one run of one partition."""
    digest = hashlib.sha256(f"{run_id}\0{partition_key}\0{stage}".encode()).hexdigest()[:10]
    # The digest keeps names unique when slugs collide or are cut; the readable parts are for `docker ps`.
    return f"cosmos-{_slug(stage, 12)}-{_slug(partition_key, 32)}-{_slug(run_id, 8)}-{digest}"
