"""Issue 19 item 4: the skip/adopt/placement decisions read an index of the run records, never every record, and
answer exactly as the full scan does; the index is derived (rebuilt when deleted, corrupt or out of date), keeps
every row when processes save at once, and a locked index means the full scan with one warning, never a failure."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cosmos_assets.defs.resources.placement import left_behind_hosts
from cosmos_assets.files import atomic_write_text
from cosmos_assets.runs import record_index
from cosmos_assets.runs import record_store as record_module
from cosmos_assets.runs.adopt import earlier_attempt, earlier_attempt_in, newer_success, superseded_by
from cosmos_assets.runs.record import FINAL_STATES, RunRecord
from cosmos_assets.runs.record_index import INDEX_FOLDER, INDEX_NAME, RecordIndex
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.skip import last_success, last_success_in
from cosmos_assets.runs.spec_used import InputFile
from tests.runs.test_bad_records import _bad_files, _write
from tests.runs.test_record import _record

FALLBACK = "reading every record instead"
STATES = ("planned", "running", "succeeded", "failed", "succeeded", "cancelled", "downloading", "guardrail_blocked")


def _run(
    base: RunRecord,
    number: int,
    *,
    prompt: str = "p1",
    host: str = "gpu-a",
    state: str = "succeeded",
    minute: int = 0,
    detached: bool = False,
    work: int = 0,
    prefix: str = "20260101_000000",
) -> RunRecord:
    run_id = f"{prefix}_{number:08x}"
    created = base.created_at + timedelta(minutes=minute)
    inputs = [InputFile(path=i.path, size=i.size, sha256=f"{work:064x}") for i in base.inputs]  # work: other content
    return base.model_copy(
        update={
            "run_id": run_id,
            "prompt": prompt,
            "host": host,
            "state": state,
            "detached": detached,
            "inputs": inputs,
            "remote_output_folder": f"outputs/{prompt}/{run_id}",
            "created_at": created,
            "finished_at": created + timedelta(minutes=number % 7) if state == "succeeded" else None,
        }
    )


def _mixed(base: RunRecord, count: int = 120) -> Iterator[RunRecord]:
    """Prompts, hosts, states, works and detached runs mixed; created times tie in pairs (ordering ties matter)."""
    for n in range(count):
        yield _run(
            base,
            n + 1,
            prompt=("p1", "p2")[n % 2],
            host=("gpu-a", "gpu-b", "gpu-c")[n % 3],
            state=STATES[n % len(STATES)],
            minute=n // 2,
            detached=n % 5 == 0,
            work=n % 4,
        )


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every record file read (the scan and the index both read through ``record_store.read_record``)."""
    reads: list[Path] = []
    real = record_module.read_record

    def counting(path: Path) -> RunRecord:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(record_module, "read_record", counting)
    return reads


@pytest.fixture
def no_stale_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decisions must come from the index itself, not from the scan after it missed a change."""

    def fail(index: RecordIndex) -> None:
        raise AssertionError("the index missed a change and the decision fell back to the scan")

    monkeypatch.setattr(record_index, "_forget_freshness", fail)


def _ids(record: RunRecord | None) -> str | None:
    return None if record is None else record.run_id


def test_the_index_answers_as_the_full_scan_over_a_mixed_folder(
    tmp_path: Path, counted_reads: list[Path], no_stale_fallback: None
) -> None:
    base = _record(tmp_path / "inputs")
    warnings: list[str] = []
    store = RunStore(tmp_path / "runs", warn=warnings.append)
    for record in _mixed(base):
        store.save(record)
    bad = _bad_files(tmp_path)
    for name, (content, _) in bad.items():
        _write(store.folder, name, content)
    records = store.all()
    probes = [
        _run(base, 999, prompt=p, host=h, state="planned", minute=1000, work=w)
        for p in ("p1", "p2", "p3")
        for h in ("gpu-a", "gpu-b", "gpu-c")
        for w in range(5)
    ]
    last_success(store, "p1", "generate")  # builds the index: reads every file once
    counted_reads.clear()
    for probe in probes:
        assert _ids(last_success(store, probe.prompt, "generate")) == _ids(
            last_success_in(records, probe.prompt, "generate")
        )
        assert _ids(earlier_attempt(store, probe)) == _ids(earlier_attempt_in(records, probe))
    assert len(counted_reads) <= 2 * len(probes)  # each decision reads the one record it found, if any
    for left in records:
        assert _ids(newer_success(store, left)) == _ids(superseded_by(records, left)), left.run_id
    for prompt in ("p1", "p2", "p3"):
        scanned = [
            r.host
            for r in reversed(records)
            if r.prompt == prompt and (not r.is_final or r.detached) and superseded_by(records, r) is None
        ]
        assert left_behind_hosts(store.folder, prompt, "generate") == list(dict.fromkeys(scanned))
    assert any(earlier_attempt(store, p) for p in probes) and any(
        left_behind_hosts(store.folder, p, "generate") for p in ("p1", "p2")
    )
    assert (store.folder / INDEX_FOLDER / INDEX_NAME).is_file() and not [w for w in warnings if FALLBACK in w]
    for name, (_, words) in bad.items():  # named once, as the full scan names them
        (said,) = [w for w in warnings if f"{store.folder / name}:" in w]
        assert words in said and said.endswith("to silence this)"), said
    assert set(record_index._FINAL) == FINAL_STATES


def test_a_decision_on_a_fresh_index_reads_only_the_records_it_points_at(
    tmp_path: Path, counted_reads: list[Path]
) -> None:
    base = _record(tmp_path / "inputs")
    store = RunStore(tmp_path / "runs")
    for record in _mixed(base, 60):
        store.save(record)
    last_success(store, "p1", "generate")  # builds the index
    counted_reads.clear()
    found = last_success(store, "p1", "generate")
    assert found is not None and counted_reads == [store.path(found.run_id)]


def _success(base: RunRecord, number: int, minute: int) -> RunRecord:
    return _run(base, number, prompt="p9", state="succeeded", minute=minute)


def test_the_index_is_rebuilt_when_deleted_truncated_or_changed_behind_its_back(
    tmp_path: Path, no_stale_fallback: None
) -> None:
    base = _record(tmp_path / "inputs")
    warnings: list[str] = []
    store = RunStore(tmp_path / "runs", warn=warnings.append)
    store.save(_success(base, 1, 0))
    index = store.folder / INDEX_FOLDER / INDEX_NAME
    assert _ids(last_success(store, "p9", "generate")) == "20260101_000000_00000001" and index.is_file()

    index.unlink()
    assert _ids(last_success(store, "p9", "generate")) == "20260101_000000_00000001" and index.is_file()
    for damage in (
        lambda: os.truncate(index, 100),
        lambda: index.write_bytes(b"not a database" * 300),
        lambda: os.truncate(index, 0),
    ):
        damage()
        assert _ids(last_success(store, "p9", "generate")) == "20260101_000000_00000001"

    # another process (an older version, a copy from a backup) writes records without the index
    newer = _success(base, 2, 5)
    atomic_write_text(store.path(newer.run_id), newer.model_dump_json())
    assert _ids(last_success(store, "p9", "generate")) == newer.run_id  # added behind its back
    store.path(newer.run_id).unlink()
    assert _ids(last_success(store, "p9", "generate")) == "20260101_000000_00000001"  # removed behind its back
    planned = _run(base, 3, prompt="p9", state="planned", minute=9)
    store.save(planned)
    time.sleep(0.03)  # a later tick of the folder's clock than the save's (the same tick: test_..._same_clock_tick)
    done = planned.model_copy(update={"state": "succeeded", "finished_at": planned.created_at + timedelta(hours=1)})
    atomic_write_text(store.path(done.run_id), done.model_dump_json())
    assert _ids(last_success(store, "p9", "generate")) == done.run_id  # rewritten behind its back
    assert not [w for w in warnings if FALLBACK in w], warnings


def test_a_record_that_no_longer_matches_its_row_is_decided_by_the_scan_then_reindexed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted_reads: list[Path]
) -> None:
    monkeypatch.setattr(record_index, "RACY_NS", 0)  # trust the folder mtime at once
    monkeypatch.setattr(record_index, "RACY_WHOLE_SECOND_NS", 0)
    base = _record(tmp_path / "inputs")
    store = RunStore(tmp_path / "runs")
    first, second = _success(base, 1, 0), _success(base, 2, 5)
    store.save(first)
    store.save(second)
    assert _ids(last_success(store, "p9", "generate")) == second.run_id
    before = os.stat(store.folder)
    failed = second.model_copy(update={"state": "failed"})  # rewritten behind its back within the folder's clock tick
    atomic_write_text(store.path(second.run_id), failed.model_dump_json())
    os.utime(store.folder, ns=(before.st_atime_ns, before.st_mtime_ns))
    counted_reads.clear()
    assert _ids(last_success(store, "p9", "generate")) == first.run_id  # its row said succeeded: the scan decided
    assert len(counted_reads) == 1 + 2  # the record its row pointed at, then every record
    counted_reads.clear()
    assert _ids(last_success(store, "p9", "generate")) == first.run_id
    assert len(counted_reads) == 1 + 1  # resynchronized: the changed file read again, then the one found


def test_a_rename_behind_its_back_in_the_same_clock_tick_as_a_save_is_caught_by_the_periodic_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _record(tmp_path / "inputs")
    store = RunStore(tmp_path / "runs")
    store.save(_success(base, 1, 0))
    assert _ids(last_success(store, "p9", "generate")) == "20260101_000000_00000001"
    planned = _run(base, 3, prompt="p9", state="planned", minute=9)
    store.save(planned)
    after_save = os.stat(store.folder)
    done = planned.model_copy(update={"state": "succeeded", "finished_at": planned.created_at + timedelta(hours=1)})
    atomic_write_text(store.path(done.run_id), done.model_dump_json())
    os.utime(store.folder, ns=(after_save.st_atime_ns, after_save.st_mtime_ns))  # the folder's mtime did not move
    assert (
        _ids(last_success(store, "p9", "generate")) == "20260101_000000_00000001"
    )  # not seen: the save's mtime trusted
    monkeypatch.setattr(record_index, "VERIFY_EVERY_NS", 0)  # the periodic whole stat is due
    assert _ids(last_success(store, "p9", "generate")) == done.run_id


def _save_many(folder: str, prefix: str, count: int) -> None:
    base = _record(Path(folder).parent / f"inputs-{prefix}")
    store = RunStore(Path(folder))
    for number in range(count):
        store.save(_run(base, number, prompt="p5", state="succeeded", minute=number, prefix=prefix))


def test_two_processes_saving_at_once_lose_no_index_row(tmp_path: Path) -> None:
    base = _record(tmp_path / "inputs")
    store = RunStore(tmp_path / "runs")
    store.save(_run(base, 1))
    assert last_success(store, "p1", "generate") is not None  # the index exists: saves now write their rows
    context = multiprocessing.get_context("fork")
    savers = [
        context.Process(target=_save_many, args=(str(store.folder), prefix, 200))
        for prefix in ("20260102_000000", "20260103_000000")
    ]
    for saver in savers:
        saver.start()
    for saver in savers:
        saver.join(timeout=300)
    assert [s.exitcode for s in savers] == [0, 0]
    with sqlite3.connect(
        store.folder / INDEX_FOLDER / INDEX_NAME
    ) as conn:  # the rows the saves wrote, before any resync
        rows = {name for (name,) in conn.execute("SELECT name FROM files WHERE bad IS NULL AND prompt = 'p5'")}
    on_disk = {p.name for p in store.folder.glob("*.json")} - {"20260101_000000_00000001.json"}
    assert len(on_disk) == 400 and rows == on_disk
    assert _ids(last_success(store, "p5", "generate")) is not None


def test_a_locked_index_falls_back_to_the_full_scan_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RecordIndex, "busy_seconds", 0.2)
    base = _record(tmp_path / "inputs")
    warnings: list[str] = []
    store = RunStore(tmp_path / "runs", warn=warnings.append)
    store.save(_success(base, 1, 0))
    assert last_success(store, "p9", "generate") is not None
    newer = _success(base, 2, 5)
    atomic_write_text(store.path(newer.run_id), newer.model_dump_json())  # stale: the lookup must write the index
    holder = sqlite3.connect(store.folder / INDEX_FOLDER / INDEX_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for _ in range(2):
            assert _ids(last_success(store, "p9", "generate")) == newer.run_id
        third = _success(base, 3, 9)
        store.save(third)  # a save is never stopped by the index
        assert store.load(third.run_id).state == "succeeded"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    fallbacks = [w for w in warnings if FALLBACK in w]
    assert (
        len(fallbacks) == 1
        and "is locked" in fallbacks[0]
        and str(store.folder / INDEX_FOLDER / INDEX_NAME) in fallbacks[0]
    )
    assert _ids(last_success(store, "p9", "generate")) == "20260101_000000_00000003"  # caught up once free


def test_an_index_that_cannot_be_opened_falls_back_with_one_warning(tmp_path: Path) -> None:
    base = _record(tmp_path / "inputs")
    warnings: list[str] = []
    store = RunStore(tmp_path / "runs", warn=warnings.append)
    store.save(_success(base, 1, 0))
    (store.folder / INDEX_FOLDER / INDEX_NAME).mkdir(
        parents=True
    )  # something not a database in its place, that cannot be removed as one
    for _ in range(2):
        assert _ids(last_success(store, "p9", "generate")) == "20260101_000000_00000001"
    assert len([w for w in warnings if FALLBACK in w]) == 1


def test_the_index_files_get_the_mode_the_umask_allows(tmp_path: Path) -> None:
    base = _record(tmp_path / "inputs")
    store = RunStore(tmp_path / "runs")
    store.save(_success(base, 1, 0))
    previous = os.umask(0o002)
    try:
        modes = store.index.use(
            lambda conn: {
                p.name: stat.S_IMODE(p.stat().st_mode)
                for p in [*store.index.path.parent.glob(f"{INDEX_NAME}*"), store.index.path.parent]
            }
        )
    finally:
        os.umask(previous)
    assert modes == {INDEX_NAME: 0o664, f"{INDEX_NAME}-wal": 0o664, f"{INDEX_NAME}-shm": 0o664, INDEX_FOLDER: 0o775}
