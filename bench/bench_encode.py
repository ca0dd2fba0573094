"""Encode: the three control videos of the 121-frame 1280x704 sample render, ours vs the ffmpeg CLI.

The CLI runs with the seed's exact settings, one modality after another as ``convert_png_sequences.sh``
does::

    ffmpeg -y -framerate 24 -start_number N -i <modality>.%04d.png -c:v libx264 -crf 18 -pix_fmt yuv420p out.mp4

Depth is not the same job on both sides: the seed's CLI encodes the raw 16-bit Z pass (``gray16be`` is
cut to 8 bits, near = dark), ours first reads the whole clip for its Z range and converts to inverse
depth, near = bright (``media.encode.depth_lut``). Its PSNR is therefore measured against its own 8-bit
reference: ours against our converted gray, the CLI's against Z/257 (what the CLI was given).

Variants (all libx264 medium, CRF 18, yuv420p, 24 fps):
- ``cli``: the seed's three commands, one after another.
- ``ours``: ``encode_control_videos`` as it is in cosmos_assets/media/encode.py (nothing patched).
- ``cli x3 parallel``: the seed's three CLI commands started at once (a reference: what concurrency
  alone gives the CLI).
"""

from __future__ import annotations

import re
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType

import cosmos_assets.media.encode as media_encode
from cosmos_assets.media import (
    MODALITIES,
    RenderSequence,
    RenderValidationError,
    decode_png,
    encode_control_videos,
    scan_render_folder,
)
from cosmos_assets.media.sample_render import make_sample_render

FRAMES, WIDTH, HEIGHT = 121, 1280, 704
CLI = "cli"
CLI_PARALLEL = "cli x3 parallel"
OURS = "ours"
VARIANTS = (CLI, OURS, CLI_PARALLEL)


@dataclass
class EncodeFigures:
    reps: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # user+sys CPU seconds (this process + children)
    bytes: dict[str, dict[str, int]] = field(default_factory=dict)  # variant -> modality -> size
    psnr: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> modality -> dB
    x264: dict[str, str] = field(default_factory=dict)  # variant -> x264 options of color.mp4 (threads)
    gop: dict[str, str] = field(default_factory=dict)  # variant -> frame types of color.mp4

    def median(self, variant: str) -> float:
        return statistics.median(self.seconds[variant])

    def median_cpu(self, variant: str) -> float:
        return statistics.median(self.cpu[variant])

    def ratio(self, variant: str) -> float:
        """Our time / the seed CLI's time (< 1: ours faster)."""
        return self.median(variant) / self.median(CLI)


def sample_render(cache: Path) -> RenderSequence:
    """The 121-frame 1280x704 sample render, rendered once into ``cache`` and reused."""
    try:
        seq = scan_render_folder(cache)
        if (seq.frame_count, seq.width, seq.height) == (FRAMES, WIDTH, HEIGHT):
            return seq
    except RenderValidationError:
        pass
    shutil.rmtree(cache, ignore_errors=True)
    return make_sample_render(cache, frames=FRAMES, width=WIDTH, height=HEIGHT)


def cli_command(seq: RenderSequence, modality: str, out: Path) -> list[str]:
    first = seq.frames[modality][0].name
    digits = len(re.match(r"^\w+\.(\d+)\.png$", first).group(1))
    pattern = seq.folder / f"{modality}.%0{digits}d.png"
    return [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-framerate",
        "24",
        "-start_number",
        str(seq.first_frame),
        "-i",
        str(pattern),
        "-c:v",
        "libx264",
        "-crf",
        "18",
        "-pix_fmt",
        "yuv420p",
        str(out),
    ]


def encode_cli(seq: RenderSequence, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for modality in MODALITIES:
        subprocess.run(cli_command(seq, modality, out_dir / f"{modality}.mp4"), check=True)


def encode_cli_parallel(seq: RenderSequence, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(cli_command(seq, m, out_dir / f"{m}.mp4")) for m in MODALITIES]
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed: {proc.args}")


def encode_ours(seq: RenderSequence, out_dir: Path) -> None:
    encode_control_videos(seq, out_dir)


ENCODERS: dict[str, Callable[[RenderSequence, Path], None]] = {
    CLI: encode_cli,
    OURS: encode_ours,
    CLI_PARALLEL: encode_cli_parallel,
}


# ------------------------------------------------------------------------------------------ quality


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _decoded(path: Path, wanted: set[int]) -> Iterator[tuple[int, av.VideoFrame]]:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                yield i, frame
            if i >= max(wanted):
                break


def _luma_to_gray(frame: av.VideoFrame) -> np.ndarray:
    """Limited-range Y plane -> 8-bit full-range gray, as a player shows a gray video."""
    y = frame.to_ndarray()[: frame.height].astype(np.float64)
    return np.clip(np.round((y - 16.0) * 255.0 / 219.0), 0, 255)


def depth_references(seq: RenderSequence, wanted: set[int]) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """(ours: clip-normalised inverse depth via media.encode.depth_lut, cli: raw Z cut to 8 bits) per frame."""
    values = [media_encode._depth_values(decode_png(p)) for p in seq.frames["depth"]]
    ranges = [r for r in (media_encode._depth_range(v) for v in values) if r is not None]
    levels = 65536 if values[0].dtype == np.uint16 else 256
    lut = media_encode.depth_lut(min(r[0] for r in ranges), max(r[1] for r in ranges), levels)
    scale = 257.0 if levels == 65536 else 1.0
    ours = {i: lut[values[i]] for i in wanted}
    raw = {i: np.round(values[i] / scale) for i in wanted}
    return ours, raw


def psnr_of(
    variant_dir: Path, seq: RenderSequence, wanted: set[int], depth_ref: dict[int, np.ndarray]
) -> dict[str, float]:
    """Mean PSNR over the ``wanted`` frames of each control video against its source."""
    result = {}
    for modality in ("color", "segmentation"):
        scores = [
            _psnr(frame.to_ndarray(format="rgb24"), decode_png(seq.frames[modality][i]).to_ndarray(format="rgb24"))
            for i, frame in _decoded(variant_dir / f"{modality}.mp4", wanted)
        ]
        result[modality] = float(np.mean(scores))
    scores = [_psnr(_luma_to_gray(frame), depth_ref[i]) for i, frame in _decoded(variant_dir / "depth.mp4", wanted)]
    result["depth"] = float(np.mean(scores))
    return result


def x264_summary(path: Path) -> str:
    data = path.read_bytes()[:200_000]
    found = re.search(rb"threads=(\d+) lookahead_threads=(\d+) sliced_threads=(\d+)", data)
    return found.group(0).decode() if found else "?"


def frame_types(path: Path) -> str:
    counts: dict[str, int] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            name = PictureType(int(frame.pict_type)).name
            counts[name] = counts.get(name, 0) + 1
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


# ------------------------------------------------------------------------------------------ driver


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def variant_dir(outputs: Path, variant: str) -> Path:
    return outputs / variant.replace(" ", "_").replace(",", "").replace("+", "_")


def bench_encode(
    work: Path,
    reps: int = 5,
    psnr_step: int = 4,
    variants: tuple[str, ...] = VARIANTS,
    log: Callable[[str], None] = print,
) -> EncodeFigures:
    seq = sample_render(work / "sample_render_121")
    figures = EncodeFigures(reps=reps)
    outputs = work / "encode"
    for rep in range(reps):
        order = variants if rep % 2 == 0 else tuple(reversed(variants))  # interleaved, alternating order
        for variant in order:
            target = variant_dir(outputs, variant)
            shutil.rmtree(target, ignore_errors=True)
            cpu_before = _cpu_seconds()
            started = time.perf_counter()
            ENCODERS[variant](seq, target)
            figures.seconds.setdefault(variant, []).append(time.perf_counter() - started)
            figures.cpu.setdefault(variant, []).append(_cpu_seconds() - cpu_before)
        log(f"encode rep {rep + 1}/{reps}: " + ", ".join(f"{v} {figures.seconds[v][-1]:.2f}s" for v in variants))
    wanted = set(range(0, seq.frame_count, psnr_step)) | {seq.frame_count - 1}
    ours_depth, raw_depth = depth_references(seq, wanted)
    for variant in variants:
        target = variant_dir(outputs, variant)
        figures.bytes[variant] = {m: (target / f"{m}.mp4").stat().st_size for m in MODALITIES}
        depth_ref = raw_depth if variant.startswith(CLI) else ours_depth
        figures.psnr[variant] = psnr_of(target, seq, wanted, depth_ref)
        figures.x264[variant] = x264_summary(target / "color.mp4")
        figures.gop[variant] = frame_types(target / "color.mp4")
    return figures
