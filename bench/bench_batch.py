"""Batched generation vs one prompt at a time: ten prompts on the stand-in model with a fixed simulated model load.

The stand-in is the preview program (cosmos_assets/models/preview_model.py, also the test hosts' transfer.py) with
``COSMOS_PREVIEW_LOAD_SECONDS`` set: every invocation sleeps that long once and logs ``model loaded``, as loading
Cosmos-Transfer1's weights does before any generation. Both ways run through the real runner on this computer
(LocalMachine: one process per invocation, where an SSH host starts one container): ``one at a time`` is
``run_generation`` per prompt, ``batched`` is ``runs.batch.run_generations`` for the ten (one ``--batch_input_path``
invocation). Both with ``force`` so nothing is skipped, interleaved, ``REPS`` times each.

Figures: invocations (containers) started, model loads (``model loaded`` lines), total wall time, and the GPU-held
seconds per video (the invocation's time split over its items, as the run records count it; the preview holds no
GPU, so this is the time a GPU would be held). Ratios are batched / one at a time.

``python -m bench.bench_batch`` runs it alone and replaces only its own section of bench/RESULTS.md.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_orchestration import write_shot_and_prompts

BENCH_DIR = Path(__file__).resolve().parent
SHOT = "batch_shot"
SHOT_FRAMES = 24
SHOT_SIZE = (320, 176)
PROMPTS = 10
LOAD_SECONDS = 3.0
REPS = 2
SECTION_START = "<!-- bench_batch:start -->"
SECTION_END = "<!-- bench_batch:end -->"


@dataclass
class WayFigures:
    """One way of running the ten prompts, over ``REPS`` repetitions."""

    invocations: list[int] = field(default_factory=list)
    loads: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    gpu_s_per_video: list[float] = field(default_factory=list)
    succeeded: list[int] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(self, name))


@dataclass
class BatchFigures:
    prompts: int
    load_seconds: float
    single: WayFigures = field(default_factory=WayFigures)
    batched: WayFigures = field(default_factory=WayFigures)
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])  # of the shared machine, at the start

    def ratio(self, name: str) -> float:
        return self.batched.median(name) / self.single.median(name)


def make_project(root: Path, prompts: int) -> tuple[object, list[str]]:
    return write_shot_and_prompts(root, SHOT, prompts, SHOT_FRAMES, SHOT_SIZE)


def _gpu_seconds_per_video(layout, run_ids: set[str]) -> float:
    from cosmos_assets.runs.record_store import RunStore

    records = [r for r in RunStore(layout.runs_dir).all() if r.run_id in run_ids]
    held = sum(r.inference_seconds * r.num_gpus * (r.batch.gpu_share if r.batch else 1.0) for r in records)
    return held / len(records)


def _one_way(layout, names: list[str], batched: bool, figures: WayFigures) -> None:
    from cosmos_assets.machines.job import InferenceJob, LogLine, RunOutcome
    from cosmos_assets.machines.local import LocalMachine
    from cosmos_assets.models.registry import backend_named
    from cosmos_assets.runs.batch import run_generations
    from cosmos_assets.runs.batch_members import BatchOptions
    from cosmos_assets.runs.runner import run_generation

    class Counting(LocalMachine):
        runs = 0

        def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
            self.runs += 1
            return super().run(job, log)

    machine = Counting(layout.root / ".preview_host" / "cosmos-transfer1", label="preview@local")
    preview = backend_named("preview")
    lines: list[str] = []
    t0 = time.perf_counter()
    if batched:
        outcomes = run_generations(
            layout, names, lambda prompt: preview, lambda backend: machine, BatchOptions(log=lines.append, force=True)
        )
        results = [o.result for o in outcomes.values() if o.result is not None]
    else:
        results = [run_generation(layout, machine, preview, name, log=lines.append, force=True) for name in names]
    figures.wall_s.append(time.perf_counter() - t0)
    figures.invocations.append(machine.runs)
    figures.loads.append(sum("model loaded" in line for line in lines))
    figures.succeeded.append(len(results))
    figures.gpu_s_per_video.append(_gpu_seconds_per_video(layout, {r.record.run_id for r in results}))


def bench_batch(
    work: Path, prompts: int = PROMPTS, reps: int = REPS, log: Callable[[str], None] = print
) -> BatchFigures:
    layout, names = make_project(work / "batch_project", prompts)
    figures = BatchFigures(prompts=prompts, load_seconds=LOAD_SECONDS)
    old = os.environ.get("COSMOS_PREVIEW_LOAD_SECONDS")
    os.environ["COSMOS_PREVIEW_LOAD_SECONDS"] = str(LOAD_SECONDS)
    try:
        for rep in range(reps):
            order = (True, False) if rep % 2 == 0 else (False, True)
            for batched in order:
                _one_way(layout, names, batched, figures.batched if batched else figures.single)
                log(f"batch bench rep {rep + 1}: {'batched' if batched else 'one at a time'} done")
    finally:
        if old is None:
            os.environ.pop("COSMOS_PREVIEW_LOAD_SECONDS", None)
        else:
            os.environ["COSMOS_PREVIEW_LOAD_SECONDS"] = old
    return figures


def section(f: BatchFigures) -> list[str]:
    """The RESULTS.md section."""
    rows = [
        ("invocations (containers) started", "invocations", "{:.0f}"),
        ("model loads", "loads", "{:.0f}"),
        ("total wall time", "wall_s", "{:.1f} s"),
        ("GPU-held seconds per video", "gpu_s_per_video", "{:.2f} s"),
    ]
    lines = [
        SECTION_START,
        f"## 5. Batched generation: {f.prompts} prompts, batched vs one at a time",
        "",
        f"bench/bench_batch.py: the stand-in model (the preview program) with a fixed simulated model load of "
        f"{f.load_seconds:g} s per invocation (`COSMOS_PREVIEW_LOAD_SECONDS`), a {SHOT_FRAMES}-frame "
        f"{SHOT_SIZE[0]}x{SHOT_SIZE[1]} shot, {f.prompts} compatible prompts, through the real runner on this computer "
        "(one process per invocation; on an SSH host, one container). Batched: `runs.batch.run_generations` "
        "(one `--batch_input_path` invocation); one at a time: `run_generation` per prompt. Both forced (nothing "
        f"skipped), interleaved, median of {len(f.single.wall_s)} runs each. GPU-held seconds per video: the "
        "invocation's time split equally over the items it ran, as the run records count it (the preview holds no "
        "GPU: this is the time a GPU would be held).",
        "",
        "| figure | one at a time | batched | batched / one at a time |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, name, fmt in rows:
        lines.append(
            f"| {label} | {fmt.format(f.single.median(name))} | {fmt.format(f.batched.median(name))} | "
            f"{f.ratio(name):.2f}x |"
        )
    lines += [
        "",
        f"Videos made per way and run: one at a time {f.single.succeeded}, batched {f.batched.succeeded}. "
        f"Runs (s): one at a time {' '.join(f'{s:.1f}' for s in f.single.wall_s)}; batched "
        f"{' '.join(f'{s:.1f}' for s in f.batched.wall_s)}. Load average of the shared machine at the start: "
        f"{f.load_average:.1f} on {os.cpu_count()} cores"
        + (" (the times are inflated by it; the counts are exact)." if f.load_average >= 1.0 else "."),
        SECTION_END,
        "",
    ]
    return lines


def write_section(results: Path, lines: list[str], start: str = SECTION_START, end: str = SECTION_END) -> None:
    """Replace a benchmark's section of RESULTS.md (between ``start`` and ``end``; this one's by default), or add it
    at the end, leaving the others as they are."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    block = "\n".join(lines)
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end) + "\n?", re.S)
    text = pattern.sub(block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    results.write_text(text.rstrip() + "\n")


def main() -> int:
    out = BENCH_DIR / "out"
    out.mkdir(parents=True, exist_ok=True)
    f = bench_batch(out)
    lines = section(f)
    write_section(BENCH_DIR / "RESULTS.md", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
