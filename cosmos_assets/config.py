"""Where things live: the seed's working folders under one project root.

The layout is the seed repository's (``art/``, ``inputs/videos``, ``inputs/prompts``, ``outputs``,
``notes``), so an artist's existing project works as it is. The root comes from
``COSMOS_PROJECT_ROOT`` or, failing that, the current directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

PROJECT_ROOT_ENV = "COSMOS_PROJECT_ROOT"


class ProjectLayout(BaseModel):
    """Paths of one project root; pure path arithmetic, nothing is created here."""

    model_config = ConfigDict(frozen=True)

    root: Path

    @classmethod
    def from_env(cls) -> "ProjectLayout":
        return cls(root=Path(os.environ.get(PROJECT_ROOT_ENV) or os.getcwd()).resolve())

    @property
    def renders_dir(self) -> Path:
        return self.root / "art" / "houdini" / "renders"

    @property
    def videos_dir(self) -> Path:
        return self.root / "inputs" / "videos"

    @property
    def prompts_dir(self) -> Path:
        return self.root / "inputs" / "prompts"

    @property
    def outputs_dir(self) -> Path:
        return self.root / "outputs"

    @property
    def previous_outputs_dir(self) -> Path:
        """Where an earlier run's output folder is moved when a new run of the same prompt lands."""
        return self.outputs_dir / ".previous"

    @property
    def staging_dir(self) -> Path:
        return self.outputs_dir / ".staging"

    @property
    def runs_dir(self) -> Path:
        """Where the run records live (``outputs/.runs/<run_id>.json``)."""
        return self.outputs_dir / ".runs"

    @property
    def notes_dir(self) -> Path:
        return self.root / "notes"

    @property
    def history_log(self) -> Path:
        return self.notes_dir / "run_history.log"

    def render_dir(self, shot: str) -> Path:
        return self.renders_dir / shot

    def shot_videos_dir(self, shot: str) -> Path:
        return self.videos_dir / shot

    def prompt_file(self, prompt: str) -> Path:
        return self.prompts_dir / f"{prompt}.json"

    def output_dir(self, prompt: str) -> Path:
        return self.outputs_dir / prompt

    def upscaled_dir(self, prompt: str) -> Path:
        return self.outputs_dir / f"{prompt}_upscaled"

    def shot_names(self) -> list[str]:
        """Render folders that hold at least one colour frame, sorted."""
        if not self.renders_dir.is_dir():
            return []
        return sorted(d.name for d in self.renders_dir.iterdir() if d.is_dir() and any(d.glob("color.*.png")))

    def prompt_names(self) -> list[str]:
        if not self.prompts_dir.is_dir():
            return []
        return sorted(p.stem for p in self.prompts_dir.glob("*.json") if not p.name.startswith("."))

    def ensure_working_folders(self) -> None:
        for folder in (self.renders_dir, self.videos_dir, self.prompts_dir, self.outputs_dir, self.notes_dir):
            folder.mkdir(parents=True, exist_ok=True)


def videos_rel(shot: str, modality: str) -> str:
    """A control video's path relative to the cosmos-transfer1 root (``/workspace`` in the container)."""
    return f"inputs/videos/{shot}/{modality}.mp4"


_TRUE = frozenset({"1", "on", "true", "yes"})
_FALSE = frozenset({"0", "off", "false", "no"})


def env_bool(name: str, default: bool = False, env: Mapping[str, str] | None = None) -> bool:
    """An on/off setting: on/off, true/false, yes/no, 1/0; unset or empty gives ``default``."""
    raw = (os.environ if env is None else env).get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not on/off (use on, off, true, false, 1 or 0)")


def env_number(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise ValueError(f"{name}={raw!r} is not a number") from error


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ValueError(f"{name}={raw!r} is not a whole number") from error


def num_gpus_from_env() -> int:
    """``NUM_GPU`` (the seed's GPUs per run), 1 when unset."""
    return _env_int("NUM_GPU", 1)


class RemoteSettings(BaseModel):
    """The seed's ``scripts/config.sh``, read from the environment (same variable names).

    Beyond the seed: ``COSMOS_DOCKER_GPUS`` (``all``, ``none`` for a host without the NVIDIA runtime,
    or device ids ``0,1``), ``COSMOS_KNOWN_HOSTS`` (default ``~/.ssh/known_hosts``),
    ``COSMOS_SSH_TRUST_ON_FIRST_USE`` (record an unknown host key instead of refusing),
    ``COSMOS_CONTAINER_USER`` (``uid:gid`` for the container; default: the remote user's, or the
    owner of REMOTE_DIR when the remote user is root) and ``COSMOS_MIN_FREE_GB`` (preflight's
    free-disk floor). The key passphrase and the HF token stay in the environment
    (``COSMOS_SSH_KEY_PASSPHRASE``, ``HF_TOKEN``) and are read where they are used, never stored here.
    """

    host: str | None = None
    user: str | None = None
    port: int | None = None
    ssh_key: str | None = None
    remote_dir: str = "~/cosmos-transfer1"
    checkpoint_dir: str | None = None
    docker_image: str = "nvcr.io/cosmos/cosmos-transfer1:latest"
    num_gpus: int = 1
    docker_gpus: str = "all"
    known_hosts: str | None = None
    trust_on_first_use: bool = False
    container_user: str | None = None
    min_free_gb: float = 20.0

    @classmethod
    def from_env(cls) -> "RemoteSettings":
        env = os.environ
        remote_dir = env.get("REMOTE_DIR") or cls.model_fields["remote_dir"].default
        return cls(
            host=env.get("REMOTE_HOST") or None,
            user=env.get("REMOTE_USER") or None,
            port=_env_int("REMOTE_PORT", 0) or None,
            ssh_key=env.get("SSH_KEY") or None,
            remote_dir=remote_dir,
            checkpoint_dir=env.get("CHECKPOINT_DIR_REMOTE") or None,
            docker_image=env.get("DOCKER_IMAGE") or f"nvcr.io/{env.get('USER', 'cosmos')}/cosmos-transfer1:latest",
            num_gpus=num_gpus_from_env(),
            docker_gpus=(env.get("COSMOS_DOCKER_GPUS") or "all").strip(),
            known_hosts=env.get("COSMOS_KNOWN_HOSTS") or None,
            trust_on_first_use=env_bool("COSMOS_SSH_TRUST_ON_FIRST_USE"),
            container_user=env.get("COSMOS_CONTAINER_USER") or None,
            min_free_gb=env_number("COSMOS_MIN_FREE_GB", cls.model_fields["min_free_gb"].default),
        )

    @property
    def checkpoint_dir_or_default(self) -> str:
        """``CHECKPOINT_DIR_REMOTE``, else the seed's default ``REMOTE_DIR/../checkpoints``."""
        return self.checkpoint_dir or f"{self.remote_dir.rstrip('/')}/../checkpoints"
