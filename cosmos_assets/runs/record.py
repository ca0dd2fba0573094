"""The run: one durable record per model invocation, and the files derived from it.

A :class:`RunRecord` is written to ``outputs/.runs/<run_id>.json`` before anything is sent to a
machine and rewritten (atomically) at every change of state: planned, uploading, running,
downloading, then succeeded, failed, guardrail_blocked or cancelled. It names the host, the
container, the remote output folder, the model, the image, the spec and the content hashes of every
input, so a later attempt can find the run again after the process that started it died.
``spec_used.json`` (:class:`SpecUsed`), the ``notes/run_history.log`` line (``runs.history.HistoryRecord``)
and the asset metadata are all derived from it, never assembled separately. Secrets are redacted
before anything is stored.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from cosmos_assets.files import sha256_file
from cosmos_assets.machines.gpu_usage import GpuUsage
from cosmos_assets.machines.job import InferenceJob, RunOutcome, Serving, Stage
from cosmos_assets.progress import TransferStats
from cosmos_assets.redaction import redacted, redacted_message, shell_join
from cosmos_assets.runs.history import HistoryRecord, HistoryStatus, storable_text
from cosmos_assets.runs.spec_used import BatchRef, InputFile, SpecUsed

RunState = Literal[
    "planned", "uploading", "running", "downloading", "succeeded", "failed", "guardrail_blocked", "cancelled"
]
T = TypeVar("T")
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "guardrail_blocked", "cancelled"})


def utc_now() -> datetime:
    return datetime.now(UTC)


class RunRecord(BaseModel):
    """Everything known about one run, as it goes. Whatever is assigned is redacted on the way in."""

    model_config = ConfigDict(validate_assignment=True)

    run_id: str
    dagster_run_id: str | None = None
    stage: Stage
    prompt: str
    shot: str | None = None
    state: RunState = "planned"
    host: str
    runtime: str
    model: str
    model_label: str
    preview: bool = Field(description="True for the preview backend: a preview of the pipeline, not the model")
    remote_output_folder: str
    spec: dict[str, Any]
    spec_remote_path: str
    spec_sha256: str
    prompt_spec: dict[str, Any] | None = Field(
        default=None, description="the prompt file the backend translated `spec` from"
    )
    inputs: list[InputFile] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    num_gpus: int = 1
    command: list[str] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    container: dict[str, Any] = Field(default_factory=dict)
    # Aware times only: a record that names no zone cannot be ordered beside ours (sorting would raise for them all).
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    exit_code: int | None = None
    log_tail: list[str] = Field(default_factory=list)
    upload: TransferStats = Field(default_factory=TransferStats, description="the last upload; seconds: all attempts")
    download: TransferStats = Field(
        default_factory=lambda: TransferStats(direction="download"),
        description="the last download; seconds: all attempts",
    )
    upload_attempts: list[float] = Field(
        default_factory=list,
        description="seconds of each upload of this run, "
        "failed ones too (a link that dropped, an attempt that adopted the run)",
    )
    download_attempts: list[float] = Field(default_factory=list, description="seconds of each download of this run")
    output_dir: str | None = None
    outputs: list[str] = Field(default_factory=list)
    previous_moved_to: str | None = None
    error: str | None = None
    total_seconds: float = 0.0
    # issue 10: who runs it, what it ran in, why it failed, and whether a container was left for the next attempt
    worker: str | None = Field(
        default=None, description="the orchestrating process (runs/worker.py), host|pid|boot|start"
    )
    image: str | None = Field(default=None, description="the machine's container image (part of the work's identity)")
    cause: str | None = Field(default=None, description="why it failed: link_lost, stalled, guardrail_blocked, ...")
    detached: bool = Field(
        default=False, description="its container was left running on the host; the next attempt adopts it"
    )
    adopted_by: list[str] = Field(default_factory=list, description="Dagster runs that later attached to this run")
    # issue 11: what it cost, and what it left, so an unchanged prompt is not run again (runs/skip.py)
    gpu_price_per_hour: float | None = Field(
        default=None, ge=0, description="COSMOS_GPU_PRICE_PER_HOUR when it ran; None: unpriced"
    )
    model_load_seconds: float | None = Field(
        default=None, description="model load time from the model's own log; None: not derivable"
    )
    output_files: list[InputFile] = Field(
        default_factory=list, description="the local outputs of a succeeded run, by content"
    )
    batch: BatchRef | None = Field(default=None, description="the shared invocation this prompt ran in; None: its own")
    # issue 10 items 4-5: what the GPUs did, and the out-of-memory retry with offload flags (runs/oom.py)
    gpu_usage: GpuUsage | None = Field(
        default=None, description="nvidia-smi sampled on the machine while it ran; None: not sampled"
    )
    retry_of: str | None = Field(default=None, description="the run this one retried after it ran out of GPU memory")
    flags_added: list[str] = Field(default_factory=list, description="flags this retry added to the command (offload)")
    serving: Serving | None = Field(
        default=None,
        description="the resident model service or a one-shot container, and why; None: a model without a serving app",
    )
    # issue 20: exactly the same run (docs/runs.md): what identifies the program and weights, and reproductions
    image_id: str | None = Field(
        default=None,
        description="the image's ID on the host (docker image inspect) when it "
        "ran: a rebuilt tag is a new ID, so new work; None: no image (a plain process)",
    )
    program_sha256: str | None = Field(
        default=None,
        description="sha256 of the program files the run staged (the "
        "preview program), what identifies it where there is no image",
    )
    checkpoint_revisions: dict[str, str] = Field(
        default_factory=dict,
        description="Hugging Face repository -> the "
        "commit its checkpoint resolved to on the host (refs/main after the run)",
    )
    reproduces: str | None = Field(default=None, description="the run this one ran again (cosmos-assets reproduce)")
    reproduce_differences: list[str] = Field(
        default_factory=list,
        description="what differed from that run when it "
        "was run anyway (--anyway); empty: the same inputs, image and checkpoints",
    )

    @field_validator("command")
    @classmethod
    def _redact_command(cls, value: list[str]) -> list[str]:
        return redacted(value)

    @field_validator("environment")
    @classmethod
    def _redact_environment(cls, value: dict[str, str]) -> dict[str, str]:
        return redacted(value)

    @field_validator("log_tail")
    @classmethod
    def _redact_log(cls, value: list[str]) -> list[str]:
        return [storable_text(redacted_message(line)) for line in value]

    @field_validator("error")
    @classmethod
    def _redact_error(cls, value: str | None) -> str | None:
        return storable_text(redacted_message(value)) if value is not None else None

    @classmethod
    def plan(
        cls,
        job: InferenceJob,
        *,
        shot: str | None,
        host: str,
        runtime: str,
        model_label: str,
        preview: bool,
        spec: dict[str, Any],
        spec_remote_path: str,
        project_root: Path,
    ) -> RunRecord:
        """The record of a run about to start: identity, placement, spec and the content of every input."""
        inputs = [
            InputFile(path=item.remote, size=item.local.stat().st_size, sha256=sha256_file(item.local))
            for item in job.inputs
        ]
        spec_hash = next((i.sha256 for i in inputs if i.path == spec_remote_path), "")
        return cls(
            run_id=job.run_id,
            dagster_run_id=job.dagster_run_id,
            stage=job.stage,
            prompt=job.prompt,
            shot=shot,
            host=host,
            runtime=runtime,
            model=job.invocation.model,
            model_label=model_label,
            preview=preview,
            remote_output_folder=job.output_folder,
            spec=spec,
            spec_remote_path=spec_remote_path,
            spec_sha256=spec_hash,
            inputs=inputs,
            settings=job.invocation.settings,
            num_gpus=job.invocation.num_gpus,
            environment=dict(job.invocation.env),
        )

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def inference_seconds(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def gpu_seconds(self) -> float:
        """Container start to end times the GPUs it held; 0 for the preview backend, which holds none."""
        share = self.batch.gpu_share if self.batch is not None else 1.0  # a batch splits its time (docs/batching.md)
        return 0.0 if self.preview else self.inference_seconds * self.num_gpus * share

    @property
    def cost(self) -> float | None:
        """GPU hours times the price per GPU hour (currency-agnostic); 0 for the preview; None when no price is set."""
        if self.preview:
            return 0.0
        if self.gpu_price_per_hour is None:
            return None
        return self.gpu_seconds / 3600.0 * self.gpu_price_per_hour

    @property
    def command_line(self) -> str:
        return shell_join(self.command)

    def inputs_digest(self) -> str:
        """One hash of the spec, every input's content, the model, the image (tag and ID on the host), the staged
        program and the settings: equal digests, same work.

        The run's own id (in its output folder, hence in the settings) is left out, so two attempts compare equal.
        """
        digest = hashlib.sha256()
        settings = repr(sorted(self.settings.items())).replace(self.run_id, "{run_id}")
        for part in (self.stage, self.model, self.spec_sha256, settings, str(self.num_gpus), self.image or ""):
            digest.update(part.encode() + b"\0")
        # Added only when known, so a record from before keeps its digest (and cannot match a run whose ID is known).
        for name in ("image_id", "program_sha256"):
            if getattr(self, name) is not None:
                digest.update(f"{name}={getattr(self, name)}".encode() + b"\0")
        for item in sorted(self.inputs, key=lambda i: i.path):
            digest.update(f"{item.path}\0{item.sha256}\0".encode())
        return digest.hexdigest()

    def ran(self, command: list[str], outcome: RunOutcome) -> None:
        """Take in what the machine reports of the invocation."""
        self.command = outcome.command or command
        self.environment = outcome.environment
        self.container = outcome.container
        self.started_at, self.finished_at = outcome.started_at, outcome.finished_at
        self.exit_code = outcome.exit_code
        self.log_tail = list(outcome.log_tail)
        self.serving = outcome.serving
        if outcome.serving is not None and outcome.serving.mode == "served":
            self.model_load_seconds = outcome.serving.load_seconds  # the load this run waited for; None: none

    def transferred(
        self, direction: Literal["upload", "download"], seconds: float, stats: TransferStats | None
    ) -> None:
        """One upload or download of this run took ``seconds`` (``stats``: what it moved; None when it failed):
        ``upload``/``download`` keep the last completed one's files, with the seconds of every attempt summed."""
        attempts = [*getattr(self, f"{direction}_attempts"), round(seconds, 3)]
        setattr(self, f"{direction}_attempts", attempts)
        setattr(self, direction, (stats or getattr(self, direction)).model_copy(update={"seconds": sum(attempts)}))

    def spec_used(self) -> SpecUsed:
        return SpecUsed(
            stage=self.stage,
            backend=self.model,
            backend_label=self.model_label,
            preview=self.preview,
            run_id=self.run_id,
            dagster_run_id=self.dagster_run_id,
            prompt=self.prompt,
            shot=self.shot,
            host=self.host,
            command=self.command,
            command_line=self.command_line,
            container=self.container,
            environment=self.environment,
            settings=self.settings,
            spec=self.spec,
            spec_remote_path=self.spec_remote_path,
            video_save_folder=self.remote_output_folder,
            inputs=self.inputs,
            prompt_spec=self.prompt_spec,
            batch=self.batch,
            started_at=self.started_at or self.created_at,
            finished_at=self.finished_at or self.updated_at,
            exit_code=self.exit_code if self.exit_code is not None else -1,
        )

    def history(self) -> HistoryRecord:
        status: HistoryStatus = "success" if self.state == "succeeded" else self.state  # type: ignore[assignment]
        return HistoryRecord(
            when=self.finished_at if self.state == "succeeded" and self.finished_at else self.updated_at,
            run_id=self.run_id,
            dagster_run_id=self.dagster_run_id,
            stage=self.stage,
            prompt=self.prompt,
            shot=self.shot,
            host=self.host,
            backend=self.model,
            command=self.command_line if self.command else "(not started)",
            status=status,
            upload_seconds=round(self.upload.seconds, 3),
            inference_seconds=round(self.inference_seconds, 3),
            download_seconds=round(self.download.seconds, 3),
            total_seconds=round(self.total_seconds, 3),
            gpu_seconds=round(self.gpu_seconds, 3),
            outputs=self.outputs,
            error=self.error,
            cause=self.cause,
            model_load_seconds=self.model_load_seconds,
            cost=_rounded(self.cost),
            batch_id=self.batch.batch_id if self.batch else None,
            batch_index=self.batch.index if self.batch else None,
            retry_of=self.retry_of,
            flags_added=self.flags_added,
            gpu_util_mean_percent=None if self.gpu_usage is None else _rounded(self.gpu_usage.mean_utilization, 1),
            served_by=None
            if self.serving is None
            else "one-shot"
            if self.serving.mode == "one-shot"
            else f"service {self.serving.service_id or self.serving.service_container}",
        )

    def skipped_history(self, *, dagster_run_id: str | None, when: datetime | None = None) -> HistoryRecord:
        """The history line of a materialization that reused this (succeeded) run's outputs: no GPU time, no cost."""
        return HistoryRecord(
            when=when or utc_now(),
            run_id=self.run_id,
            dagster_run_id=dagster_run_id,
            stage=self.stage,
            prompt=self.prompt,
            shot=self.shot,
            host=self.host,
            backend=self.model,
            command="(skipped: same inputs)",
            status="skipped",
            outputs=self.outputs,
            cost=0.0,
        )


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
