"""One render-sensor tick over 10,000 shot folders: nothing changed, and one folder changed.

Not a test: it prints times (targets: under 1 s and 2 s on a 2-core machine). The folders are tiny but real:
each holds three valid 2x2 PNG frames, so the deep check (a stat per file) and the settle check see real
files. The changed folder is a full-size shot (121 frames x 3 passes, valid PNG headers) rewritten through
temp files + rename, so the tick really re-fingerprints and validates it.

    python -m bench.bench_sensor [WORKDIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media import MODALITIES, write_png
from cosmos_assets.watch.cursors import RenderCursor, SensorSettings
from cosmos_assets.watch.plans import plan_render_tick

FOLDERS = 10_000
CHANGED_FRAMES = 121
SETTLED_AGO_SECONDS = 3600.0


def _png_bytes(path: Path) -> bytes:
    write_png(path, np.zeros((2, 2, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.unlink()
    return data


def build_folders(layout: ProjectLayout, count: int) -> list[str]:
    """``count`` settled shot folders of one tiny frame per pass (skips folders that already exist)."""
    layout.renders_dir.mkdir(parents=True, exist_ok=True)
    png = _png_bytes(layout.renders_dir / ".probe.png")
    then = time.time() - SETTLED_AGO_SECONDS
    names = [f"shot_{i:05d}" for i in range(count)]
    for index, name in enumerate(names):
        folder = layout.render_dir(name)
        if folder.is_dir():
            continue
        folder.mkdir()
        rendered = then - index * 0.37  # distinct mtimes: distinct fingerprints, a realistic cursor size
        for modality in MODALITIES:
            frame = folder / f"{modality}.1001.png"
            frame.write_bytes(png)
            os.utime(frame, (rendered, rendered))
        os.utime(folder, (rendered, rendered))
    return names


def make_big_shot(folder: Path, frames: int, value: int) -> None:
    """A full-length shot with valid PNGs, written as renderers do (temp file + rename), then aged to settle."""
    for entry in folder.iterdir():
        entry.unlink()
    image = np.full((8, 8, 3), value % 256, dtype=np.uint8)
    for n in range(1001, 1001 + frames):
        for modality in MODALITIES:
            write_png(folder / f"{modality}.{n:04d}.png", image)
    then = time.time() - SETTLED_AGO_SECONDS / 2
    for entry in folder.iterdir():
        os.utime(entry, (then, then))
    os.utime(folder, (then, then))


def _timed_tick(layout: ProjectLayout, raw_cursor: str, settings: SensorSettings) -> tuple[float, str, int]:
    """Decode the cursor, plan, encode the new cursor: the work of one tick (without Dagster's own overhead)."""
    started = time.perf_counter()
    plan = plan_render_tick(
        layout,
        RenderCursor.load(raw_cursor),
        time.time(),
        settle_seconds=settings.render_settle_seconds,
        scan_budget=settings.render_scan_budget,
        deep_checks=settings.render_deep_checks,
    )
    encoded = plan.cursor.dump()
    return time.perf_counter() - started, encoded, len(plan.runs)


def bench_sensor_tick(workdir: Path) -> dict:
    """Times one tick with nothing changed and one with one folder changed over 10,000 folders."""
    layout = ProjectLayout(root=Path(workdir) / "sensor_project")
    settings = SensorSettings()
    names = build_folders(layout, FOLDERS)
    changed = layout.render_dir(names[FOLDERS // 2])
    make_big_shot(changed, CHANGED_FRAMES, value=1)

    warm = plan_render_tick(layout, RenderCursor(), time.time(), scan_budget=FOLDERS, deep_checks=0)
    cursor = warm.cursor.dump()

    unchanged_s, cursor, unchanged_runs = _timed_tick(layout, cursor, settings)
    make_big_shot(changed, CHANGED_FRAMES, value=int(time.time()))
    one_changed_s, cursor, changed_runs = _timed_tick(layout, cursor, settings)
    if unchanged_runs != 0 or changed_runs != 1:
        raise RuntimeError(
            f"bench folders not as expected: {unchanged_runs} runs unchanged, {changed_runs} after one change"
        )
    return {
        "unchanged_s": round(unchanged_s, 4),
        "one_changed_s": round(one_changed_s, 4),
        "folders": FOLDERS,
        "cursor_bytes": len(cursor),
        "deep_checks_per_tick": settings.render_deep_checks,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        result = bench_sensor_tick(Path(argv[0]))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-sensor-") as tmp:
            result = bench_sensor_tick(Path(tmp))
    print(f"render sensor tick over {result['folders']} folders (deep check {result['deep_checks_per_tick']}/tick):")
    print(f"  nothing changed: {result['unchanged_s']:.3f} s (target < 1 s)")
    print(f"  one changed:     {result['one_changed_s']:.3f} s (target < 2 s)")
    print(f"  cursor size:     {result['cursor_bytes'] / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
