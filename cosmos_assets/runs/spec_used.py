"""What a run's record names and ``spec_used.json`` repeats: every input by content (:class:`InputFile`), the shared
invocation a prompt ran in (:class:`BatchRef`), and ``spec_used.json`` itself (:class:`SpecUsed`), which is derived
from the run record (:meth:`cosmos_assets.runs.record.RunRecord.spec_used`) and never assembled separately."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from cosmos_assets.files import atomic_write_text
from cosmos_assets.machines.job import Stage
from cosmos_assets.redaction import redacted
from cosmos_assets.runs.ids import run_id_problem
from cosmos_assets.runs.record_rules import RecordFileError, read_bounded_text, validation_summary


class InputFile(BaseModel):
    """A file the run read, by content: where it sits under the model root, its size and sha256."""

    path: str
    size: int
    sha256: str


class BatchRef(BaseModel):
    """Where a prompt's run sat in a shared invocation (issue 11, batching; runs/batch.py, docs/batching.md)."""

    batch_id: str = Field(description="the invocation: outputs/.batches/<batch_id>/ locally and on the host")
    index: int = Field(description="this prompt's item in it (its line of the JSONL, its video_<index> folder)")
    items: int = Field(description="how many prompts the invocation ran")
    gpu_share: float = Field(default=1.0, ge=0, le=1, description="this prompt's share of the invocation's GPU time")
    follow_up_of: str | None = Field(default=None, description="the batch whose crash left this prompt unrun")
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="upstream's --batch_size of the invocation (None: "
        "written before it was kept); an orphaned batch is rebuilt with it (runs/batch_adopt.py)",
    )
    taken_for: str | None = Field(
        default=None,
        description="the Dagster run this prompt waited in when another run's "
        "invocation took it (runs/company.py); that run reports this run as its own",
    )


class SpecUsed(BaseModel):
    """``spec_used.json``: everything needed to reproduce one run, secrets redacted. Derived from the run record."""

    stage: Stage
    backend: str = Field(
        description="the model backend: 'preview' (a pipeline preview, not the model) or the model's name"
    )
    backend_label: str | None = None
    preview: bool | None = None
    run_id: str
    dagster_run_id: str | None = None
    prompt: str
    shot: str | None = None
    host: str
    command: list[str]
    command_line: str
    container: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any]
    spec_remote_path: str
    video_save_folder: str
    prompt_spec: dict[str, Any] | None = Field(
        default=None, description="the artist's prompt file `spec` was translated from"
    )
    inputs: list[InputFile] = Field(default_factory=list)
    batch: BatchRef | None = Field(
        default=None,
        description="the shared invocation it ran in (command, folder); "
        "`settings` are then the prompt's own, its identity for skipping",
    )
    started_at: datetime
    finished_at: datetime
    exit_code: int

    @classmethod
    def read(cls, path: Path) -> SpecUsed:
        """Load a run's ``spec_used.json``, its run id held to the rule of a record's (it names folders: the upscale
        stages its input under it); a missing or bad one is one line naming the file and which asset to materialize."""
        try:
            used = cls.model_validate_json(read_bounded_text(path))
            problem = run_id_problem(used.run_id)
        except RecordFileError as error:
            problem = str(error)
        except ValidationError as error:
            problem = validation_summary(error)
        if problem is None:
            return used
        raise FileNotFoundError(f"{path} is missing or bad: {problem}; materialize the asset first")

    def write(self, path: Path) -> None:
        """Write atomically; secrets in the environment and the command line are redacted first."""
        safe = self.model_copy(
            update={
                "environment": redacted(self.environment),
                "command": redacted(self.command),
                "command_line": redacted(self.command_line),
            }
        )
        atomic_write_text(path, safe.model_dump_json(indent=2) + "\n")
