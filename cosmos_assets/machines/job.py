"""What a machine is asked to run: the contract between "what model runs" and "where it runs".

A model backend (:mod:`cosmos_assets.models`) turns a prompt into an :class:`Invocation` (argv from the
model's root folder, the files it needs there, where it writes); the run (:mod:`cosmos_assets.runs`)
wraps it in an :class:`InferenceJob` with the run's identity and the files to stage; a machine
(:mod:`cosmos_assets.machines`) runs it and answers with a :class:`RunOutcome`. Nothing here knows a
particular model or a particular machine.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LogLine = Callable[[str], None]
Stage = Literal["generate", "upscale"]


class HostNotReadyError(RuntimeError):
    """Preflight (or the start of a run) found something missing; the message says what and how to fix it."""


# What a machine reached over a network raises, whatever its kind (an SSH host today): the run's causes and the host
# placement tell them apart without loading the transport (paramiko).
class HostUnreachableError(HostNotReadyError):
    """The connection could not be made (network, auth); worth retrying, unlike a host-key refusal."""


class HostLinkLostError(RuntimeError):
    """The link stayed down through every reconnect attempt; a detached container may still be running."""


class LinkDropped(Exception):
    """The link broke under a command; the machine reconnects and runs it again (``SshLink.with_reconnect``)."""


def relative_inside(value: str, what: str) -> str:
    """``value`` when it is a relative path that stays inside its root; ValueError naming ``what`` otherwise."""
    if not value or not value.strip():
        raise ValueError(f"{what} is empty")
    if value.startswith("/"):
        raise ValueError(f"{what} {value!r} is absolute; give it relative to the model's root folder")
    normal = posixpath.normpath(value)
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"{what} {value!r} leaves the model's root folder through '..'")
    return value


class StagedFile(BaseModel):
    """A local file and where it goes, relative to the machine's model root (``REMOTE_DIR``)."""

    local: Path
    remote: str

    @field_validator("remote")
    @classmethod
    def _inside(cls, v: str) -> str:
        return relative_inside(v, "staged file")


class ServedCall(BaseModel):
    """The same run as a request to the model's own serving app (machines/model_service.py), when it has one."""

    model_config = ConfigDict(frozen=True)

    service_argv: tuple[str, ...] = Field(
        description="the serving app's command, without -o (the service adds its own folder)"
    )
    entry_point: str = Field(description="the serving app's file in the checkout (without it the run is one-shot)")
    request: dict[str, Any] = Field(description="the POST /generate body (the app's request model)")
    fits: bool = Field(description="whether the app can finish it within its own request limit (the estimate below)")
    why: str = Field(description="why it fits or not, in one line, for the run log and the record")
    estimate_seconds: float | None = None


class Serving(BaseModel):
    """Which served a run: the resident model service (and which container, and its load if this run paid it),
    or a one-shot container, and why."""

    mode: Literal["served", "one-shot"]
    reason: str
    service_container: str | None = None
    service_id: str | None = Field(default=None, description="the service container's docker id (12 hex)")
    load_seconds: float | None = Field(
        default=None, description="the model load this run waited for; None: loaded already"
    )
    restarted: str | None = Field(default=None, description="why the service was restarted during this run, if it was")


class Invocation(BaseModel):
    """One run of a model's entry point, as its backend describes it. Paths are relative to the model root."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(description="backend name: 'preview', 'cosmos-transfer1', ...")
    argv: tuple[str, ...] = Field(description="the command run from the model root (python3 ... or torchrun ...)")
    entry_point: str = Field(description="the program the argv runs; the preflight checks it is on the machine")
    output_folder: str = Field(description="where the run writes its outputs")
    num_gpus: int = 1
    env: dict[str, str] = Field(default_factory=dict, description="non-secret variables the program needs")
    checkpoints: tuple[str, ...] = Field(default=(), description="paths under the checkpoint folder that must exist")
    needs_gpu: bool = Field(default=True, description="False for the preview backend: no GPU check, no --gpus")
    guardrail_marker: str | None = Field(default=None, description="a log line holding this means a guardrail block")
    settings: dict[str, Any] = Field(default_factory=dict, description="the backend's own settings, recorded as given")
    cache_dirs: dict[str, str] = Field(
        default_factory=dict,
        description="download caches mounted writable: host folder relative to the checkpoint folder -> absolute "
        "container path (HF_HOME, UV_CACHE_DIR...; the model downloads its checkpoints there once)",
    )

    cache_free_gb: float = Field(default=0.0, description="free disk the caches need for a first download")
    gpu_memory_gb: float = Field(
        default=0.0, description="memory each GPU needs by the model's documented figures (0: no check)"
    )
    gpu_memory_source: str = Field(
        default="", description="that figure as published and where (named when a host is refused)"
    )
    revision_files: dict[str, str] = Field(
        default_factory=dict,
        description="Hugging Face repository -> its cache's refs/main file, relative to the "
        "checkpoint folder: the commit the checkpoint resolved to is read there after the run",
    )
    pinned_revisions: dict[str, str] = Field(
        default_factory=dict,
        description="repository -> the commit it must resolve to on the host (refused before the run otherwise)",
    )

    @field_validator("revision_files")
    @classmethod
    def _revision_files(cls, v: dict[str, str]) -> dict[str, str]:
        for path in v.values():
            relative_inside(path, "revision file")
        return v

    served: ServedCall | None = Field(default=None, description="the run as a request to the model's serving app")

    @field_validator("entry_point", "output_folder")
    @classmethod
    def _inside(cls, v: str) -> str:
        return relative_inside(v, "path")

    @field_validator("cache_dirs")
    @classmethod
    def _cache_dirs(cls, v: dict[str, str]) -> dict[str, str]:
        for host, container in v.items():
            relative_inside(host, "cache folder")
            if not container.startswith("/") or ":" in container or "," in container:
                raise ValueError(
                    f"cache folder {host}: container path {container!r} must be absolute, without ':' or ','"
                )
        return v


class InferenceJob(BaseModel):
    """One invocation of a model on a machine, with the identity of the run it belongs to."""

    run_id: str
    dagster_run_id: str | None = None
    stage: Stage
    prompt: str
    invocation: Invocation
    inputs: list[StagedFile]
    project_root: Path | None = Field(
        default=None,
        description="the project the inputs come from: the preflight "
        "refuses a model root whose staged paths would land on its files",
    )

    @property
    def output_folder(self) -> str:
        return self.invocation.output_folder


class RunOutcome(BaseModel):
    """What the machine saw of one invocation."""

    exit_code: int
    command: list[str]
    container: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime
    log_tail: list[str] = Field(default_factory=list)
    guardrail_blocked: bool = False
    serving: Serving | None = None

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()
