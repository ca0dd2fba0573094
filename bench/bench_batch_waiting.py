"""Ten prompts through the full cycle as the sensor starts them: one run per prompt (batching of waiting prompts off,
``COSMOS_BATCH_MAX=1``: each run's generation and upscale are their own invocations, today's behaviour) against
the run holding the host taking the waiting prompts into its invocations (the default).

The real ``dagster-daemon`` on a fresh project and DAGSTER_HOME (the repo's dagster.yaml: the queued run coordinator
runs GPU runs one at a time per host), the prompt sensor with auto-generate on, the preview host on this computer:
the stand-in model (the preview program, also the test hosts' transfer.py) with a fixed simulated model load
(``COSMOS_PREVIEW_LOAD_SECONDS``) counted by the program itself (``COSMOS_PREVIEW_LOAD_COUNT``). The ten prompt
files are saved at once, before the daemon's first tick.

Figures per way: invocations (on an SSH host, containers) from the run records, model loads from the stand-in's
counter, total time (first run started to last run ended, from Dagster's run records), and GPU-held seconds per
video (each invocation's time split over its items, generation and upscale, as the records count it). Ratios are
new / one run per prompt.

``python -m bench.bench_batch_waiting`` runs it and replaces only its own section of bench/RESULTS.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.bench_batch import write_section
from bench.bench_orchestration import write_shot_and_prompts

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SHOT = "wait_shot"
SHOT_FRAMES = 24
SHOT_SIZE = (320, 176)
PROMPTS = 10
LOAD_SECONDS = 3.0
DEADLINE_S = 1200
SECTION_START = "<!-- bench_batch_waiting:start -->"
SECTION_END = "<!-- bench_batch_waiting:end -->"


@dataclass
class Way:
    name: str
    invocations: int = 0
    loads: int = 0
    total_s: float = 0.0
    gpu_s_per_video: float = 0.0
    videos: int = 0
    upscales: int = 0


def _project(root: Path) -> tuple[object, list[str], Path]:
    import dagster as dg

    layout, names = write_shot_and_prompts(root, SHOT, PROMPTS, SHOT_FRAMES, SHOT_SIZE)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    dg.DagsterInstance.from_config(str(home)).dispose()  # the schema made before the daemon and its code server start
    return layout, names, home


def _all_done(layout, names: list[str]) -> bool:
    return all((layout.upscaled_dir(name) / "output.mp4").is_file() for name in names)


def run_way(work: Path, name: str, batch_max: int) -> Way:
    import dagster as dg

    from cosmos_assets.runs.record_store import RunStore

    root = work / f"waiting_{name}"
    layout, names, home = _project(root)
    counter = root / "loads.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "DAGSTER_"))} | {
        "DAGSTER_HOME": str(home),
        "COSMOS_PROJECT_ROOT": str(root),
        "COSMOS_HOST": "preview",
        "COSMOS_SENSORS": "on",
        "COSMOS_AUTO_GENERATE": "on",
        "COSMOS_SENSOR_INTERVAL": "2",
        "COSMOS_RENDER_SETTLE_SECONDS": "3600",
        "COSMOS_BATCH_MAX": str(batch_max),
        "COSMOS_PREVIEW_LOAD_SECONDS": str(LOAD_SECONDS),
        "COSMOS_PREVIEW_LOAD_COUNT": str(counter),
    }
    daemon_log = root / "daemon.log"
    with daemon_log.open("wb") as sink:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "cosmos_assets.definitions"],
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + DEADLINE_S
        with dg.DagsterInstance.from_config(str(home)) as instance:
            while True:
                runs = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/sensor_name": "prompt_sensor"}))
                ended = [r for r in runs if r.dagster_run.is_finished]
                if _all_done(layout, names) and len(runs) == PROMPTS and len(ended) == PROMPTS:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: not done in {DEADLINE_S} s; {daemon_log}")
                time.sleep(1)
            failed = [r.dagster_run.run_id for r in runs if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
            if failed:
                raise RuntimeError(f"{name}: runs failed {failed}; {daemon_log}")
            starts = [r.start_time for r in runs if r.start_time]
            ends = [r.end_time for r in runs if r.end_time]
    finally:
        os.killpg(daemon.pid, 15)
        daemon.wait(timeout=60)
    records = [r for r in RunStore(layout.runs_dir).all() if r.state == "succeeded"]
    invocations = {r.batch.batch_id if r.batch else r.run_id for r in records}
    held = sum(r.inference_seconds * r.num_gpus * (r.batch.gpu_share if r.batch else 1.0) for r in records)
    return Way(
        name=name,
        invocations=len(invocations),
        loads=len(counter.read_text().splitlines()),
        total_s=max(ends) - min(starts),
        gpu_s_per_video=held / len(names),
        videos=sum((layout.output_dir(n) / "output.mp4").is_file() for n in names),
        upscales=sum((layout.upscaled_dir(n) / "output.mp4").is_file() for n in names),
    )


def section(old: Way, new: Way) -> list[str]:
    rows = [
        ("invocations (containers) started", "invocations", "{:.0f}"),
        ("model loads", "loads", "{:.0f}"),
        ("total time, first run start to last run end", "total_s", "{:.1f} s"),
        ("GPU-held seconds per video (generation + upscale)", "gpu_s_per_video", "{:.2f} s"),
    ]
    lines = [
        SECTION_START,
        f"## 7. {PROMPTS} prompts through the full cycle as the sensor starts them: one run per prompt vs the waiting batched",
        "",
        f"bench/bench_batch_waiting.py: the real `dagster-daemon`, the prompt sensor with auto-generate on, {PROMPTS} "
        "prompt files saved at once; the preview host on this computer, the stand-in model with a fixed simulated "
        f"load of {LOAD_SECONDS:g} s per invocation counted by the stand-in itself; a {SHOT_FRAMES}-frame "
        f"{SHOT_SIZE[0]}x{SHOT_SIZE[1]} shot. One run per prompt: `COSMOS_BATCH_MAX=1` (each run's generation and "
        "upscale are their own invocations, as before issue 19); new: the defaults (the run holding the host takes "
        "the prompts queued for it, docs/batching.md). One run each way (the counts are exact; the times include "
        "each Dagster run worker's start, the same for both).",
        "",
        "| figure | one run per prompt | new | new / one run per prompt |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, attr, fmt in rows:
        a, b = getattr(old, attr), getattr(new, attr)
        lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f}x |")
    load = os.getloadavg()[0]
    lines += [
        "",
        f"Videos and upscales made: one run per prompt {old.videos} + {old.upscales}, new {new.videos} + "
        f"{new.upscales}. Load average of the shared machine at the end: {load:.1f} on {os.cpu_count()} cores.",
        SECTION_END,
        "",
    ]
    return lines


def main() -> int:
    out = BENCH_DIR / "out"
    out.mkdir(parents=True, exist_ok=True)
    old = run_way(out, "one_run_per_prompt", batch_max=1)
    print(old)
    new = run_way(out, "waiting_batched", batch_max=16)
    print(new)
    lines = section(old, new)
    write_section(BENCH_DIR / "RESULTS.md", lines, SECTION_START, SECTION_END)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
