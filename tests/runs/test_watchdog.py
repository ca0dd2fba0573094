"""The stall watchdog (runs/watchdog.py): it stops again after each further silent period while the run is still
followed, so a stop that found nothing to stop (the container was still being created) cannot leave a hung job."""

from __future__ import annotations

import threading

from cosmos_assets.runs.watchdog import Watchdog


def test_a_stall_is_stopped_again_while_the_job_is_still_followed() -> None:
    stops: list[int] = []
    twice = threading.Event()

    def on_stall() -> None:
        stops.append(1)
        if len(stops) == 1:
            raise RuntimeError("nothing to stop yet")  # the first stop fails: the watchdog must try again
        twice.set()

    with Watchdog(0.05, on_stall, poll_seconds=0.01) as watchdog:
        assert twice.wait(10)
    assert watchdog.fired and len(stops) >= 2
