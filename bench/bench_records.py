"""Skip/adopt decision time over many run records: the full scan (every record parsed, the fallback when the index cannot be used) against the
records' index (cosmos_assets/runs/record_index.py), at 1,000 and 100,000 records, side by side in one run.

The records are made quickly: one valid record serialized once, written again with other run ids, prompts, creation
times and spec hashes (a few left behind, most succeeded). They are cached under the temp folder
(``$TMPDIR/cosmos-bench-records-v1/<count>``, reused while complete), so the 100,000 case is generated once (about a
minute here). A decision is what a run does before it starts: ``skip.last_success`` then ``adopt.earlier_attempt``
for one prompt. Index figures: the first lookup (building the index from nothing), a lookup on a settled index (the
usual case), one just after a save by this version, and one just after a record was rewritten by a process without
the index (the lookup then stats every record file).
Ratios, never a pass/fail time.

``python -m bench.bench_records [--quick]`` runs it alone and replaces only its own section of bench/RESULTS.md.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cosmos_assets.files import atomic_write_text
from cosmos_assets.runs.adopt import earlier_attempt, earlier_attempt_in
from cosmos_assets.runs.record import RunRecord
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.skip import last_success, last_success_in

BENCH_DIR = Path(__file__).resolve().parent
COUNTS = (1_000, 100_000)
PROMPTS = 500
SETTLE_S = 0.05  # past record_index.RACY_NS: the folder's mtime is then trusted
SECTION_START = "<!-- bench_records:start -->"
SECTION_END = "<!-- bench_records:end -->"
_START = datetime(2025, 1, 1, tzinfo=UTC)
_ID, _PROMPT, _CREATED, _SHA, _STATE = (
    "19990101_000000_00000000",
    "zzprompt",
    "1999-01-01T00:00:00Z",
    "f" * 64,
    "zzstate",
)


def _template() -> str:
    record = RunRecord(
        run_id=_ID,
        stage="generate",
        prompt=_PROMPT,
        shot="shot_a",
        host="ssh@gpu1",
        runtime="docker",
        model="cosmos-transfer1",
        model_label="Cosmos-Transfer1-7B",
        preview=False,
        remote_output_folder=f"outputs/{_PROMPT}/{_ID}",
        spec={"prompt": "a street at dusk"},
        spec_remote_path=f"inputs/prompts/{_PROMPT}.json",
        spec_sha256=_SHA,
        settings={"num_gpus": 1, "seed": 1},
        created_at=datetime(1999, 1, 1, tzinfo=UTC),
        log_tail=["loading model", "model loaded", "done"] * 5,
    )
    return record.model_dump_json(indent=2).replace('"planned"', f'"{_STATE}"') + "\n"


def _record_text(template: str, number: int) -> tuple[str, str]:
    when = _START + timedelta(seconds=number)
    run_id = f"{when:%Y%m%d_%H%M%S}_{number:08x}"
    state = "running" if number % 97 == 0 else ("failed" if number % 13 == 0 else "succeeded")
    text = (
        template.replace(_ID, run_id)
        .replace(_PROMPT, f"p{number % PROMPTS:04d}")
        .replace(_CREATED, f"{when:%Y-%m-%dT%H:%M:%SZ}")
        .replace(_SHA, f"{number % 7:064x}")
        .replace(f'"{_STATE}"', f'"{state}"')
    )
    return run_id, text


def records_folder(count: int, log: Callable[[str], None] = print) -> Path:
    """``count`` records in a cached folder (made once; a folder left incomplete is made again)."""
    root = Path(tempfile.gettempdir()) / "cosmos-bench-records-v1" / str(count)
    runs, done = root / "runs", root / "complete"
    if done.is_file():
        return runs
    shutil.rmtree(root, ignore_errors=True)
    runs.mkdir(parents=True)
    started, template = time.perf_counter(), _template()
    for number in range(count):
        run_id, text = _record_text(template, number)
        (runs / f"{run_id}.json").write_text(text)
    done.write_text(f"{count}\n")
    log(f"made {count} records in {time.perf_counter() - started:.1f} s under {runs}")
    return runs


@dataclass
class CountFigures:
    count: int
    scan_s: list[float] = field(default_factory=list)
    build_s: float = 0.0
    settled_s: list[float] = field(default_factory=list)
    after_save_s: list[float] = field(default_factory=list)
    behind_s: list[float] = field(default_factory=list)

    @staticmethod
    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")


def _probe(store: RunStore) -> RunRecord:
    """A planned run of a prompt that has runs: the newest left-behind one of its work, if any, to adopt."""
    template = _template()
    _, text = _record_text(template, 97 * 3)  # a left-behind run ("running")
    record = RunRecord.model_validate_json(text)
    return record.model_copy(
        update={
            "run_id": "20270101_000000_0000abcd",
            "state": "planned",
            "remote_output_folder": f"outputs/{record.prompt}/20270101_000000_0000abcd",
        }
    )


def _timed(decision: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    answer = decision()
    return time.perf_counter() - started, answer


def bench_count(count: int, reps: int, log: Callable[[str], None] = print) -> CountFigures:
    runs = records_folder(count, log)
    store = RunStore(runs, warn=log)
    probe = _probe(store)
    figures = CountFigures(count)
    store.index.remove()
    time.sleep(max(0.0, SETTLE_S - (time.time() - runs.stat().st_mtime)))  # a folder settled, as a project's usually is

    def scanned() -> object:
        return (last_success_in(store.all(), probe.prompt, "generate"), earlier_attempt_in(store.all(), probe))

    def indexed() -> object:
        return (last_success(store, probe.prompt, "generate"), earlier_attempt(store, probe))

    figures.build_s, built = _timed(indexed)
    scan_reps = 1 if count > 10_000 else reps
    for rep in range(max(reps, scan_reps)):  # interleaved
        if rep < scan_reps:
            seconds, expected = _timed(scanned)
            figures.scan_s.append(seconds)
            assert _ids(expected) == _ids(built), "the index and the scan disagree"
        figures.settled_s.append(_timed(indexed)[0])
        saved = probe.model_copy(
            update={
                "run_id": "20270101_000001_0000abce",
                "state": "failed",
                "remote_output_folder": f"outputs/{probe.prompt}/20270101_000001_0000abce",
            }
        )
        store.save(saved)  # by a process of this version: its row written in the same call
        time.sleep(SETTLE_S)
        figures.after_save_s.append(_timed(indexed)[0])
        atomic_write_text(store.path(saved.run_id), saved.model_copy(update={"state": "cancelled"}).model_dump_json())
        time.sleep(SETTLE_S)  # rewritten by a process without the index: the next lookup stats every record file
        figures.behind_s.append(_timed(indexed)[0])
        store.path(saved.run_id).unlink()
        time.sleep(SETTLE_S)
        indexed()
    log(
        f"{count} records: scan {figures.median(figures.scan_s):.3f} s, index settled "
        f"{figures.median(figures.settled_s):.4f} s, after a save {figures.median(figures.after_save_s):.4f} s, "
        f"after a change behind its back {figures.median(figures.behind_s):.3f} s, "
        f"build {figures.build_s:.1f} s"
    )
    return figures


def _ids(answer: object) -> tuple[object, ...]:
    return tuple(getattr(item, "run_id", None) for item in answer)  # type: ignore[attr-defined]


def bench_records(
    counts: tuple[int, ...] = COUNTS, reps: int = 3, log: Callable[[str], None] = print
) -> list[CountFigures]:
    return [bench_count(count, reps, log) for count in counts]


def section(results: list[CountFigures]) -> list[str]:
    lines = [
        SECTION_START,
        "## 6. Skip/adopt decision over many run records: full scan vs the records' index",
        "",
        "bench/bench_records.py: one decision = `skip.last_success` + `adopt.earlier_attempt` for one prompt, as a run "
        "makes before it starts. Full scan: every record parsed (`RunStore.all()`, the code before issue 19); index: "
        "`outputs/.runs/.index/records.sqlite` (docs/runs.md). Settled: the folder unchanged since the index last "
        "looked. After a save: a record saved by this version 50 ms before (its row written by the save). After a "
        "change behind its back: a record rewritten 50 ms before by a process without the index (the lookup stats "
        "every record file and reads the one changed). Built from nothing: the first lookup, no index. Medians; the "
        f"scan at 100,000 records once. Records: one valid record rewritten with other ids, times, {PROMPTS} prompts.",
        "",
        "| records | full scan | index, settled | index, after a save | index, after a change behind its back | "
        "index built from nothing | scan / settled | scan / behind its back |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in results:
        scan, settled, behind = f.median(f.scan_s), f.median(f.settled_s), f.median(f.behind_s)
        lines.append(
            f"| {f.count:,} | {scan:.2f} s | {settled * 1000:.1f} ms | {f.median(f.after_save_s) * 1000:.1f} ms | "
            f"{behind:.3f} s | {f.build_s:.1f} s | {scan / settled:,.0f}x | {scan / behind:,.0f}x |"
        )
    return lines + ["", SECTION_END]


def write_section(results: Path, lines: list[str]) -> None:
    text = results.read_text() if results.is_file() else "# Benchmark results\n"
    block = "\n".join(lines) + "\n"
    pattern = re.compile(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END) + "\n?", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    results.write_text(text.rstrip() + "\n")


def run(plan: object, report: object) -> None:
    """``python -m bench`` part ``records``: the section, and the 100,000-record ratios in the summary."""
    results = bench_records(reps=2 if getattr(plan, "quick", False) else 3)
    report.sections += section(results)  # type: ignore[attr-defined]
    big = results[-1]
    settled, behind = big.median(big.settled_s), big.median(big.behind_s)
    report.figure(
        f"skip/adopt decision at {big.count:,} records, index (settled / after a change behind its back)",  # type: ignore[attr-defined]
        f"{settled:.3f} s / {behind:.3f} s",
        "< 1 s",
        behind < 1.0,
    )
    report.figure(
        f"skip/adopt decision at {big.count:,} records: full scan / index (settled)",  # type: ignore[attr-defined]
        f"{big.median(big.scan_s) / settled:,.0f}x",
        "-",
        None,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    results = bench_records(reps=2 if "--quick" in args else 3)
    lines = section(results)
    write_section(BENCH_DIR / "RESULTS.md", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
