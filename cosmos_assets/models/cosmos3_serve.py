"""Cosmos 3 through its own serving app (``cosmos_framework/inference/ray/serve.py``): the request, the command, and
whether the app can finish a run within its own request limit.

What this relies on is in docs/upstream/cosmos3-serve.md (NVIDIA/cosmos-framework @ 5eee9ed): ``POST /generate``
takes ``OmniSampleOverrides`` (every field optional, unknown keys refused with 422, ``name`` needed in practice), and
``_generate_batch`` gives the workers at most 300 s (serve.py:166, a literal). A run the app cannot finish in that
time runs one-shot; the estimate below is built from upstream's published transfer timings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cosmos_assets.machines.job import ServedCall

SERVE_MODULE = "cosmos_framework.inference.ray.serve"
SERVE_ENTRY_POINT = "cosmos_framework/inference/ray/serve.py"
CLI_MODULE = "cosmos_framework.scripts.inference"
APP_LIMIT_S = 300.0  # serve.py:166 asyncio.wait_for(..., timeout=300.0); no flag or config changes it
BUDGET_S = 0.8 * APP_LIMIT_S  # the estimate is rough: keep a fifth of the limit as margin
# NVIDIA/cosmos @ 11b96b4 inference_benchmarks/cosmos3-nano-generator.md, "Transfer generation", H100 80GB HBM3, one GPU,
# the slower of the Diffusers and vLLM-Omni rows (no PyTorch row: "PyTorch and NIM have no transfer coverage yet").
REFERENCE_SECONDS = {
    "single": {"256": 24.61, "480": 135.88, "720": 488.18},  # depth, the slowest single control (BEN:345-346)
    "multi": {"256": 36.94, "480": 477.12, "720": 2122.18},  # multi_control, vLLM-Omni (BEN:349-350)
}
REFERENCE_FRAMES = 121  # UNVERIFIED: the benchmark does not state its clip; the NIM cookbook's comparison set uses 121
CHUNK_FRAMES, CONDITIONAL_FRAMES = 93, 1  # args.py:788-790 defaults; chunks as inference/transfer.py:43-54
SIZE_FACTOR = {
    "nano": 1.0,
    "edge": 1.0,
    "super": 4.0,
}  # UNVERIFIED: only Nano is benchmarked; Super by its weights (4x)
HINTS = ("edge", "blur", "depth", "seg", "wsm")
# OmniSampleOverrides' fields (args.py:1048-1055 and its bases, docs/upstream/cosmos3-serve.md §4)
REQUEST_FIELDS = frozenset({
    "output_dir", "model", "extra", "name", "num_outputs", "seed", "tensors_file", "pickle_file", "num_steps",
    "guidance", "guidance_interval", "normalize_cfg", "shift", "sigma_max", "model_mode", "prompt_path", "prompt",
    "negative_prompt", "duration_template", "resolution_template", "negative_metadata_mode", "inverse_duration_template",
    "inverse_resolution_template", "negative_prompt_keep_metadata", "vision_path", "condition_frame_indexes_vision",
    "condition_video_keep", "resolution", "aspect_ratio", "fps", "num_frames", "video_save_quality",
    "image_save_quality", "enable_sound", "sound_path", "action_path", "domain_name", "image_size", "action_chunk_size",
    "raw_action_dim", "view_point", "max_new_tokens", "do_sample", "temperature", "top_k", "top_p",
    "repetition_penalty", "presence_penalty", "video_fps", "control_guidance", "control_guidance_interval", *HINTS,
    "negative_prompt_file", "num_video_frames_per_chunk", "num_conditional_frames", "max_frames",
    "show_control_condition", "show_input", "num_first_chunk_conditional_frames", "share_vision_temporal_positions",
    "emphasize_control_in_prompt", "prompt_upsampling", "prompt_upsampler_max_tokens", "prompt_upsampler_temperature",
    "prompt_upsampler_top_p", "prompt_upsampler_top_k", "prompt_upsampler_repetition_penalty",
    "prompt_upsampler_presence_penalty", "prompt_upsampler_seed", "defaults_file",
})  # fmt: skip
HINT_FIELDS = {"control_path", "weight"}
HINT_EXTRA = {"edge": {"preset_edge_threshold"}, "blur": {"preset_blur_strength"}}
SET_BY_US = ("output_dir", "model", "num_outputs")  # the router sets the folder; one model; one output per request


def service_request(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``POST /generate`` body for a sample the translation wrote: the same fields (the app's request model is the
    CLI's sample model), ``name`` always set. ValueError naming a key the app would refuse with 422."""
    if not spec.get("name"):
        raise ValueError("the request needs a name (the serving app fails a request without one)")
    for key, value in spec.items():
        if key not in REQUEST_FIELDS or key in SET_BY_US:
            raise ValueError(f"{key}: not a field the serving app takes from a client (OmniSampleOverrides)")
        if key in HINTS:
            extra = (
                set(value) - HINT_FIELDS - HINT_EXTRA.get(key, set())
                if isinstance(value, dict)
                else {"(not an object)"}
            )
            if extra:
                raise ValueError(f"{key}.{sorted(extra)[0]}: not a field of the serving app's {key} block")
    return dict(spec)


def service_argv(launch_argv: list[str] | tuple[str, ...], num_gpus: int) -> tuple[str, ...]:
    """The serving app's command from the one-shot command: same setup flags (checkpoint, preset, guardrails,
    compile, diffusion cache...), ``-m`` the serve module, no ``-i``/``-o`` (the service adds its folder), one
    process (Ray places the workers) with ``--world-size`` the run's GPU count.

    The CLI turns the diffusion cache on by default and the serving app off (cosmos3-serve.md §9): unless the
    command already says which, the service gets the CLI's value, so a served run makes the one-shot's pixels."""
    argv = list(launch_argv)
    start = argv.index("-m")
    if argv[start + 1] != CLI_MODULE:
        raise ValueError(f"not a Cosmos 3 inference command: {argv[: start + 2]}")
    rest, flags, i = argv[start + 2 :], [], 0
    while i < len(rest):
        word = rest[i]
        i += 1
        if word in ("-o", "--output-dir"):
            i += 1
        elif word in ("-i", "--input-files"):
            while i < len(rest) and not rest[i].startswith("-"):
                i += 1  # every sample file after one -i (a batch)
        elif not word.startswith(("--output-dir=", "--input-files=")):
            flags.append(word)
    if not any(f in ("--diffusion-cache", "--no-diffusion-cache") for f in flags):
        flags.append("--diffusion-cache")
    return ("python", "-m", SERVE_MODULE, *flags, f"--world-size={num_gpus}")


def chunks(frames: int) -> int:
    """How many chunks a transfer of ``frames`` frames runs (inference/transfer.py:43-54, default chunk settings)."""
    if frames <= CHUNK_FRAMES:
        return 1
    return 1 + math.ceil((frames - CHUNK_FRAMES) / (CHUNK_FRAMES - CONDITIONAL_FRAMES))


def estimate_seconds(spec: dict[str, Any], size: str, frames: int | None) -> tuple[float | None, str]:
    """Seconds the app's workers would need for ``spec`` on an H100-class GPU, and how that was found."""
    resolution = str(spec.get("resolution", "720"))
    hints = [h for h in HINTS if isinstance(spec.get(h), dict)]
    kind = "multi" if len(hints) > 1 else "single"
    if frames is None:
        return None, "its frame count is not known here, so its time cannot be estimated"
    if resolution not in REFERENCE_SECONDS[kind]:
        return None, f"resolution {resolution} has no published transfer timing"
    cap = spec.get("max_frames") or spec.get("num_frames")
    frames = min(frames, int(cap)) if cap else frames
    seconds = (
        REFERENCE_SECONDS[kind][resolution] * chunks(frames) / chunks(REFERENCE_FRAMES) * SIZE_FACTOR.get(size, 1.0)
    )
    what = f"{resolution}p, {'several controls' if kind == 'multi' else 'one control'}, {frames} frames ({chunks(frames)} chunk(s))"
    return seconds, what


def served_call(
    spec: dict[str, Any], launch_argv: list[str] | tuple[str, ...], num_gpus: int, size: str, frames: int | None
) -> ServedCall:
    """The run as a request to the serving app, and whether the app can finish it within its 300 s."""
    seconds, what = estimate_seconds(spec, size, frames)
    if seconds is None:
        fits, why = False, f"one-shot: {what}; the serving app stops waiting after {APP_LIMIT_S:.0f} s"
    elif seconds <= BUDGET_S:
        fits, why = (
            True,
            f"served: {what} is about {seconds:.0f} s on an H100, within the serving app's {APP_LIMIT_S:.0f} s",
        )
    else:
        fits, why = (
            False,
            (
                f"one-shot: {what} is about {seconds:.0f} s on an H100 (upstream's transfer timings), past "
                f"what the serving app waits for one request ({APP_LIMIT_S:.0f} s, serve.py:166)"
            ),
        )
    return ServedCall(
        service_argv=service_argv(launch_argv, num_gpus),
        entry_point=SERVE_ENTRY_POINT,
        request=service_request(spec),
        fits=fits,
        why=why,
        estimate_seconds=None if seconds is None else round(seconds, 1),
    )


def clip_frames(project_root: Path | None, relative: str | None) -> int | None:
    """Frames of the clip a run transfers (its first control, or its input video), None when it cannot be read."""
    if project_root is None or relative is None:
        return None
    from cosmos_assets.media import VideoReadError, probe_video  # PyAV: only when a request is built

    try:
        return probe_video(project_root / relative).frames
    except (VideoReadError, OSError):
        return None
