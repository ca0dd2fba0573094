"""Where things live: the seed's working folders under one project root.

The layout is the seed repository's (``art/``, ``inputs/videos``, ``inputs/prompts``, ``outputs``,
``notes``), so an artist's existing project works as it is. The root is the settings' ``COSMOS_PROJECT_ROOT``
(:class:`cosmos_assets.settings.Settings`), else the current directory.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

class ProjectLayout(BaseModel):
    """Paths of one project root; pure path arithmetic, nothing is created here."""

    model_config = ConfigDict(frozen=True)

    root: Path

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
