"""Where things live: the seed's working folders under one project root.

The layout is the seed repository's (``art/``, ``inputs/videos``, ``inputs/prompts``, ``outputs``,
``notes``), so an artist's existing project works as it is. The root is the settings' ``COSMOS_PROJECT_ROOT``
(:class:`cosmos_assets.settings.Settings`), else the current directory.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

MAX_NAME_BYTES = 200
"""Longest shot or prompt name (UTF-8 bytes): room under the 255-byte file-name limit for ``_upscaled``,
``.json``, timestamps and temp-file affixes."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a shot or prompt name (a folder/file name under the project and a partition key).

    Spaces, quotes, ``$``, ``;`` and a leading ``-`` are fine: names only ever reach argv lists and quoted paths.
    """
    if not name:
        return "is empty"
    if name.startswith("."):
        return "starts with '.' ('.', '..' and hidden names such as outputs/.runs are reserved)"
    if "/" in name or "\\" in name:
        return "holds a path separator ('/' or '\\')"
    if not name.isprintable():
        return "holds a control or non-printable character (or bytes that are not UTF-8)"
    if "..." in name:
        return "holds '...' (Dagster reads it as a partition range)"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_name(name: str, what: str) -> str:
    """``name`` if it can be a shot or prompt name; ValueError naming ``what`` and the fix otherwise."""
    problem = name_problem(name)
    if problem:
        shown = repr(name) if len(name) <= 80 else f"{name[:60]!r}... ({len(name)} characters)"
        raise ValueError(f"{what} name {shown} {problem}; rename it (its folder, file or partition key)")
    return name


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
        return self.renders_dir / check_name(shot, "shot")

    def shot_videos_dir(self, shot: str) -> Path:
        return self.videos_dir / check_name(shot, "shot")

    def prompt_file(self, prompt: str) -> Path:
        return self.prompts_dir / f"{check_name(prompt, 'prompt')}.json"

    def output_dir(self, prompt: str) -> Path:
        return self.outputs_dir / check_name(prompt, "prompt")

    def upscaled_dir(self, prompt: str) -> Path:
        return self.outputs_dir / f"{check_name(prompt, 'prompt')}_upscaled"

    def shot_names(self) -> list[str]:
        """Render folders that hold at least one colour frame and whose name is usable (:func:`name_problem`), sorted."""
        if not self.renders_dir.is_dir():
            return []
        return sorted(
            d.name
            for d in self.renders_dir.iterdir()
            if name_problem(d.name) is None and d.is_dir() and any(d.glob("color.*.png"))
        )

    def prompt_names(self) -> list[str]:
        if not self.prompts_dir.is_dir():
            return []
        return sorted(p.stem for p in self.prompts_dir.glob("*.json") if name_problem(p.stem) is None)

    def ensure_working_folders(self) -> None:
        for folder in (self.renders_dir, self.videos_dir, self.prompts_dir, self.outputs_dir, self.notes_dir):
            folder.mkdir(parents=True, exist_ok=True)
