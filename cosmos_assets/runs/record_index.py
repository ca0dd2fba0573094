"""The run records' index: ``outputs/.runs/.index/records.sqlite``, so a skip or adopt decision reads a few records, not all.

The records stay the truth; the index is derived from them and holds, per file in the folder, what the decisions
select on (prompt, stage, state, host, detached, inputs digest, created and finished times, run id, the run it reproduces) and the file's
identity when read (inode, mtime, size), or why the file is not a good record (named once per process in a warning
and left out, as :meth:`~cosmos_assets.runs.record_store.RunStore.all` does). The decision functions take the few files the
index points at and read them again (:func:`~cosmos_assets.runs.record_store.read_record`); a file that no longer says what
its row says means the index missed a change: the caller falls back to the full scan for that decision and the next
lookup resynchronizes.

Fresh, cheaply: the folder's mtime (a record added, removed or rewritten through a rename, as every writer of ours
does, moves it) and when the index last looked are kept in the index. The same mtime, looked long enough after it
that a change in the same tick of a coarse clock cannot hide (``RACY_NS``): fresh, one stat. Otherwise the folder is listed
and stat'ed, and only files added or changed since (inode, mtime or size) are read again; rows of files gone are
dropped. (A file overwritten in place, not renamed, is not seen until the folder changes; the decision re-reading
it catches what matters.) A missing, empty or corrupt index is rebuilt that
way from nothing. :meth:`RecordIndex.saved` (called by ``RunStore.save``) updates the row of the record it wrote in
the same call, and the kept folder mtime only when nothing else had changed the folder since the index last saw it (trusting its own
rename: a rename by a process without the index within the same clock tick is left to ``VERIFY_EVERY_NS``).

SQLite in WAL mode (docs/runs.md, "The index"): one transaction per save, so two processes saving at once both land;
readers never wait for a writer. A lock held longer than :attr:`RecordIndex.busy_seconds`, or a folder where the index
cannot be written, is :class:`IndexUnavailable`: the caller reads every record instead, with one warning.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cosmos_assets.files import create_new
from cosmos_assets.runs.record_rules import RecordFileError, Warn, warn_once

if TYPE_CHECKING:
    from cosmos_assets.runs.record import RunRecord

T = TypeVar("T")
INDEX_FOLDER = ".index"
"""The index's own folder in ``outputs/.runs``: SQLite creates and removes ``-wal``/``-shm`` files beside its database at
every open and close, which would change the records folder's mtime, the index's cheap test of freshness."""
INDEX_NAME = "records.sqlite"
SCHEMA_VERSION = 3
_FINAL = ("succeeded", "failed", "guardrail_blocked", "cancelled")
RACY_NS = 10_000_000
"""A folder mtime this close to when the index looked may hide a later change in the same tick of the file system's
clock (Linux: a kernel tick, 1-10 ms): look again. Whole-second mtimes (some shares) get ``RACY_WHOLE_SECOND_NS``."""
RACY_WHOLE_SECOND_NS = 2_000_000_000
VERIFY_EVERY_NS = 15 * 60 * 1_000_000_000
"""However fresh it looks, the folder is stat'ed whole at least this often: a change the folder's mtime could not show
(a file overwritten in place, a rename by a process without the index in the same clock tick as a save) lasts no
longer."""
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_COLUMNS = "run_id, prompt, stage, state, host, detached, digest, created_us, done_us, reproduces"
_SCHEMA = (
    "CREATE TABLE files (name TEXT PRIMARY KEY, ino INTEGER, mtime_ns INTEGER, size INTEGER, bad TEXT, run_id TEXT, "
    "prompt TEXT, stage TEXT, state TEXT, host TEXT, detached INTEGER, digest TEXT, created_us INTEGER, done_us INTEGER, "
    "reproduces TEXT)",
    "CREATE INDEX by_work ON files (prompt, stage, state)",
    "CREATE INDEX bad_files ON files (name) WHERE bad IS NOT NULL",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


class IndexUnavailable(Exception):
    """The index cannot be used now (locked, unwritable, corrupt twice); the message says why, in one line."""


class IndexStale(Exception):
    """A file the index pointed at no longer says what its row says: this decision reads every record instead."""


def _us(when: datetime) -> int:
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def row_of(record: RunRecord) -> tuple[object, ...]:
    """The index's columns for ``record``, in the order of ``_COLUMNS``."""
    return (
        record.run_id,
        record.prompt,
        record.stage,
        record.state,
        record.host,
        int(record.detached),
        record.inputs_digest(),
        _us(record.created_at),
        _us(record.finished_at or record.updated_at),
        record.reproduces,
    )


def _signature(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class RecordIndex:
    """The index of the records in ``folder``; ``warn`` says a bad file once, as the full scan does."""

    busy_seconds: float = 5.0

    def __init__(self, folder: Path, read: Callable[[Path], RunRecord], warn: Warn | None = None) -> None:
        self.folder = folder
        self.read = (
            read  # runs.record_store.read_record: one record file, read and held to the rules (handed in: no circle)
        )
        self.warn = warn
        self.path = folder / INDEX_FOLDER / INDEX_NAME

    # ---------------------------------------------------------------- opening, freshness

    def _connect(self, create: bool) -> sqlite3.Connection:
        if not self.path.exists():
            if not create:
                raise FileNotFoundError(self.path)
            try:  # created by us, not by SQLite (0644): the mode the umask allows; its -wal and -shm take this mode
                create_new(self.path, b"")  # (and its folder, as every folder of ours)
            except FileExistsError:
                pass
        conn = sqlite3.connect(self.path, timeout=self.busy_seconds, isolation_level=None)
        try:
            if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("WAL mode refused")
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                with _transaction(conn):
                    for statement in ("DROP TABLE IF EXISTS files", "DROP TABLE IF EXISTS meta", *_SCHEMA):
                        conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def use(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """``operation`` on an open, fresh index; IndexUnavailable when it cannot be had. A corrupt index is removed and
        rebuilt once. IndexStale from ``operation`` goes to the caller."""
        for attempt in (1, 2):
            conn = None
            try:
                conn = self._connect(create=True)
                self._refresh(conn)
                return operation(conn)
            except sqlite3.DatabaseError as error:
                if getattr(error, "sqlite_errorcode", None) in _CORRUPT_CODES and attempt == 1:
                    if conn is not None:
                        conn.close()
                        conn = None
                    self.remove()
                    continue
                raise IndexUnavailable(_why(error)) from error
            except OSError as error:
                raise IndexUnavailable(f"cannot be used ({error.strerror or error})") from error
            finally:
                if conn is not None:
                    conn.close()
        raise IndexUnavailable("is corrupt again after a rebuild")

    def remove(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _refresh(self, conn: sqlite3.Connection) -> None:
        if self._fresh(conn, os.stat(self.folder).st_mtime_ns):
            return
        with _transaction(conn):
            looked_ns = time.time_ns()
            folder_mtime = os.stat(self.folder).st_mtime_ns  # before listing: a change while we read shows next time
            if self._fresh(conn, folder_mtime):
                return  # another process caught it up while we waited
            known = {
                name: (ino, mtime, size)
                for name, ino, mtime, size in conn.execute("SELECT name, ino, mtime_ns, size FROM files")
            }
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if not entry.name.endswith(".json"):
                        continue
                    try:
                        signature = _signature(entry.stat(follow_symlinks=False))
                    except FileNotFoundError:
                        continue
                    if known.pop(entry.name, None) != signature:
                        self._read_into(conn, entry.name, signature)
            conn.executemany("DELETE FROM files WHERE name = ?", [(name,) for name in known])
            _set_meta(conn, folder_mtime=folder_mtime, looked_ns=looked_ns, verified_ns=looked_ns, saved=0)

    @staticmethod
    def _fresh(conn: sqlite3.Connection, folder_mtime: int) -> bool:
        """Unchanged since the index last looked (every record is written, renamed or removed in the folder, which
        moves its mtime), and looked long enough after the folder's last change that a change in the same tick of its
        clock cannot hide (a folder mtime is coarse: jiffies locally, 1 s on some shares)."""
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        racy = RACY_WHOLE_SECOND_NS if folder_mtime % 1_000_000_000 == 0 else RACY_NS
        settled = meta.get("saved") == 1 or meta.get("looked_ns", 0) - folder_mtime >= racy
        recent = time.time_ns() - meta.get("verified_ns", 0) < VERIFY_EVERY_NS
        return meta.get("folder_mtime") == folder_mtime and settled and recent

    def _read_into(self, conn: sqlite3.Connection, name: str, signature: tuple[int, int, int]) -> None:
        try:
            values: tuple[object, ...] = (None, *row_of(self.read(self.folder / name)))
        except RecordFileError as error:  # keep the reason alone: the folder's path differs between mounts
            values = (str(error.__cause__ or error), *([None] * 10))
        conn.execute(
            f"INSERT OR REPLACE INTO files (name, ino, mtime_ns, size, bad, {_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, *signature, *values),
        )

    # ---------------------------------------------------------------- writing

    def saved(self, record: RunRecord, folder_mtime_before: int | None) -> None:
        """``RunStore.save`` has just written ``record``: its row, now. The kept folder mtime moves on only when the
        index was fresh before this write (else the next lookup resynchronizes). No index yet: nothing (the next
        lookup builds it). Raises sqlite3/OS errors; the caller warns and goes on."""
        name = f"{record.run_id}.json"
        try:
            conn = self._connect(create=False)
        except FileNotFoundError:
            return
        try:
            with _transaction(conn):
                signature = _signature(os.lstat(self.folder / name))
                meta = dict(conn.execute("SELECT key, value FROM meta"))
                conn.execute(
                    f"INSERT OR REPLACE INTO files (name, ino, mtime_ns, size, bad, {_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, *signature, *row_of(record)),
                )
                if folder_mtime_before is not None and meta.get("folder_mtime") == folder_mtime_before:
                    _set_meta(conn, folder_mtime=os.stat(self.folder).st_mtime_ns, saved=1)
        finally:
            conn.close()

    # ---------------------------------------------------------------- lookups (on a fresh session)

    def warn_bad(self, conn: sqlite3.Connection) -> None:
        """Name every bad file once per process, exactly as the full scan does."""
        for name, reason in conn.execute("SELECT name, bad FROM files WHERE bad IS NOT NULL ORDER BY name"):
            warn_once(
                self.warn,
                f"run record {self.folder / name}: {reason}; left out (move it out of {self.folder} to silence this)",
            )

    def load(self, conn: sqlite3.Connection, run_id: str) -> RunRecord:
        """The record of an index row, read again and checked; IndexStale if it no longer matches its row."""
        name = f"{run_id}.json"
        row = conn.execute(f"SELECT {_COLUMNS} FROM files WHERE name = ?", (name,)).fetchone()
        try:
            record = self.read(self.folder / name)
        except (RecordFileError, OSError) as error:
            raise IndexStale(f"{name} changed since it was indexed") from error
        if row is None or tuple(row) != row_of(record):
            raise IndexStale(f"{name} changed since it was indexed")
        return record

    def run_ids(
        self, conn: sqlite3.Connection, where: str, params: tuple[object, ...], order: str, limit: int | None = None
    ) -> list[str]:
        """Run ids of the good records matching ``where`` (SQL over this module's columns), in ``order``."""
        sql = f"SELECT run_id FROM files WHERE bad IS NULL AND {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [run_id for (run_id,) in conn.execute(sql, params)]

    def first(self, conn: sqlite3.Connection, where: str, params: tuple[object, ...], order: str) -> RunRecord | None:
        found = self.run_ids(conn, where, params, order, limit=1)
        return self.load(conn, found[0]) if found else None


UNFINISHED = f"(state NOT IN ({', '.join(repr(s) for s in _FINAL)}) OR detached = 1)"
"""SQL: a left-behind run (never reached a final state, or left its container or outputs on the host)."""


def created_us(record: RunRecord) -> int:
    return _us(record.created_at)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _set_meta(conn: sqlite3.Connection, **values: int) -> None:
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))


def _why(error: sqlite3.DatabaseError) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"is locked by another process ({text})" if "locked" in text or "busy" in text else f"cannot be used ({text})"
    )


def lookup_or_scan(
    index: RecordIndex, indexed: Callable[[sqlite3.Connection], T], scanned: Callable[[], T], warn: Warn | None
) -> T:
    """``indexed`` on a fresh index; the full scan ``scanned`` when the index cannot be used (one warning) or missed
    a change (the next lookup resynchronizes)."""
    if not index.folder.is_dir():
        return scanned()

    def with_warnings(conn: sqlite3.Connection) -> T:
        index.warn_bad(conn)
        return indexed(conn)

    try:
        return index.use(with_warnings)
    except IndexUnavailable as error:
        warn_once(warn, f"run record index {index.path} {error}; reading every record instead (slower)")
    except IndexStale:
        _forget_freshness(index)
    return scanned()


def _forget_freshness(index: RecordIndex) -> None:
    try:
        conn = index._connect(create=False)
    except (OSError, sqlite3.Error):
        return
    try:
        with _transaction(conn):
            conn.execute("DELETE FROM meta")
    except sqlite3.Error:
        pass
    finally:
        conn.close()
