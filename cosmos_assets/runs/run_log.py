"""The local run log of one run: every line written to ``outputs/.staging/<run_id>/<log name>`` and passed on.

A local failure here (the disk full, Dagster's event log unwritable) never reaches the machine that follows the GPU
job: the failing sink is dropped, said once, and the job goes on. ``touch`` is called for every line (the stall
watchdog's heartbeat).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cosmos_assets.machines.job import LogLine


class RunLog:
    """Writes every line to the local run log as it comes, and passes it on.

    A local failure here (the disk full, Dagster's event log unwritable) never reaches the machine that is
    following the GPU job: the line is dropped from that sink, said once, and the job goes on.
    """

    def __init__(self, path: Path, forward: LogLine) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = open(path, "a", encoding="utf-8", buffering=1)
        self._forward = forward
        self.touch: Callable[[], None] = lambda: None
        self.write_error: OSError | None = None
        self.forward_errors = 0

    def __call__(self, line: str) -> None:
        self.touch()
        if self._handle is not None:
            try:
                self._handle.write(line + "\n")
            except OSError as error:
                self._lost(error)
        self._send(line)

    def _send(self, line: str) -> None:
        try:
            self._forward(line)
        except Exception:  # noqa: BLE001 - a local sink failing must not stop the GPU job (a cancel is no Exception)
            self.forward_errors += 1

    def _lost(self, error: OSError) -> None:
        self.write_error = error
        self.close()
        self._send(
            f"[cosmos-assets] cannot write the local run log {self.path} ({error}); the GPU job goes on, "
            "its log stays on the host; free local disk space"
        )

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass
