"""Planning a run: everything one stage will do, decided before anything is written or sent.

The prompt file is read and checked by the chosen model backend (file/field/fix errors before any
GPU time), the backend's own spec and invocation are built, and the files the run stages are listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.job import InferenceJob, StagedFile
from cosmos_assets.models.base import OUTPUT_VIDEO, ModelBackend, ModelRequest
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.inputs import referenced_paths, shot_of, with_videos_subdir
from cosmos_assets.prompts.spec import TransferSpec, load_spec
from cosmos_assets.runs.spec_used import SpecUsed

DEFAULT_UPSCALE_WEIGHT = 0.5


@dataclass
class StagePlan:
    """One stage of one prompt: the job for the machine, where its outputs go, what is written beside them."""

    job: InferenceJob
    request: ModelRequest
    shot: str | None
    dest: Path
    log_name: str
    effective_spec: Path
    extra_files: dict[str, object] = field(default_factory=dict)
    prompt_spec: dict[str, Any] | None = None  # the artist's prompt file, shown beside the model's spec in spec_used
    warnings: list[str] = field(default_factory=list)  # prompt-file fields the backend does not carry over
    spec: TransferSpec | None = None  # the prompt's spec as the backend checked it (videos_subdir applied); batching

    @property
    def stage(self) -> str:
        return self.job.stage


def model_for(layout: ProjectLayout, prompt: str, run_model: str | None, deployment_model: str) -> ModelBackend:
    """The backend of a generation: the run's ``model``, else the prompt file's ``cosmos_assets.model``, else the
    deployment's (``COSMOS_MODEL``). On the preview deployment the prompt file's choice is not taken (a preview
    host runs previews); a run's explicit model still is."""
    if run_model:
        return backend_named(run_model)
    if deployment_model != "preview":
        chosen = load_spec(layout.prompt_file(prompt)).model_block().model
        if chosen:
            return backend_named(chosen)
    return backend_named(deployment_model)


def upscaler_for(deployment_model: str) -> ModelBackend:
    """The 4K upscale is Transfer1's (the preview's on the preview deployment) whichever model generated."""
    return backend_named("preview" if deployment_model == "preview" else "cosmos-transfer1")


def _staged_inputs(layout: ProjectLayout, spec: TransferSpec) -> list[StagedFile]:
    return [StagedFile(local=layout.root / rel, remote=rel) for rel in referenced_paths(spec)]


def plan_generation(
    layout: ProjectLayout,
    backend: ModelBackend,
    prompt: str,
    *,
    run_id: str,
    dagster_run_id: str | None = None,
    videos_subdir: str | None = None,
    num_gpus: int = 1,
    prompt_path: Path | None = None,
) -> StagePlan:
    """Validate the prompt for ``backend`` and describe its generation run (spec, inputs, command, destination).
    ``prompt_path``: the prompt file to read instead of ``inputs/prompts/<prompt>.json`` (a recorded one, named
    ``<prompt>.json``: cosmos-assets reproduce)."""
    prompt_path = prompt_path or layout.prompt_file(prompt)
    original = load_spec(prompt_path)
    spec = with_videos_subdir(original, videos_subdir) if videos_subdir else original
    backend.check_prompt(spec, prompt_path, layout.root)
    request = backend.generation(prompt, spec, run_id, num_gpus, project_root=layout.root)
    effective = layout.staging_dir / run_id / "spec.json"
    job = InferenceJob(
        run_id=run_id,
        dagster_run_id=dagster_run_id,
        stage="generate",
        prompt=prompt,
        invocation=request.invocation,
        inputs=[StagedFile(local=effective, remote=request.spec_remote), *_staged_inputs(layout, spec)],
        project_root=layout.root,
    )
    return StagePlan(
        job=job,
        request=request,
        shot=shot_of(spec),
        dest=layout.output_dir(prompt),
        log_name="run.log",
        effective_spec=effective,
        extra_files={"prompt_spec.json": original.to_json_dict()},
        prompt_spec=original.to_json_dict(),
        warnings=backend.prompt_warnings(spec, layout.root),
        spec=spec,
    )


def generated_output(layout: ProjectLayout, prompt: str) -> tuple[Path, SpecUsed]:
    """The local generated video of ``prompt`` and its ``spec_used.json``; the upscale's input."""
    generated_dir = layout.output_dir(prompt)
    generated = generated_dir / OUTPUT_VIDEO
    if not generated.exists():
        raise FileNotFoundError(
            f"{generated} does not exist: materialize generated_videos for prompt {prompt} first "
            "(the upscale runs only after a successful generation)"
        )
    return generated, SpecUsed.read(generated_dir / "spec_used.json")


def plan_upscale(
    layout: ProjectLayout,
    backend: ModelBackend,
    prompt: str,
    *,
    run_id: str,
    dagster_run_id: str | None = None,
    control_weight: float = DEFAULT_UPSCALE_WEIGHT,
    num_gpus: int = 1,
) -> StagePlan:
    """Describe the 4K upscale of the prompt's generated video (which must exist locally), whichever model made it."""
    if not backend.can_upscale:
        raise ValueError(f"{backend.name} has no 4K upscaler: run the upscale on cosmos-transfer1 (or the preview)")
    generated, gen_used = generated_output(layout, prompt)
    # Staged as an input, never uploaded back into the generation's remote folder: the local clip carries its recipe
    # tags (runs/stamp.py), so it differs from what the model wrote there, and an earlier run's folder is never
    # written to. It may have been made by another model in another checkout; this checkout's outputs/ folder is
    # still created by the container's user (an upload as root would leave it unwritable for the upscale).
    generated_remote = f"inputs/generated/{prompt}/{gen_used.run_id}/{OUTPUT_VIDEO}"
    request = backend.upscale(prompt, generated_remote, run_id, num_gpus, control_weight)
    effective = layout.staging_dir / run_id / "upscale_spec.json"
    job = InferenceJob(
        run_id=run_id,
        dagster_run_id=dagster_run_id,
        stage="upscale",
        prompt=prompt,
        invocation=request.invocation,
        inputs=[
            StagedFile(local=effective, remote=request.spec_remote),
            StagedFile(local=generated, remote=generated_remote),
        ],
        project_root=layout.root,
    )
    # For a batch of upscales (runs/company.py): its request's spec, with the generation's prompt as the text of its
    # line of the JSONL (transfer.py reads a text per line; docs/batching.md).
    text = (gen_used.prompt_spec or {}).get("prompt") or gen_used.spec.get("prompt")
    batch_spec = TransferSpec.model_validate({**request.spec, "prompt": text if isinstance(text, str) else None})
    return StagePlan(
        job=job,
        request=request,
        shot=gen_used.shot,
        dest=layout.upscaled_dir(prompt),
        log_name="upscale_run.log",
        effective_spec=effective,
        spec=batch_spec,
    )
