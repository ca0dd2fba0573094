"""The run records of a project, ``outputs/.runs/<run_id>.json``: saved atomically under the rules a record is held
to, read back under the same rules, listed tolerantly (one bad file is named once and left out), and found through
the records' index (:mod:`cosmos_assets.runs.record_index`) rather than by parsing every record."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from cosmos_assets.files import atomic_write_text, plain_folder_name
from cosmos_assets.runs.record import RunRecord, utc_now
from cosmos_assets.runs.record_index import RecordIndex, lookup_or_scan
from cosmos_assets.runs.record_rules import (
    RecordFileError,
    Warn,
    file_name_problem,
    read_bounded_text,
    record_problem,
    validation_summary,
    warn_once,
)

T = TypeVar("T")


class RunStore:
    """The run records of a project: ``outputs/.runs/<run_id>.json``, each rewritten atomically.

    A record is held to the same rules when saved and when read (:mod:`cosmos_assets.runs.record_rules`). Listing
    reads tolerantly: a bad file (truncated, not UTF-8, macOS's ``._<id>.json``, a hostile record) is named once in
    a warning through ``warn`` (default: the ``cosmos_assets.runs`` logger) and left out; it never stops a run.
    """

    def __init__(self, folder: Path, warn: Warn | None = None) -> None:
        self.folder = folder
        self.warn = warn
        self.index = RecordIndex(folder, read_record, warn)

    def path(self, run_id: str) -> Path:
        return self.folder / f"{plain_folder_name(run_id, 'run_id')}.json"

    def save(self, record: RunRecord) -> None:
        problem = record_problem(record)
        if problem is not None:
            raise ValueError(f"run record {record.run_id!r} not saved: {problem}")
        record.updated_at = utc_now()
        path = self.path(record.run_id)
        try:
            folder_mtime: int | None = os.stat(self.folder).st_mtime_ns
        except OSError:
            folder_mtime = None
        atomic_write_text(path, record.model_dump_json(indent=2) + "\n")
        try:  # the index is derived: a failure to update it is the next lookup's to catch up, never the save's
            self.index.saved(record, folder_mtime)
        except (OSError, sqlite3.Error) as error:
            warn_once(
                self.warn,
                f"run record index {self.index.path} not updated ({error}); the next lookup rereads the folder",
            )

    def lookup(self, indexed: Callable[[sqlite3.Connection], T], scanned: Callable[[list[RunRecord]], T]) -> T:
        """A decision over the records: ``indexed`` on the index (:mod:`cosmos_assets.runs.record_index`), or
        ``scanned`` over :meth:`all` when the index cannot be used or missed a change. Both must give the same answer."""
        return lookup_or_scan(self.index, indexed, lambda: scanned(self.all()), self.warn)

    def load(self, run_id: str) -> RunRecord:
        """The record of ``run_id``; FileNotFoundError if there is none, RecordFileError (one line) if it is bad."""
        path = self.path(run_id)
        if not os.path.lexists(path):
            raise FileNotFoundError(f"run record {path} does not exist")
        return read_record(path)

    def all(self) -> list[RunRecord]:
        """Every good record, oldest first; each bad file named once (``warn``) and left out."""
        if not self.folder.is_dir():
            return []
        records = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                records.append(read_record(path))
            except RecordFileError as error:
                warn_once(self.warn, f"{error}; left out (move it out of {self.folder} to silence this)")
        return sorted(records, key=lambda r: r.created_at)


def read_record(path: Path) -> RunRecord:
    """One record file, checked as it was written; RecordFileError naming the file and what is wrong, in one line."""
    try:
        problem = file_name_problem(path.name)
        if problem is not None:
            raise RecordFileError(problem)
        try:
            record = RunRecord.model_validate_json(read_bounded_text(path))
        except ValidationError as error:
            raise RecordFileError(validation_summary(error)) from error
        problem = record_problem(record, path.name)
        if problem is not None:
            raise RecordFileError(problem)
        return record
    except RecordFileError as error:
        raise RecordFileError(f"run record {path}: {error}") from error
