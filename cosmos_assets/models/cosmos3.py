"""Cosmos 3 video2video transfer (cosmos-framework): its spec from a prompt file, argv, outputs; no guardrail on transfer.

Contract: ``contract/cosmos3_cli.json`` and ``contract/cosmos3_spec_schema.json`` (copies of the research notes, docs/upstream/README.md#contract-copies;
facts: docs/upstream/cosmos3.md). Where that contract is UNVERIFIED (docs/upstream/cosmos3.md#unverified: Super/Edge transfer, peak memory, offline caches) the
warnings and docs/models.md say so. The translation table is in docs/models.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from cosmos_assets.machines.job import Invocation, RunOutcome
from cosmos_assets.models import cosmos3_pixels as pixels
from cosmos_assets.models import cosmos3_serve
from cosmos_assets.models.base import BatchItem, BatchRequest, ModelBackend, ModelRequest, link_output
from cosmos_assets.models.cosmos3_contract import HINT_KEYS, NAME, Spec3, invocation_keys
from cosmos_assets.models.invocation_keys import InvocationKey, invocation_problems
from cosmos_assets.models.translate import (
    CACHE_DIRS,
    CACHE_ENV,
    Translation,
    block_field,
    in_container,
    merge_overrides,
    raise_file_problems,
    split_block,
    validate_into,
)
from cosmos_assets.prompts.spec import TransferSpec

MODULE = "cosmos_framework.scripts.inference"
ENTRY_POINT = "cosmos_framework/scripts/inference.py"
HINT_OF = {"edge": "edge", "vis": "blur", "depth": "depth", "seg": "seg"}  # Transfer1 control -> Cosmos 3 hint
PRECOMPUTED = ("depth", "seg")  # no annotator in cosmos-framework: these need a control video
CHECKPOINTS = {"nano": "Cosmos3-Nano", "super": "Cosmos3-Super", "edge": "Cosmos3-Edge"}
DEFAULT_RESOLUTION = {"nano": "720", "super": "720", "edge": "480"}
CACHE_FREE_GB = 150.0  # docs/setup.md: first run ~90 GiB HF cache + ~20 GiB uv cache; plan ~150 GiB free
ASPECTS = {"16,9": 16 / 9, "4,3": 4 / 3, "1,1": 1.0, "3,4": 3 / 4, "9,16": 9 / 16}
SIZE_WARNINGS = {
    "super": "size super: docs/inference.md lists Cosmos3-Super without video2video while the cookbook runs transfer "
             "on it with 4+ GPUs: Super transfer is UNVERIFIED here (128 GB of weights, FSDP-sharded over the GPUs)",
    "edge": "size edge: no upstream transfer example or test for Cosmos3-Edge: transfer on Edge is UNVERIFIED",
}  # fmt: skip


class Launch3(BaseModel):
    """Settings of the launch, from ``cosmos_assets.cosmos3`` in the prompt file."""

    model_config = ConfigDict(extra="forbid")

    size: Literal["nano", "super", "edge"] = "nano"
    guardrails: StrictBool = (
        True  # loaded by default, never applied on the transfer path (docs/upstream/cosmos3.md#guardrails)
    )
    use_torch_compile: StrictBool = True
    diffusion_cache: StrictBool = pixels.DIFFUSION_CACHE_DEFAULT  # always passed: the CLI's own default is on (lossy)
    checkpoint_revision: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")  # pins nvidia/<checkpoint>

    @property
    def checkpoint(self) -> str:
        return CHECKPOINTS[self.size]


LAUNCH_KEYS = tuple(Launch3.model_fields)


FIELD_NAMES = {"vision_path": "input_video_path", "name": "(prompt name)",
               **{f"{h}.control_path": f"{k}.input_control" for k, h in HINT_OF.items()},
               **{f"{h}.weight": f"{k}.control_weight" for k, h in HINT_OF.items()}}  # fmt: skip


def _launch(data: dict[str, Any], out: Translation) -> Launch3:
    if isinstance(data.get("size"), str):
        data = {**data, "size": data["size"].lower().removeprefix("cosmos3-")}
    launch = validate_into(Launch3, data, out, NAME, data, {})
    return launch if isinstance(launch, Launch3) else Launch3()


def _video_facts(project_root: Path | None, relative: str | None) -> tuple[int, int, float] | None:
    if project_root is None or relative is None:
        return None
    from cosmos_assets.media import VideoReadError, probe_video  # PyAV: only when a spec is built

    try:
        info = probe_video(project_root / relative)
    except (VideoReadError, OSError):
        return None
    return info.width, info.height, info.fps


def translate(spec: TransferSpec, prompt: str, project_root: Path | None = None) -> tuple[Translation, Launch3]:
    """The Cosmos 3 transfer sample for a prompt file, its launch settings, and every problem and dropped field."""
    out = Translation()
    launch_data, overrides = split_block(spec, NAME, LAUNCH_KEYS)
    launch = _launch(launch_data, out)
    if launch.size in SIZE_WARNINGS:
        out.warnings.append(SIZE_WARNINGS[launch.size])
    data: dict[str, Any] = {"name": prompt, "model_mode": "video2video", "resolution": DEFAULT_RESOLUTION[launch.size]}
    if spec.prompt is None:
        out.problem("prompt", 'missing; Cosmos 3 transfer needs a prompt (add "prompt": "...")')
    else:
        data["prompt"] = spec.prompt
    if spec.negative_prompt is not None:
        data["negative_prompt"] = spec.negative_prompt
    first_control: str | None = None
    if spec.input_video_path:
        if not spec.input_video_path.endswith(".mp4"):
            out.problem(
                "input_video_path",
                "Cosmos 3 reads only .mp4 videos (vision_path); re-encode it",
                spec.input_video_path,
                True,
            )
        data["vision_path"] = in_container(spec.input_video_path)
    if spec.sigma_max is not None:
        out.dropped("sigma_max", "Cosmos 3 transfer does not start from the input video's noise")
    if spec.seed is not None:
        data["seed"] = spec.seed
    if spec.num_video_frames is not None:
        out.dropped(
            "num_video_frames",
            f"Cosmos 3 generates the first control's length; cap it with {block_field(NAME, 'max_frames')}",
        )
    for key, control in spec.controls():
        hint = HINT_OF.get(key)
        if hint is None:
            out.problem(
                key,
                f"Cosmos 3 has no {key} control (only edge, vis (blur), depth, seg); remove it or run "
                "this prompt on cosmos-transfer1",
            )
            continue
        block: dict[str, Any] = {}
        if control.input_control is not None:
            block["control_path"] = in_container(control.input_control)
            first_control = first_control or control.input_control
        elif hint in PRECOMPUTED:
            out.problem(
                f"{key}.input_control",
                f"Cosmos 3 cannot compute a {key} control (no annotator in "
                "cosmos-framework): give the rendered pass, e.g. inputs/videos/<shot>/"
                f"{'depth' if key == 'depth' else 'segmentation'}.mp4",
            )
        weight = control.weight_value()
        if weight is None:
            out.problem(
                f"{key}.control_weight",
                "a .pt weight map cannot be carried over: Cosmos 3 takes a number "
                ">= 0 (relative; the weights are normalised to sum to 1)",
                control.control_weight,
                True,
            )
        else:
            block["weight"] = weight
        if control.ckpt_path is not None:
            out.problem(
                f"{key}.ckpt_path", "per-control checkpoints are Transfer1's; remove it", control.ckpt_path, True
            )
        for name in ("input_control_prompt", "control_weight_prompt"):
            if getattr(control, name) is not None:
                out.dropped(f"{key}.{name}", "Cosmos 3 has no on-the-fly segmentation or prompt masks")
        data[hint] = block
    if spec.regional_prompts:
        out.problem(
            "regional_prompts", "Cosmos 3 transfer has no regional prompts; remove them or run on cosmos-transfer1"
        )
    for name, value in (spec.__pydantic_extra__ or {}).items():
        if name in ("guidance", "num_steps"):
            data[name] = value
        elif name in Spec3.model_fields:
            data[name] = value
        else:
            out.dropped(name, "a Transfer1 setting with no Cosmos 3 equivalent")
    _frame_rules(data, spec, first_control, project_root, out)
    for field, message, value in invocation_problems(overrides, invocation_keys()):  # refused at load already
        out.problem(block_field(NAME, field), message, value, True)
    if out.problems:
        return out, launch
    merged = pixels.with_generic_defaults(merge_overrides(data, overrides, HINT_KEYS), out.warnings)
    model = validate_into(Spec3, merged, out, NAME, overrides, FIELD_NAMES)
    if model is not None:
        out.spec = model.model_dump(mode="json", exclude_none=True)
    return out, launch


def _frame_rules(
    data: dict[str, Any], spec: TransferSpec, first_control: str | None, project_root: Path | None, out: Translation
) -> None:
    """aspect_ratio when there is a vision_path (upstream's default 16,9 would crop), else an integer fps."""
    if spec.input_video_path:
        facts = _video_facts(project_root, spec.input_video_path)
        if facts is not None:
            width, height, _ = facts
            ratio = width / height
            name = min(ASPECTS, key=lambda k: abs(ASPECTS[k] - ratio))
            data["aspect_ratio"] = name
            if abs(ASPECTS[name] - ratio) / ASPECTS[name] > 0.02:
                out.warnings.append(
                    f"input_video_path: {width}x{height} is not exactly {name.replace(',', ':')}; "
                    "Cosmos 3 centre-crops it to that bucket"
                )
        return
    facts = _video_facts(project_root, first_control)
    if facts is not None:
        fps = facts[2]
        data["fps"] = max(1, round(fps))
        if abs(fps - round(fps)) > 0.01:
            out.warnings.append(
                f"fps: the control video plays at {fps:.3f} fps; Cosmos 3 takes a whole number, "
                f"{round(fps)} is used (render at 24 or 30)"
            )


def launch_argv(spec_path: str, output_dir: str, num_gpus: int, launch: Launch3) -> list[str]:
    """``python -m cosmos_framework.scripts.inference --parallelism-preset=latency -i -o --checkpoint-path``."""
    if num_gpus != 1 and (num_gpus < 1 or num_gpus % 2):
        raise ValueError(
            f"num_gpus = {num_gpus}: Cosmos 3 transfer runs the latency preset (CFG-parallel 2 x context "
            "parallel), so use 1 or an even count (2, 4, 6, 8)"
        )
    launcher = ["python"] if num_gpus == 1 else ["torchrun", f"--nproc-per-node={num_gpus}"]
    argv = [
        *launcher,
        "-m",
        MODULE,
        "--parallelism-preset=latency",
        "-i",
        spec_path,
        "-o",
        output_dir,
        "--checkpoint-path",
        launch.checkpoint,
    ]
    if not launch.guardrails:
        argv.append("--no-guardrails")
    if not launch.use_torch_compile:
        argv.append("--no-use-torch-compile")
    argv.append("--diffusion-cache" if launch.diffusion_cache else "--no-diffusion-cache")
    return argv


SAMPLE_FILES = ("sample_args.json", "sample_outputs.json")  # upstream's per-sample files in <OUTDIR>/<name>/


def sample_folder(fetched: Path, name: str | None = None) -> Path | None:
    """``<OUTDIR>/<name>/`` exactly when the name is known; else the one folder holding upstream's per-sample files."""
    if name is not None:
        return fetched / name
    folders = (
        [p for p in fetched.iterdir() if p.is_dir() and any((p / f).is_file() for f in SAMPLE_FILES)]
        if fetched.is_dir()
        else []
    )
    return folders[0] if len(folders) == 1 else None


def sample_succeeded(folder: Path) -> bool:
    """``sample_outputs.json`` says ``"status": "success"`` (written after vision.mp4)."""
    try:
        return json.loads((folder / "sample_outputs.json").read_text()).get("status") == "success"
    except (OSError, ValueError, AttributeError):
        return False


class Cosmos3Backend(ModelBackend):
    """Cosmos 3 (Nano by default) video2video transfer in the cosmos-framework image."""

    name = NAME
    checkout = "cosmos-framework"
    description = "Cosmos 3 video2video transfer (Nano default, 32 GB; Super/Edge UNVERIFIED; no 4K upscaler)"
    # out of GPU memory (runs/oom.py): only the guardrail models can move to CPU (contract/cosmos3_cli.json)
    offload_flags = ("--offload-guardrail-models",)
    memory_advice = (
        "Cosmos 3 cannot offload its diffusion model; FSDP splits its weights over the GPUs, so more "
        'GPUs per run is the main fix, and "cosmos_assets": {"cosmos3": {"guardrails": false}} skips '
        "loading the guardrail models the transfer path never calls"
    )

    def check_prompt(self, spec: TransferSpec, prompt_path: Path, project_root: Path) -> None:
        raise_file_problems(spec, project_root, prompt_path)  # before translate maps (or opens) the paths
        translation, _ = translate(spec, prompt_path.stem, project_root)
        translation.raise_if_problems(str(prompt_path))

    def prompt_warnings(self, spec: TransferSpec, project_root: Path | None = None) -> list[str]:
        return translate(spec, "prompt", project_root)[0].warnings

    def generation(
        self, prompt: str, spec: TransferSpec, run_id: str, num_gpus: int, project_root: Path | None = None
    ) -> ModelRequest:
        translation, launch = translate(spec, prompt, project_root)
        translation.raise_if_problems(f"inputs/prompts/{prompt}.json")
        spec_remote = f"inputs/prompts/{prompt}.json"
        output_dir = f"outputs/{prompt}/{run_id}"
        argv = launch_argv(spec_remote, output_dir, num_gpus, launch)
        clip = spec.controls()[0][1].input_control if spec.controls() else None  # the first control sets the length
        frames = cosmos3_serve.clip_frames(project_root, clip or spec.input_video_path)
        invocation = Invocation(
            model=self.name,
            argv=tuple(argv),
            entry_point=ENTRY_POINT,
            output_folder=output_dir,
            num_gpus=num_gpus,
            env={**CACHE_ENV, **pixels.pin_env(launch.checkpoint_revision)},
            settings={
                **launch.model_dump(),
                "checkpoint": launch.checkpoint,
                "weights_gb": pixels.WEIGHTS_GB[launch.size],
                "warnings": translation.warnings,
            },
            cache_dirs=dict(CACHE_DIRS),
            cache_free_gb=CACHE_FREE_GB,
            **pixels.checkpoint_fields(launch.size, launch.checkpoint, launch.checkpoint_revision, num_gpus),
            served=cosmos3_serve.served_call(translation.spec, argv, num_gpus, launch.size, frames),
        )
        return ModelRequest(spec=translation.spec, spec_remote=spec_remote, invocation=invocation)

    def invocation_keys(self) -> dict[str, InvocationKey]:
        return invocation_keys()

    def output_video(self, fetched: Path, name: str | None = None) -> Path:
        folder = sample_folder(fetched, name)
        if folder is None:
            return fetched / "<name>" / "vision.mp4"
        if not (folder / "vision.mp4").is_file():
            return folder / "vision.mp4"  # not here (yet, or not written): where it should be
        if not sample_succeeded(folder):
            return folder / "vision.mp4 with sample_outputs.json status success"
        return link_output(folder / "vision.mp4", fetched)

    def guardrail_blocked(self, outcome: RunOutcome, fetched: Path | None) -> bool:
        """Never: the transfer path calls no guardrail in cosmos-framework @ 5eee9ed (code-reading; UNVERIFIED at run time)."""
        return False

    # Batching (docs/batching.md): several sample files after one -i, one model load, samples one at a time in
    # sorted path order, each in <OUTDIR>/<name>/ (docs/upstream/cosmos3.md#batching, #outputs); the names (the prompts) map outputs back.
    can_batch = True

    def batch_key(self, item: BatchItem) -> str | None:
        settings = {k: v for k, v in item.request.invocation.settings.items() if k != "warnings"}
        return json.dumps([self.name, settings, item.request.invocation.num_gpus], sort_keys=True, default=str)

    def batch_generation(
        self, batch_id: str, items: list[BatchItem], num_gpus: int, batch_size: int = 1
    ) -> BatchRequest:
        first = items[0].request
        output_dir = f"outputs/.batches/{batch_id}"
        argv = list(first.invocation.argv)
        at = argv.index("-i") + 1
        argv[at : at + 1] = [item.request.spec_remote for item in items]
        argv[argv.index("-o") + 1] = output_dir
        invocation = first.invocation.model_copy(
            update={"argv": tuple(argv), "output_folder": output_dir, "served": None}
        )  # a batch is one-shot: one load anyway
        names = tuple(item.request.spec["name"] for item in items)
        return BatchRequest(
            request=ModelRequest(spec=first.spec, spec_remote=first.spec_remote, invocation=invocation),
            item_folders=names,
            item_texts=tuple(None for _ in items),
            prompt_file="",
            batch_size=1,
            item_video="vision.mp4",
            nested=True,
        )
