"""What makes a run record file good, checked the same way when it is written and when it is read back.

A record names paths that later attempts act on: adoption downloads ``outputs/<prompt>/<run_id>`` from the host,
skipping hashes ``output_files`` under the project. Read back, a record is therefore held to the rules it was written
under: a run id of this package's shape (:mod:`cosmos_assets.runs.ids`) that is also its file name, prompt and shot
names by the project's one name rule (:func:`cosmos_assets.layout.name_problem`), a remote output folder under the
model root that belongs to that prompt and run id (or to its batch, :mod:`cosmos_assets.runs.batch`), and local paths
inside that prompt's output folder. A file that fails (truncated, not UTF-8, a macOS ``._`` file from a network share,
a foreign or hostile record) is a bad file: the readers name it once in a warning and leave it out
(:class:`~cosmos_assets.runs.record_store.RunStore`). Plain Python; the record type is only named here, never imported.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pydantic import ValidationError

from cosmos_assets.files import UnsafeReadError, read_bounded
from cosmos_assets.layout import name_problem
from cosmos_assets.machines.job import relative_inside
from cosmos_assets.runs.ids import BatchId, run_id_base, run_id_problem

if TYPE_CHECKING:
    from cosmos_assets.runs.record import RunRecord

MAX_RECORD_BYTES = 16 * 1024 * 1024
"""A record holds a spec, a log tail and hashes: kilobytes. Anything far larger is not one (and is not read whole)."""

Warn = Callable[[str], None]
_logger = logging.getLogger("cosmos_assets.runs")
_warned: set[str] = set()
_warned_by_sink: weakref.WeakKeyDictionary[Warn, set[str]] = weakref.WeakKeyDictionary()
_warned_lock = threading.Lock()


class RecordFileError(ValueError):
    """A file that is not a good run record; the message is one line naming the file and what is wrong."""


def log_warning(message: str) -> None:
    """Where a bad file is named when the reader was given nowhere else to say it."""
    _logger.warning("%s", message)


def warn_once(warn: Warn | None, message: str) -> None:
    """Say ``message`` the first time ``warn`` meets it (a bad file is read by every later lookup); never raises.

    Once per destination: a run's log (each run hands its own ``warn``) names the bad file once, whichever reader met
    it first in this process; the logger (``warn`` None) names it once a process."""
    with _warned_lock:
        said = _warned if warn is None else _warned_by_sink.setdefault(warn, set())
        if message in said:
            return
        said.add(message)
    try:
        (warn or log_warning)(message)
    except Exception:  # noqa: BLE001 - a warning never stops a run
        pass


def _shown(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 20]) + f"... ({len(text)} characters)"


def file_name_problem(name: str) -> str | None:
    """Why a file in ``outputs/.runs`` cannot be a run record by its name alone (None: it may be one)."""
    if name.startswith("._"):
        return "a macOS metadata file ('._' AppleDouble, left by a Mac on a network share), not a run record"
    if not name.endswith(".json") or run_id_problem(name[: -len(".json")]) is not None:
        return "not named <run_id>.json with a run id of this package (YYYYmmdd_HHMMSS_8hex...)"
    return None


def read_bounded_text(path: Path, limit: int = MAX_RECORD_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes, never through a link (a pipe or a link
    planted in the folder is refused, never waited on); RecordFileError saying why not."""
    try:
        data = read_bounded(path, limit, "run record", follow_links=False)
    except UnsafeReadError as error:
        if error.reason == "too_large":
            raise RecordFileError(f"larger than {limit // (1024 * 1024)} MiB") from error
        kind = "a symbolic link" if error.reason == "link" else "a folder, pipe or device"
        raise RecordFileError(f"not a regular file ({kind})") from error
    except OSError as error:
        raise RecordFileError(f"unreadable ({error.strerror or error})") from error
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecordFileError(
            f"not UTF-8 text (byte {error.start}: {data[error.start : error.start + 1]!r})"
        ) from error


def validation_summary(error: ValidationError) -> str:
    """A pydantic error in one line: the first problem (a JSON syntax error, or the field and what is wrong)."""
    problems = error.errors(include_url=False)
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    if first.get("type") == "json_invalid":
        text = f"not complete JSON ({first.get('ctx', {}).get('error', first['msg'])}; truncated?)"
    else:
        text = f"field {where or '(top level)'}: {first['msg']}"
    more = len(problems) - 1
    return text + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def _output_folder_name(record: RunRecord) -> str:
    return record.prompt if record.stage == "generate" else f"{record.prompt}_upscaled"


def _remote_problem(record: RunRecord) -> str | None:
    folder = record.remote_output_folder
    if record.batch is None:
        expected = f"outputs/{_output_folder_name(record)}/{record.run_id}"
        if folder != expected:
            return f"remote_output_folder {_shown(folder)} is not {expected!r} (its prompt and run id)"
        return None
    try:
        batch = BatchId.parse(record.batch.batch_id)
    except ValueError as error:
        return f"batch.{error}"
    if batch.base != run_id_base(record.run_id):
        return f"batch id {record.batch.batch_id!r} is not of the request of run {record.run_id!r}"
    root = f"outputs/.batches/{record.batch.batch_id}"
    item = folder[len(root) + 1 :] if folder.startswith(root + "/") else None
    if folder != root and (item is None or item in ("", ".", "..") or "/" in item or "\\" in item):
        return f"remote_output_folder {_shown(folder)} is not {root!r} or one folder in it (its batch)"
    return None


def _local_problem(record: RunRecord) -> str | None:
    own = f"outputs/{_output_folder_name(record)}"
    if record.reproduces is not None:  # cosmos-assets reproduce: its own new folder (runs/reproduce.py)
        if run_id_problem(record.reproduces) is not None:
            return f"reproduces {_shown(record.reproduces)} is not a run id"
        own = f"outputs/_reproduced/{record.prompt}/{record.run_id}"
    if record.output_dir is not None and record.output_dir != own:
        return f"output_dir {_shown(record.output_dir)} is not {own!r}"
    for field, path in [("outputs", p) for p in record.outputs] + [
        ("output_files", f.path) for f in record.output_files
    ]:
        parent, _, name = path.rpartition("/")
        if parent != own or name in ("", ".", "..") or "\\" in name:
            return f"{field} entry {_shown(path)} is not a file in {own}/"
    if record.previous_moved_to is not None:  # absolute, under the project as mounted where it ran
        moved = PurePosixPath(record.previous_moved_to.replace("\\", "/"))
        if ".." in moved.parts or (moved.parent.parent.name, moved.parent.name) != (
            ".previous",
            _output_folder_name(record),
        ):
            return f"previous_moved_to {_shown(record.previous_moved_to)} is not in outputs/.previous/{_output_folder_name(record)}/"
    return None


def record_problem(record: RunRecord, file_name: str | None = None) -> str | None:
    """Why ``record`` (stored as ``file_name``) is not one this package writes (None: it is). The same rules hold when
    a record is saved and when one is read back."""
    checks: list[Callable[[], str | None]] = [
        lambda: run_id_problem(record.run_id),
        lambda: (
            None
            if file_name is None or file_name == f"{record.run_id}.json"
            else f"its file name is not its run id {record.run_id!r} + '.json'"
        ),
        lambda: None if (p := name_problem(record.prompt)) is None else f"prompt name {_shown(record.prompt)} {p}",
        lambda: (
            None
            if record.shot is None or (p := name_problem(record.shot)) is None
            else f"shot name {_shown(record.shot)} {p}"
        ),
        lambda: _remote_problem(record),
        lambda: _relative_problem("spec_remote_path", record.spec_remote_path),
        lambda: next((p for p in (_relative_problem("inputs", i.path) for i in record.inputs) if p), None),
        lambda: _local_problem(record),
    ]
    for check in checks:
        problem = check()
        if problem is not None:
            return problem
    return None


def _relative_problem(field: str, path: str) -> str | None:
    try:
        relative_inside(path, field)
    except ValueError as error:
        return str(error)
    return None
