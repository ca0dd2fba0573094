"""The stall watchdog: a model that prints nothing for too long is treated as hung, and stopped.

:class:`Watchdog` runs a thread while the machine follows the job; every log line calls :meth:`Watchdog.touch`.
After ``seconds`` without one it sets :attr:`Watchdog.fired` and calls ``on_stall`` (the runner stops the
container or process there, so the machine's ``run`` returns, and fails the run as stalled); while the run is still
followed, it calls it again after each further ``seconds`` without a line. ``seconds <= 0``
turns it off. The limit comes from ``COSMOS_MODEL_SILENCE_MINUTES`` (read with the settings, passed down).

With ``cancelled`` it also asks, at every poll, whether the run was terminated from outside (a Dagster run marked
CANCELING that no interrupt can reach, e.g. one started by ``dagster asset materialize``); if so it sets
:attr:`Watchdog.cancel_seen` and calls ``on_cancel`` once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

POLL_SECONDS = 5.0


class Watchdog:
    def __init__(
        self,
        seconds: float,
        on_stall: Callable[[], None],
        poll_seconds: float = POLL_SECONDS,
        cancelled: Callable[[], bool] | None = None,
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self.seconds = seconds
        self.fired = False
        self.cancel_seen = False
        self._on_stall = on_stall
        self._cancelled = cancelled
        self._on_cancel = on_cancel or (lambda: None)
        self._poll = min(poll_seconds, seconds) if seconds > 0 else poll_seconds
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def touch(self) -> None:
        self._last = time.monotonic()

    def __enter__(self) -> Watchdog:
        self.touch()
        if self.seconds > 0 or self._cancelled is not None:
            self._thread = threading.Thread(target=self._watch, name="cosmos-stall-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _asked_to_cancel(self) -> bool:
        try:
            return self._cancelled is not None and self._cancelled()
        except Exception:  # noqa: BLE001 - cannot ask (e.g. the instance is busy): ask again at the next poll
            return False

    def _watch(self) -> None:
        while not self._done.wait(self._poll):
            if self._asked_to_cancel():
                self.cancel_seen = True
                self._on_cancel()
                return
            if self.seconds > 0 and time.monotonic() - self._last >= self.seconds:
                # Once fired, it stays fired, and it stops again after each further silent period while the run is
                # still followed: a stop that found nothing to stop (the container was still being created) must
                # not leave a hung job running.
                self.fired = True
                self._last = time.monotonic()
                try:
                    self._on_stall()
                except Exception:  # noqa: BLE001 - tried again after the next silent period
                    pass
