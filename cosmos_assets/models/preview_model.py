"""Preview backend: Cosmos-Transfer1's command line and output layout, without the model.

A self-contained program (stdlib, numpy and PyAV only) standing in for
``cosmos_transfer1/diffusion/inference/transfer.py`` on machines without a GPU, and copied into a
Docker test image at that path. It is NOT the model: it composites the control videos into a
preview (colour grade of the input, depth shading, segmentation outlines) so the pipeline around
the model can be exercised end to end. Every line it prints starts with ``[preview]``.

What it keeps from the real entry point (see ``contract/transfer_cli.json`` and docs/upstream/transfer1.md):
- every flag, with the same names, types, defaults and choices (``ARGUMENTS`` below, a verbatim
  copy of the contract's table; a test keeps the two equal);
- the spec merge rule: top-level non-object keys of the spec override the CLI value unless the
  exact string ``--key`` is in argv (so ``--key=value`` is overridden by the spec);
- control-key validation (an unknown key whose value is an object is an error, exit 2);
- paths relative to the working directory (the repository root, ``/workspace`` in the container);
- inputs trimmed to the shortest control and cut at 5000 frames; 121-frame chunks in the step log;
- output at the input's resolution bucket; ``{video_save_folder}/{video_save_name}.mp4`` plus
  ``.txt`` with the prompt; only rank 0 writes (RANK / WORLD_SIZE as set by torchrun);
- an ``upscale`` control gives the input at 3x its size (1280x704 -> 3840x2112);
- ``--upsample_prompt`` without torchrun's RANK fails, as upstream does;
- guardrail stand-in: a prompt containing ``GUARDRAIL_TEST_BLOCK`` prints ``GUARDRAIL BLOCKED`` and
  exits 1 without a video.

Fault stand-ins (``TEST_FAULTS``, for tests/faults): a prompt containing ``OOM_TEST_GPU`` ends like torch out of GPU
memory (``torch.OutOfMemoryError: CUDA out of memory...``, exit 1) unless ``--offload_diffusion_transformer`` is
given; ``OOM_TEST_HOST`` allocates host memory (up to 1 GiB) until a container memory limit gets it killed by the
kernel's OOM killer (exit 137); ``FAIL_TEST_EXIT`` fails with exit 1; ``HANG_TEST`` goes silent for 10 minutes.

- batch mode (``--batch_input_path FILE.jsonl``, ``--batch_size``), as upstream's transfer.py at 5005e82 does it
  (docs/upstream/transfer1.md#batch-mode): one line per item (``prompt``, ``visual_input``, ``control_overrides`` updating the spec's controls),
  outputs in ``video_<i>/output.mp4`` + ``video_<i>/prompt.txt``, every folder of a window created first. A blocked
  item is dropped from its window and the survivors are saved by their position in the shorter list (so a later
  item's video can land in an earlier item's folder); a window with every item blocked ends the whole program with
  ``TypeError: cannot unpack non-iterable NoneType object`` (exit 1), later items never run. The upscale control
  forces batch size 1.

Environment: ``COSMOS_PREVIEW_STEP_SECONDS`` (float, default 0) sleeps that long per logged step,
so tests can watch progress or cancel a run mid-way. ``COSMOS_PREVIEW_LOAD_SECONDS`` (float, default 0) sleeps that
long once per invocation and logs ``model loaded``: a simulated model load; ``COSMOS_PREVIEW_LOAD_COUNT`` (a file)
gets one line per load (the batching tests and benchmark count them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType

TAG = "[preview]"
BANNER = "cosmos-transfer1 preview backend (not the model)"
GUARDRAIL_MARKER = "GUARDRAIL_TEST_BLOCK"
TEST_FAULTS = ("OOM_TEST_GPU", "OOM_TEST_HOST", "FAIL_TEST_EXIT", "HANG_TEST")
MAX_FRAMES = 5000
CHUNK_FRAMES = 121
UPSCALE_FACTOR = 3
EXIT_BLOCKED = 1
EXIT_RUNTIME = 1
EXIT_USAGE = 2

# Verbatim copy of contract/transfer_cli.json "arguments" (tests assert equality).
ARGUMENTS: dict[str, dict] = {
    "--prompt": {"type": "str", "default": "(long built-in text)"},
    "--negative_prompt": {"type": "str", "default": "(long built-in text)"},
    "--input_video_path": {"type": "str", "default": ""},
    "--num_input_frames": {"type": "int", "default": 1, "choices": [1]},
    "--sigma_max": {"type": "float", "default": 70.0},
    "--blur_strength": {
        "type": "str",
        "default": "medium",
        "choices": ["very_low", "low", "medium", "high", "very_high"],
    },
    "--canny_threshold": {
        "type": "str",
        "default": "medium",
        "choices": ["very_low", "low", "medium", "high", "very_high"],
    },
    "--controlnet_specs": {"type": "str", "required": True},
    "--is_av_sample": {"type": "flag"},
    "--checkpoint_dir": {"type": "str", "default": "checkpoints"},
    "--tokenizer_dir": {"type": "str", "default": "Cosmos-Tokenize1-CV8x8x8-720p"},
    "--video_save_name": {"type": "str", "default": "output"},
    "--video_save_folder": {"type": "str", "default": "outputs/"},
    "--batch_input_path": {"type": "str", "default": None},
    "--batch_size": {"type": "int", "default": 1},
    "--num_steps": {"type": "int", "default": 35},
    "--guidance": {"type": "float", "default": 5},
    "--fps": {"type": "int", "default": 24},
    "--seed": {"type": "int", "default": 1},
    "--num_gpus": {"type": "int", "default": 1},
    "--offload_diffusion_transformer": {"type": "flag"},
    "--offload_text_encoder_model": {"type": "flag"},
    "--offload_guardrail_models": {"type": "flag"},
    "--upsample_prompt": {"type": "flag"},
    "--offload_prompt_upsampler": {"type": "flag"},
    "--use_distilled": {"type": "flag"},
    "--save_input_noise": {"type": "flag"},
    "--benchmark": {"type": "flag"},
}
CONTROL_KEYS = ("vis", "seg", "edge", "depth", "keypoint", "upscale", "hdmap", "lidar")
PER_CONTROL_KEYS = ("input_control", "control_weight", "ckpt_path", "input_control_prompt", "control_weight_prompt")
# (width, height) resolution buckets of Cosmos-Transfer1's 720p models.
BUCKETS = ((1280, 704), (960, 704), (960, 960), (704, 960), (704, 1280))
DEFAULT_CONTROL_WEIGHT = 0.5


class UsageError(Exception):
    """Bad flags or spec: exit 2."""


class RunError(Exception):
    """Missing inputs or an environment the real model would fail in: exit 1."""


def log(message: str) -> None:
    """One progress line on stdout, prefixed and flushed (a parent process reads it live)."""
    rank = os.environ.get("RANK")
    where = f" rank {rank}" if rank not in (None, "0") else ""
    print(f"{TAG}{where} {message}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    """argparse parser with exactly the flags of ``ARGUMENTS``."""
    parser = argparse.ArgumentParser(
        prog="transfer.py", description=f"{BANNER}: composites control videos with transfer.py's CLI"
    )
    types = {"str": str, "int": int, "float": float}
    for flag, spec in ARGUMENTS.items():
        if spec["type"] == "flag":
            parser.add_argument(flag, action="store_true")
            continue
        kwargs: dict = {"type": types[spec["type"]]}
        if spec.get("required"):
            kwargs["required"] = True
        else:
            kwargs["default"] = spec["default"]
        if "choices" in spec:
            kwargs["choices"] = spec["choices"]
        parser.add_argument(flag, **kwargs)
    return parser


# --------------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------------


def load_spec(path: str) -> dict:
    spec_path = Path(path)
    try:
        spec = json.loads(spec_path.read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"--controlnet_specs {path}: file not found (relative to {Path.cwd()})") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"--controlnet_specs {path}: not valid JSON ({exc})") from exc
    if not isinstance(spec, dict):
        raise UsageError(f"--controlnet_specs {path}: the spec must be a JSON object")
    return spec


def split_spec(spec: dict, spec_path: str) -> tuple[dict[str, dict], dict]:
    """(controls, top-level arguments), as upstream's load_controlnet_specs does."""
    controls: dict[str, dict] = {}
    arguments: dict = {}
    for key, value in spec.items():
        if key in CONTROL_KEYS:
            if not isinstance(value, dict):
                raise UsageError(f"{spec_path}: control '{key}' must be an object like {{\"control_weight\": 0.5}}")
            controls[key] = value
        elif isinstance(value, dict):
            raise UsageError(
                f"{spec_path}: invalid control key '{key}'; valid control keys are {', '.join(CONTROL_KEYS)}"
            )
        else:
            arguments[key] = value
    return controls, arguments


def merge_arguments(args: argparse.Namespace, arguments: dict, argv: list[str]) -> None:
    """Spec values override args unless the exact string ``--key`` is in argv (upstream's rule)."""
    for key, value in arguments.items():
        if f"--{key}" in argv:
            log(f"spec key '{key}' ignored: --{key} given on the command line")
            continue
        setattr(args, key, value)


def control_weight(name: str, control: dict, spec_path: str) -> float:
    """The control's weight as a number; a ``.pt`` weight map counts as the default for the preview."""
    raw = control.get("control_weight", DEFAULT_CONTROL_WEIGHT)
    if isinstance(raw, str) and raw.endswith(".pt"):
        if not Path(raw).is_file():
            raise RunError(f"{spec_path}: {name}.control_weight weight map {raw} not found (relative to {Path.cwd()})")
        return DEFAULT_CONTROL_WEIGHT
    try:
        weight = float(raw)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{spec_path}: {name}.control_weight {raw!r} is not a number or a .pt path") from exc
    if weight < 0 or not math.isfinite(weight):
        raise UsageError(f"{spec_path}: {name}.control_weight {raw!r} must be a non-negative number")
    return weight


def validate(args: argparse.Namespace, controls: dict[str, dict], spec_path: str) -> dict[str, float]:
    """Checks the real entry point makes (or fails on); returns each control's weight."""
    if not controls:
        raise UsageError(f"{spec_path}: no control key; give at least one of {', '.join(CONTROL_KEYS)}")
    weights = {name: control_weight(name, control, spec_path) for name, control in controls.items()}
    for name, control in controls.items():
        for key in control:
            if key not in PER_CONTROL_KEYS:
                log(f"warning: {spec_path}: key '{name}.{key}' is not read by transfer.py")
    if not args.input_video_path:
        lacking = [name for name, c in controls.items() if not c.get("input_control")]
        if lacking:
            raise UsageError(
                f"{spec_path}: no input_video_path, so every control needs input_control; missing for {', '.join(lacking)}"
            )
        if float(args.sigma_max) < 80:
            raise UsageError(
                f"{spec_path}: without input_video_path sigma_max must be at least 80 (got {args.sigma_max})"
            )
    if "upscale" in controls and not args.input_video_path:
        raise UsageError(f"{spec_path}: the upscale control needs input_video_path (the video to upscale)")
    for path in [args.input_video_path] + [c.get("input_control") for c in controls.values()]:
        if path and not Path(path).is_file():
            raise RunError(f"input video {path} not found (paths are relative to {Path.cwd()})")
    return weights


def check_environment(args: argparse.Namespace) -> tuple[int, int]:
    """(rank, world size); fails where the real entry point fails without torchrun."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.upsample_prompt and "RANK" not in os.environ:
        raise RunError(
            "--upsample_prompt reads RANK, which only torchrun sets: KeyError: 'RANK' (launch with torchrun)"
        )
    if args.num_gpus < 1 or 16 % args.num_gpus:
        raise UsageError(f"--num_gpus {args.num_gpus}: context parallelism needs a divisor of 16 (1, 2, 4, 8, 16)")
    if args.num_gpus > 1 and world != args.num_gpus:
        raise RunError(
            f"--num_gpus {args.num_gpus} but WORLD_SIZE is {world}: launch with "
            f"torchrun --nproc_per_node={args.num_gpus}"
        )
    return rank, world


# --------------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------------


def nearest_bucket(width: int, height: int) -> tuple[int, int]:
    """The resolution bucket whose aspect ratio is nearest (in log space) to width/height."""
    aspect = math.log(width / height)
    return min(BUCKETS, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def count_frames(path: str) -> tuple[int, int, int]:
    """(frames, width, height) of a video; frames decoded and counted if the container does not say."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            frames = stream.frames or sum(1 for _ in container.decode(stream))
            return frames, stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise RunError(f"{path} cannot be read as a video: {exc}") from exc


def frames_of(path: str, width: int, height: int, fmt: str) -> Iterator[av.VideoFrame]:
    """Decoded frames of ``path`` scaled to width x height in pixel format ``fmt``."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.reformat(width=width, height=height, format=fmt, interpolation="BILINEAR")


def _next_frame(stream: Iterator[av.VideoFrame], path: str, index: int) -> av.VideoFrame:
    try:
        return next(stream)
    except StopIteration:
        raise RunError(f"{path} ended after {index} frames, fewer than its header said") from None


def grade_tint(prompt: str, seed: int) -> np.ndarray:
    """A per-prompt, per-seed colour tint so different prompts give visibly different previews."""
    digest = hashlib.sha256(f"{prompt}\0{seed}".encode()).digest()
    return 0.85 + 0.3 * np.frombuffer(digest[:3], dtype=np.uint8).astype(np.float32) / 255.0


def label_edges(seg: np.ndarray) -> np.ndarray:
    """True where a pixel's label colour differs clearly from its right or lower neighbour."""
    s = seg.astype(np.int16)
    edges = np.zeros(seg.shape[:2], dtype=bool)
    edges[:, :-1] |= np.abs(s[:, 1:] - s[:, :-1]).sum(axis=2) > 48
    edges[:-1, :] |= np.abs(s[1:, :] - s[:-1, :]).sum(axis=2) > 48
    return edges


def composite(layers: dict[str, np.ndarray], weights: dict[str, float], tint: np.ndarray) -> np.ndarray:
    """One preview frame from same-size RGB layers ('base' plus any controls)."""
    base = layers.get("base")
    if base is None:
        base = next(iter(layers.values()))
    out = base.astype(np.float32) * tint
    if "depth" in layers:
        w = min(weights.get("depth", DEFAULT_CONTROL_WEIGHT), 1.0)
        near = layers["depth"][..., 0].astype(np.float32) / 255.0
        out *= (1.0 - 0.6 * w + 0.6 * w * near)[..., None]
    if "seg" in layers:
        w = min(weights.get("seg", DEFAULT_CONTROL_WEIGHT), 1.0)
        out[label_edges(layers["seg"])] *= 1.0 - 0.8 * w
    if "edge" in layers:
        w = min(weights.get("edge", DEFAULT_CONTROL_WEIGHT), 1.0)
        out += layers["edge"].astype(np.float32) * (0.5 * w)
    for name in ("vis", "keypoint", "hdmap", "lidar"):
        if name in layers:
            w = min(weights.get(name, DEFAULT_CONTROL_WEIGHT), 1.0)
            out = out * (1.0 - 0.3 * w) + layers[name].astype(np.float32) * (0.3 * w)
    return np.clip(out, 0, 255).astype(np.uint8)


# 5x7 bitmap glyphs for the watermark: the frames themselves say they are a preview, not the model.
_GLYPHS = {
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "V": ("10001", "10001", "10001", "10001", "10001", "01010", "00100"),
    "I": ("11111", "00100", "00100", "00100", "00100", "00100", "11111"),
    "W": ("10001", "10001", "10001", "10101", "10101", "10101", "01010"),
}
WATERMARK = "PREVIEW"


def watermark_mask(text: str, scale: int) -> np.ndarray:
    """A boolean mask of ``text`` in the 5x7 font, each font pixel ``scale`` pixels wide."""
    rows = [" ".join(_GLYPHS[c][r] for c in text).replace(" ", "0") for r in range(7)]
    bits = np.array([[ch == "1" for ch in row] for row in rows], dtype=bool)
    return np.kron(bits, np.ones((scale, scale), dtype=bool)).astype(bool)


def stamp_watermark(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Light text on a darkened box in the top-left corner (in place)."""
    h, w = mask.shape
    pad = max(2, h // 4)
    if h + 2 * pad > frame.shape[0] or w + 2 * pad > frame.shape[1]:
        return frame
    box = frame[pad // 2 : h + pad + pad // 2, pad // 2 : w + pad + pad // 2]
    box[:] = (box.astype(np.uint16) // 3).astype(np.uint8)
    frame[pad : pad + h, pad : pad + w][mask] = 235
    return frame


class Mp4Writer:
    """H.264 (ultrafast, frame threads) to a temp name beside the target, renamed on commit."""

    def __init__(self, path: Path, width: int, height: int, fps: int):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        self.container = av.open(str(self.tmp), "w", format="mp4")
        self.container.metadata["comment"] = (
            "cosmos-assets preview backend: a preview of the pipeline, not Cosmos-Transfer1"
        )
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.thread_type = "FRAME"
        self.stream.codec_context.thread_count = 0
        self.stream.codec_context.options = {"preset": "ultrafast", "crf": "20"}
        self.time_base = Fraction(1, fps)
        self.frames = 0

    def write(self, frame: av.VideoFrame) -> None:
        frame.pts = self.frames
        frame.time_base = self.time_base  # decoded frames carry their source's time base
        frame.pict_type = PictureType.NONE  # let x264 choose frame types; decoded frames carry their own
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def commit(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the original error matters
            pass
        self.tmp.unlink(missing_ok=True)


def step_log(frames: int, num_steps: int, label: str) -> None:
    """Lines shaped like the model's per-chunk denoising progress (121-frame chunks, +120 each)."""
    chunks = 1 if frames <= CHUNK_FRAMES else 1 + math.ceil((frames - CHUNK_FRAMES) / (CHUNK_FRAMES - 1))
    delay = float(os.environ.get("COSMOS_PREVIEW_STEP_SECONDS", "0") or 0)
    for chunk in range(1, chunks + 1):
        for step in range(1, num_steps + 1):
            log(f"{BANNER}: {label} chunk {chunk}/{chunks} step {step}/{num_steps}")
            if delay:
                time.sleep(delay)


def sources(args: argparse.Namespace, controls: dict[str, dict]) -> dict[str, str]:
    """Layer name -> video path: 'base' is the input video; controls with their own input_control."""
    paths: dict[str, str] = {}
    if args.input_video_path:
        paths["base"] = args.input_video_path
    for name, control in controls.items():
        if control.get("input_control"):
            paths[name] = control["input_control"]
    return paths


def generate(args: argparse.Namespace, controls: dict[str, dict], weights: dict[str, float], out: Path) -> int:
    """Composite the inputs into ``out``; returns the frame count."""
    paths = sources(args, controls)
    probes = {name: count_frames(path) for name, path in paths.items()}
    frames = min(min(p[0] for p in probes.values()), MAX_FRAMES)
    first = probes.get("base") or next(iter(probes.values()))
    width, height = nearest_bucket(first[1], first[2])
    log(f"{BANNER}: inputs {', '.join(f'{n}={paths[n]} ({p[0]} frames)' for n, p in probes.items())}")
    log(f"{BANNER}: {frames} frames, resolution bucket {width}x{height} from {first[1]}x{first[2]}, fps {args.fps}")
    step_log(frames, args.num_steps, "generate")
    tint = grade_tint(str(args.prompt), int(args.seed))
    mask = watermark_mask(WATERMARK, max(1, height // 120))
    writer = Mp4Writer(out, width, height, args.fps)
    try:
        streams = {name: frames_of(path, width, height, "rgb24") for name, path in paths.items()}
        pending: deque[Future] = deque()
        # Compositing is numpy (GIL released) and runs in two threads while this one decodes and encodes.
        with ThreadPoolExecutor(2) as pool:
            for index in range(frames):
                layers = {name: _next_frame(s, paths[name], index).to_ndarray() for name, s in streams.items()}
                pending.append(
                    pool.submit(
                        lambda frame_layers=layers: stamp_watermark(composite(frame_layers, weights, tint), mask)
                    )
                )
                if len(pending) >= 4 or index + 1 == frames:
                    while pending and (len(pending) >= 4 or index + 1 == frames):
                        writer.write(av.VideoFrame.from_ndarray(pending.popleft().result(), format="rgb24"))
                        if writer.frames % 24 == 0 or writer.frames == frames:
                            log(f"{BANNER}: encoded {writer.frames}/{frames} frames")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return frames


def upscale(args: argparse.Namespace, out: Path) -> int:
    """The input video at 3x its size (Lanczos-free bicubic resize), same frame count."""
    frames, width, height = count_frames(args.input_video_path)
    frames = min(frames, MAX_FRAMES)
    big_w, big_h = width * UPSCALE_FACTOR, height * UPSCALE_FACTOR
    log(f"{BANNER}: upscale {args.input_video_path} {width}x{height} -> {big_w}x{big_h}, {frames} frames")
    step_log(frames, args.num_steps, f"upscale tiles {UPSCALE_FACTOR}x{UPSCALE_FACTOR}")
    writer = Mp4Writer(out, big_w, big_h, args.fps)
    try:
        stream = frames_of(args.input_video_path, big_w, big_h, "yuv420p")
        for index in range(frames):
            writer.write(_next_frame(stream, args.input_video_path, index))
            if (index + 1) % 24 == 0 or index + 1 == frames:
                log(f"{BANNER}: encoded {index + 1}/{frames} frames")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return frames


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    log(f"{BANNER}: starting; cwd {Path.cwd()}; spec {args.controlnet_specs}")
    rank, world = check_environment(args)
    spec = load_spec(args.controlnet_specs)
    controls, arguments = split_spec(spec, args.controlnet_specs)
    merge_arguments(args, arguments, argv)
    weights = validate(args, controls, args.controlnet_specs)
    log(
        f"{BANNER}: controls {', '.join(f'{k}={w:g}' for k, w in weights.items())}; seed {args.seed}; "
        f"num_steps {args.num_steps}; world size {world}"
    )
    simulate_model_load()
    if args.batch_input_path:
        return run_batch(args, controls, rank, world)
    if GUARDRAIL_MARKER in str(args.prompt):
        log("GUARDRAIL BLOCKED: the prompt was rejected by the text guardrail (preview stand-in); no video written")
        return EXIT_BLOCKED
    fault = next((name for name in TEST_FAULTS if name in str(args.prompt)), None)
    if fault is not None:
        fail_as_asked(fault, args)
    folder = Path(args.video_save_folder)
    out = folder / f"{args.video_save_name}.mp4"
    if rank != 0:
        step_log(1, args.num_steps, "generate")
        log(f"{BANNER}: rank {rank} of {world} done; rank 0 writes the output")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    frames = upscale(args, out) if "upscale" in controls else generate(args, controls, weights, out)
    write_text(folder / f"{args.video_save_name}.txt", str(args.prompt))
    log(f"{BANNER}: saved {out} ({frames} frames) in {time.perf_counter() - started:.1f}s")
    return 0


def fail_as_asked(fault: str, args: argparse.Namespace) -> None:
    """The fault stand-ins of the module doc; returns only for OOM_TEST_GPU when the transformer is offloaded."""
    log(f"{BANNER}: test fault {fault} asked for by the prompt")
    if fault == "OOM_TEST_GPU":
        if args.offload_diffusion_transformer:
            log(f"{BANNER}: --offload_diffusion_transformer given: the stand-in fits in GPU memory")
            return
        step_log(1, 2, "generate")
        print(
            "Traceback (most recent call last):\n"
            '  File "/workspace/cosmos_transfer1/diffusion/inference/transfer.py", line 380, in <module>\n'
            "    demo(args)\n"
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of "
            "79.10 GiB of which 1.20 GiB is free. Including non-PyTorch memory, this process has 77.89 GiB memory in "
            "use. (preview stand-in)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_RUNTIME)
    if fault == "OOM_TEST_HOST":
        held = []
        for _ in range(64):  # 64 x 16 MiB, every page written
            held.append(np.ones(16 * 2**20, dtype=np.uint8))
            time.sleep(0.05)
        log(f"{BANNER}: allocated 1 GiB and was not killed: this container has no memory limit")
        sys.exit(EXIT_RUNTIME)
    if fault == "HANG_TEST":
        time.sleep(600)
    log("error: the model failed (preview stand-in of a runtime error)")
    sys.exit(EXIT_RUNTIME)


def simulate_model_load() -> None:
    """Sleep COSMOS_PREVIEW_LOAD_SECONDS once per invocation, as loading the real model's weights would take; with
    COSMOS_PREVIEW_LOAD_COUNT (a file), add a line to it for each load (the batching tests and benchmark count them)."""
    counter = os.environ.get("COSMOS_PREVIEW_LOAD_COUNT")
    if counter:
        with open(counter, "a", encoding="utf-8") as handle:  # one short append per load: whole lines
            handle.write(f"{os.getpid()} {time.time():.3f}\n")
    delay = float(os.environ.get("COSMOS_PREVIEW_LOAD_SECONDS", "0") or 0)
    if delay > 0:
        log(f"{BANNER}: loading the model (simulated, {delay:g}s)")
        time.sleep(delay)
        log(f"{BANNER}: model loaded in {delay:.1f}s")


def read_batch(path: str, controls: dict[str, dict]) -> list[dict]:
    """The JSONL items of ``--batch_input_path``: each an object with ``prompt`` and optional ``visual_input`` and
    ``control_overrides`` (control name -> keys to update in the spec's control)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise UsageError(f"--batch_input_path {path}: file not found (relative to {Path.cwd()})") from exc
    items: list[dict] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--batch_input_path {path} line {number}: not valid JSON ({exc})") from exc
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise UsageError(f"--batch_input_path {path} line {number}: an object with a text 'prompt' is needed")
        overrides = item.get("control_overrides") or {}
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise UsageError(f"--batch_input_path {path} line {number}: control_overrides must map controls to objects")
        for name in overrides:
            if name not in controls:
                log(f"warning: ignoring unknown control key in override: {name}")
        items.append(item)
    if not items:
        raise UsageError(f"--batch_input_path {path}: no items")
    return items


def item_inputs(
    args: argparse.Namespace, controls: dict[str, dict], item: dict
) -> tuple[argparse.Namespace, dict[str, dict]]:
    """This item's arguments (its prompt and visual input) and controls (the spec's, updated by its overrides)."""
    item_args = argparse.Namespace(**vars(args))
    item_args.prompt = item["prompt"]
    item_args.input_video_path = item.get("visual_input") or ""
    item_controls = {name: dict(control) for name, control in controls.items()}
    for name, override in (item.get("control_overrides") or {}).items():
        if name in item_controls:
            item_controls[name].update(override)
    for path in [item_args.input_video_path] + [c.get("input_control") for c in item_controls.values()]:
        if path and not Path(path).is_file():
            raise RunError(f"batch item input video {path} not found (paths are relative to {Path.cwd()})")
    return item_args, item_controls


def run_batch(args: argparse.Namespace, controls: dict[str, dict], rank: int, world: int) -> int:
    """Upstream's batch loop (see the module doc): windows of --batch_size, blocked items dropped, survivors saved
    by position, an all-blocked window ending the program with upstream's TypeError."""
    items = read_batch(args.batch_input_path, controls)
    batch_size = max(1, int(args.batch_size))
    if "upscale" in controls and batch_size > 1:
        batch_size = 1
        log("Setting batch_size=1 as upscale does not support batch generation")
    folder = Path(args.video_save_folder)
    folder.mkdir(parents=True, exist_ok=True)
    log(f"{BANNER}: batch of {len(items)} item(s) from {args.batch_input_path}, batch size {batch_size}")
    for start in range(0, len(items), batch_size):
        window = items[start : start + batch_size]
        for i in range(len(window)):
            (folder / f"video_{start + i}").mkdir(parents=True, exist_ok=True)
        survivors = []
        for i, item in enumerate(window):
            if GUARDRAIL_MARKER in item["prompt"]:
                log(f"GUARDRAIL BLOCKED: batch item {start + i} was rejected by the text guardrail (preview stand-in)")
            else:
                survivors.append(item)
        if not survivors:
            log("Guardrail blocked generation for entire batch.")
            raise TypeError("cannot unpack non-iterable NoneType object")  # upstream unpacks generate()'s None
        for j, item in enumerate(survivors):
            item_args, item_controls = item_inputs(args, controls, item)
            weights = {name: control_weight(name, c, args.batch_input_path) for name, c in item_controls.items()}
            if rank != 0:
                step_log(1, args.num_steps, "generate")
                continue
            out_folder = folder / f"video_{start + j}"  # by position in the shorter list, as upstream saves them
            out = out_folder / "output.mp4"
            if "upscale" in item_controls:
                frames = upscale(item_args, out)
            else:
                frames = generate(item_args, item_controls, weights, out)
            write_text(out_folder / "prompt.txt", item["prompt"])
            log(f"{BANNER}: Saved video to {out} ({frames} frames)")
    if rank != 0:
        log(f"{BANNER}: rank {rank} of {world} done; rank 0 writes the outputs")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad flags or spec, 1 for runtime failures)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return run(args, argv)
    except UsageError as exc:
        log(f"error: {exc}")
        return EXIT_USAGE
    except RunError as exc:
        log(f"error: {exc}")
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
