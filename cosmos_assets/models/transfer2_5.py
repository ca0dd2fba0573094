"""Cosmos-Transfer2.5 (2B): the spec it writes from a prompt file, ``examples/inference.py``'s argv, outputs, guardrail.

Contract: ``contract/transfer2_5_cli.json`` and ``contract/transfer2_5_spec_schema.json`` (copies of
the research notes, docs/upstream/README.md#contract-copies; facts: docs/upstream/transfer2.5.md). The translation table is in docs/models.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from cosmos_assets.machines.job import Invocation, RunOutcome
from cosmos_assets.models.base import BatchItem, BatchRequest, ModelBackend, ModelRequest, link_output
from cosmos_assets.models.invocation_keys import InvocationKey, invocation_problems
from cosmos_assets.models.transfer2_5_contract import (
    CONTROL_KEYS,
    LAUNCH_KEYS,
    NAME,
    Launch25,
    invocation_keys,
)
from cosmos_assets.models.translate import (
    CACHE_DIRS,
    CACHE_ENV,
    Translation,
    block_field,
    in_container,
    merge_overrides,
    number_text,
    raise_file_problems,
    split_block,
    validate_into,
)
from cosmos_assets.prompts.spec import TransferSpec

ENTRY_POINT = "examples/inference.py"
VALID_GPU_COUNTS = (1, 2, 4, 8)  # docs/upstream/transfer2.5.md#gpu-counts (context parallelism over the latent)
MASTER_PORT = 12341  # docs/inference.md
GPU_MEMORY_GB = 65.4  # docs/inference.md, one GPU; context parallelism does not shard the weights, so per GPU
GUARDRAIL_MARKER = "Guardrail blocked generation"  # console line of a blocked prompt (a blocked video leaves none)
# Transfer1 flags a prompt file may set at the top level, and what they become here (None: dropped, with a warning).
TRANSFER1_FLAGS: dict[str, str | None] = {"guidance": "guidance", "num_steps": "num_steps", "seed": "seed"}
Preset = Literal["very_low", "low", "medium", "high", "very_high"]


# Upstream's flat output layout (docs/upstream/transfer2.5.md#outputs): every file of sample <name>
# is <name> followed by exactly one of these. Mask keys: the controls, and guided generation.
SAMPLE_SUFFIXES = (".json", ".txt", ".mp4", ".jpg")
MEDIA_SUFFIXES = (".mp4", ".jpg")
MASK_KEYS = (*CONTROL_KEYS, "guided_generation")
SHARED_OUTPUTS = ("config.yaml", "console.log", "debug.log")  # one per invocation, no sample's


class Control25(BaseModel):
    """One of edge/vis/depth/seg (upstream ignores unknown keys here; we refuse them so a typo is seen)."""

    model_config = ConfigDict(extra="forbid")

    control_path: StrictStr | None = None
    control_weight: float = Field(default=1.0, ge=0.0, le=1.0)
    mask_prompt: StrictStr | None = None
    preset_edge_threshold: Preset | None = None
    preset_blur_strength: Preset | None = None
    control_prompt: StrictStr | None = None


class Spec25(BaseModel):
    """One Transfer2.5 sample file (upstream ``InferenceArguments``): unknown top-level keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    prompt: StrictStr
    negative_prompt: StrictStr | None = None
    video_path: StrictStr
    max_frames: StrictInt | None = Field(default=None, gt=0)
    num_conditional_frames: Literal[0, 1, 2] | None = None
    resolution: Literal["720", "480"] | None = None
    sigma_max: StrictStr | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?$")
    num_video_frames_per_chunk: StrictInt | None = Field(default=None, gt=0)
    num_steps: StrictInt | None = Field(default=None, gt=0)
    guidance: StrictInt | None = Field(default=None, ge=0, le=7)
    seed: StrictInt | None = None
    show_control_condition: StrictBool | None = None
    show_input: StrictBool | None = None
    keep_input_resolution: StrictBool | None = None
    edge: Control25 | None = None
    vis: Control25 | None = None
    depth: Control25 | None = None
    seg: Control25 | None = None


def output_files(name: str) -> frozenset[str]:
    """Every file name upstream can write for sample ``name``, exactly (never a prefix: ``city`` and
    ``city_mask_v2`` are two samples, and ``city_mask_v2.mp4`` is not ``city``'s)."""
    files = {f"{name}{suffix}" for suffix in SAMPLE_SUFFIXES}
    for ext in MEDIA_SUFFIXES:
        files |= {f"{name}_control_{key}{ext}" for key in CONTROL_KEYS}
        files |= {f"{name}_mask_{key}{ext}" for key in MASK_KEYS}
    return frozenset(files)


FIELD_NAMES = {"video_path": "input_video_path", "name": "(prompt name)",
               **{f"{k}.control_path": f"{k}.input_control" for k in CONTROL_KEYS}}  # fmt: skip


def translate(spec: TransferSpec, prompt: str) -> tuple[Translation, Launch25]:
    """The Transfer2.5 sample for a prompt file, its launch settings, and every problem and dropped field."""
    out = Translation()
    launch_data, overrides = split_block(spec, NAME, LAUNCH_KEYS)
    data: dict[str, Any] = {"name": prompt}
    if spec.prompt is None:
        out.problem("prompt", 'missing; Transfer2.5 needs a prompt (add "prompt": "...")')
    else:
        data["prompt"] = spec.prompt
    if spec.negative_prompt is not None:
        if not spec.negative_prompt.strip():
            out.problem(
                "negative_prompt",
                "is empty, which Transfer2.5's guardrail blocks ('Input is empty'); remove it to use the default",
                spec.negative_prompt,
                True,
            )
        data["negative_prompt"] = spec.negative_prompt
    if not spec.input_video_path:
        out.problem(
            "input_video_path",
            "missing; Transfer2.5 needs the RGB video (video_path): give inputs/videos/<shot>/color.mp4",
        )
    else:
        data["video_path"] = in_container(spec.input_video_path)
    if spec.sigma_max is not None:
        data["sigma_max"] = number_text(spec.sigma_max)  # a string upstream ("80")
    if spec.seed is not None:
        data["seed"] = spec.seed
    if spec.num_video_frames is not None:
        out.dropped(
            "num_video_frames",
            f"Transfer2.5 generates as many frames as video_path has; cap them with {block_field(NAME, 'max_frames')}",
        )
    for key, control in spec.controls():
        if key not in CONTROL_KEYS:
            out.problem(
                key,
                f"Transfer2.5 has no {key} control (only edge, vis, depth, seg); remove it or run "
                "this prompt on cosmos-transfer1",
            )
            continue
        block: dict[str, Any] = {}
        if control.input_control is not None:
            block["control_path"] = in_container(control.input_control)
        weight = control.weight_value()
        if weight is None:
            out.problem(
                f"{key}.control_weight",
                "a .pt weight map cannot be carried over: Transfer2.5 takes a number "
                "0..1 (use mask_prompt in the model block for a spatial mask)",
                control.control_weight,
                True,
            )
        elif weight > 1:
            out.problem(f"{key}.control_weight", "Transfer2.5 takes 0..1; lower it", control.control_weight, True)
        else:
            block["control_weight"] = weight  # absent = 0.5 as in Transfer1 (Transfer2.5's own default is 1.0)
        if control.ckpt_path is not None:
            out.problem(
                f"{key}.ckpt_path",
                "per-control checkpoints are Transfer1's; remove it (Transfer2.5 picks "
                "its checkpoint from the control key)",
                control.ckpt_path,
                True,
            )
        if control.input_control_prompt is not None:
            block["control_prompt"] = control.input_control_prompt
        if control.control_weight_prompt is not None:
            out.problem(
                f"{key}.control_weight_prompt",
                f"not in Transfer2.5; use {block_field(NAME, key + '.mask_prompt')} instead",
                control.control_weight_prompt,
                True,
            )
        data[key] = block
    if spec.regional_prompts:
        out.problem("regional_prompts", "Transfer2.5 has no regional prompts; remove them or run on cosmos-transfer1")
    for name, value in (spec.__pydantic_extra__ or {}).items():
        target = TRANSFER1_FLAGS.get(name)
        if name == "guidance":
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not float(value).is_integer()
                or not 0 <= value <= 7
            ):
                out.problem(
                    "guidance",
                    "Transfer2.5 takes a whole number 0..7 (default 3); Transfer1's scale 7 is "
                    "a different scale: set it in the model block",
                    value,
                    True,
                )
                continue
            data["guidance"] = int(value)
        elif target is not None:
            data[target] = value
        elif name in Spec25.model_fields:
            data[name] = value
        else:
            out.dropped(name, "a Transfer1 setting with no Transfer2.5 equivalent")
    for field, message, value in invocation_problems(overrides, invocation_keys()):  # refused at load already
        out.problem(block_field(NAME, field), message, value, True)
    if out.problems:
        return out, Launch25()
    merged = merge_overrides(data, overrides, CONTROL_KEYS)
    model = validate_into(Spec25, merged, out, NAME, overrides, FIELD_NAMES)
    launch = validate_into(Launch25, launch_data, out, NAME, launch_data, {})
    if model is not None:
        out.spec = model.model_dump(mode="json", exclude_none=True)
    return out, launch if isinstance(launch, Launch25) else Launch25()


def launch_argv(spec_path: str, output_dir: str, num_gpus: int, launch: Launch25) -> list[str]:
    """``python examples/inference.py -i SPEC -o OUT`` (torchrun for several GPUs; no --num_gpus: WORLD_SIZE is it)."""
    if num_gpus not in VALID_GPU_COUNTS:
        raise ValueError(
            f"num_gpus = {num_gpus}: Cosmos-Transfer2.5 splits the latent across GPUs (context "
            "parallelism); use 1, 2, 4 or 8"
        )
    launcher = (
        ["python"] if num_gpus == 1 else ["torchrun", f"--nproc_per_node={num_gpus}", f"--master_port={MASTER_PORT}"]
    )
    argv = [*launcher, ENTRY_POINT, "-i", spec_path, "-o", output_dir]
    if launch.disable_guardrails:
        argv.append("--disable-guardrails")
    if launch.offload_guardrail_models:
        argv.append("--offload-guardrail-models")
    return argv


def sample_name(fetched: Path) -> str | None:
    """The one sample's name in a downloaded output folder: the ``<name>.json`` upstream writes before the guardrail
    check is ``sample.model_dump_json()``, ``"name": "<name>"`` included (``name`` is a field of upstream's
    ``CommonInferenceArguments``, code-reading); exactly one such file, or None. Our own ``spec_used.json`` and
    ``prompt_spec.json`` are not samples: their ``name`` (if any) is not their file's."""
    names = []
    for path in fetched.iterdir() if fetched.is_dir() else ():
        if path.suffix != ".json" or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(data, dict) and data.get("name") == path.stem:
            names.append(path.stem)
    return names[0] if len(names) == 1 else None


class Transfer25Backend(ModelBackend):
    """Cosmos-Transfer2.5 2B in its uv-based image: ``examples/inference.py -i SPEC -o OUTDIR``."""

    name = NAME
    checkout = "cosmos-transfer2.5"
    description = "Cosmos-Transfer2.5 2B (edge/vis/depth/seg; guardrails can be switched off; no 4K upscaler)"
    # out of GPU memory (runs/oom.py): only the guardrail models can move to CPU (docs/upstream/transfer2.5.md#gpu-memory)
    offload_flags = ("--offload-guardrail-models",)
    memory_advice = (
        "Transfer2.5 cannot offload its diffusion model, only the guardrail models (for good: "
        '"cosmos_assets": {"cosmos-transfer2.5": {"offload_guardrail_models": true}}); it needs about '
        f"{GPU_MEMORY_GB:g} GB on one GPU and more GPUs do not split its weights"
    )

    def check_prompt(self, spec: TransferSpec, prompt_path: Path, project_root: Path) -> None:
        raise_file_problems(spec, project_root, prompt_path)  # before translate maps (or opens) the paths
        translation, _ = translate(spec, prompt_path.stem)
        translation.raise_if_problems(str(prompt_path))

    def prompt_warnings(self, spec: TransferSpec, project_root: Path | None = None) -> list[str]:
        return translate(spec, "prompt")[0].warnings

    def generation(
        self, prompt: str, spec: TransferSpec, run_id: str, num_gpus: int, project_root: Path | None = None
    ) -> ModelRequest:
        translation, launch = translate(spec, prompt)
        translation.raise_if_problems(f"inputs/prompts/{prompt}.json")
        spec_remote = f"inputs/prompts/{prompt}.json"
        output_dir = f"outputs/{prompt}/{run_id}"
        warnings = list(translation.warnings)
        if num_gpus > 1 and not launch.disable_guardrails:
            warnings.append(
                "num_gpus > 1 with guardrails on: a blocked prompt can leave the ranks out of step "
                "(hang until the NCCL timeout; docs/upstream/transfer2.5.md#multi-gpu-guardrail-hang): pre-screen prompts or use 1 GPU"
            )
        invocation = Invocation(
            model=self.name,
            argv=tuple(launch_argv(spec_remote, output_dir, num_gpus, launch)),
            entry_point=ENTRY_POINT,
            output_folder=output_dir,
            num_gpus=num_gpus,
            env=dict(CACHE_ENV),
            guardrail_marker=GUARDRAIL_MARKER,
            settings={**launch.model_dump(), "warnings": warnings},
            cache_dirs=dict(CACHE_DIRS),
            gpu_memory_gb=GPU_MEMORY_GB,
        )
        return ModelRequest(spec=translation.spec, spec_remote=spec_remote, invocation=invocation)

    def invocation_keys(self) -> dict[str, InvocationKey]:
        return invocation_keys()

    def output_video(self, fetched: Path, name: str | None = None) -> Path:
        name = name or sample_name(fetched)
        if name is None:
            return fetched / "<name>.mp4"
        return link_output(fetched / f"{name}.mp4", fetched)

    def guardrail_blocked(self, outcome: RunOutcome, fetched: Path | None) -> bool:
        """Exit 0 with ``<name>.json`` and no ``<name>.mp4`` (the default --keep-going skips a blocked sample)."""
        if fetched is None:
            return outcome.guardrail_blocked
        name = sample_name(fetched)
        return outcome.exit_code == 0 and name is not None and not (fetched / f"{name}.mp4").exists()

    # Batching (docs/batching.md): several sample files after ONE -i, one model load, samples in order (docs/upstream/transfer2.5.md#batching).
    can_batch = True

    def batch_key(self, item: BatchItem) -> str | None:
        settings = {k: v for k, v in item.request.invocation.settings.items() if k != "warnings"}
        if item.request.invocation.num_gpus > 1 and not settings.get("disable_guardrails"):
            return None  # a blocked sample can put the ranks out of step (docs/upstream/transfer2.5.md#multi-gpu-guardrail-hang): such prompts run alone
        controls = sorted(key for key in CONTROL_KEYS if key in item.request.spec)
        return json.dumps([self.name, settings, item.request.invocation.num_gpus, controls], sort_keys=True)

    def shares_batch_with(self, item: BatchItem, others: list[BatchItem]) -> bool:
        """Not with a sample whose file names could be its own (``city`` with a mask on edge and ``city_mask_edge``):
        the flat layout would leave a file two samples could claim."""
        mine = output_files(item.request.spec["name"])
        return not any(mine & output_files(other.request.spec["name"]) for other in others)

    def batch_generation(
        self, batch_id: str, items: list[BatchItem], num_gpus: int, batch_size: int = 1
    ) -> BatchRequest:
        """``examples/inference.py -i A.json B.json ... -o outputs/.batches/<batch_id>``: each item's own sample file
        (its ``name`` is its prompt), flat outputs ``<name>.*``; a blocked sample is skipped (exit 0)."""
        first = items[0].request
        launch = Launch25.model_validate({k: v for k, v in first.invocation.settings.items() if k != "warnings"})
        output_dir = f"outputs/.batches/{batch_id}"
        argv = launch_argv(first.spec_remote, output_dir, num_gpus, launch)
        at = argv.index("-i") + 1
        argv[at : at + 1] = [item.request.spec_remote for item in items]
        invocation = first.invocation.model_copy(update={"argv": tuple(argv), "output_folder": output_dir})
        return BatchRequest(
            request=ModelRequest(spec=first.spec, spec_remote=first.spec_remote, invocation=invocation),
            item_folders=tuple(item.request.spec["name"] for item in items),
            item_texts=tuple(None for _ in items),
            prompt_file="",
            batch_size=1,
            item_names=tuple(item.request.spec["name"] for item in items),
            item_files=tuple(tuple(sorted(output_files(item.request.spec["name"]))) for item in items),
            shared_files=SHARED_OUTPUTS,
        )
