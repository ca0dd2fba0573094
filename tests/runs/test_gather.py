"""runs/gather.py: how long the run holding a free host waits for company, and whom it takes. The clock and the
sleep are injected: every case is forced, nothing is timed."""

from __future__ import annotations

import pytest

from cosmos_assets.runs.gather import URGENT, BatchWindow, Waiting, gather
from cosmos_assets.runs.priority import LEVELS


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def arrivals(schedule: dict[float, list[Waiting]], clock: FakeClock):
    """find(): everything whose arrival time (seconds after the start) has come."""
    start = clock.now

    def find() -> list[Waiting]:
        return [w for at, group in sorted(schedule.items()) if clock.now - start >= at for w in group]

    return find


def w(prompt: str, priority: int = 0) -> Waiting:
    return Waiting(prompt=prompt, dagster_run_id=f"run-{prompt}", priority=priority)


def test_urgent_is_the_priority_named_urgent() -> None:
    assert URGENT == LEVELS["urgent"]


def test_it_waits_no_longer_than_the_window_and_takes_what_came() -> None:
    clock = FakeClock()
    find = arrivals({0: [w("b")], 4: [w("c")], 30: [w("late")]}, clock)
    company = gather("a", 0, find, BatchWindow(window_seconds=10, max_prompts=8, poll_seconds=1), clock, clock.sleep)
    assert [x.prompt for x in company.taken] == ["b", "c"]
    assert company.waited_seconds == 10 and "window" in company.why
    assert sum(clock.sleeps) == 10 and max(clock.sleeps) <= 1


def test_a_full_batch_goes_at_once_and_never_holds_more_than_the_maximum() -> None:
    clock = FakeClock()
    find = arrivals({0: [w(p) for p in "bcdefg"]}, clock)
    company = gather("a", 0, find, BatchWindow(window_seconds=600, max_prompts=4), clock, clock.sleep)
    assert [x.prompt for x in company.taken] == ["b", "c", "d"]  # 3 + its own = 4
    assert company.waited_seconds == 0 and clock.sleeps == [] and "full" in company.why


def test_a_batch_that_fills_during_the_window_goes_when_full() -> None:
    clock = FakeClock()
    find = arrivals({0: [w("b")], 3: [w("c")]}, clock)
    company = gather("a", 0, find, BatchWindow(window_seconds=600, max_prompts=3, poll_seconds=1), clock, clock.sleep)
    assert [x.prompt for x in company.taken] == ["b", "c"] and company.waited_seconds == 3


def test_an_urgent_prompt_found_waiting_ends_the_wait_and_goes_first() -> None:
    clock = FakeClock()
    find = arrivals({0: [w("b")], 2: [w("u", LEVELS["urgent"])]}, clock)
    company = gather("a", 0, find, BatchWindow(window_seconds=600, max_prompts=8, poll_seconds=1), clock, clock.sleep)
    assert [x.prompt for x in company.taken] == ["u", "b"]
    assert company.waited_seconds == 2 and "urgent" in company.why


def test_an_urgent_run_waits_for_nothing_and_takes_nobody() -> None:
    clock = FakeClock()
    asked: list[int] = []
    company = gather(
        "a", LEVELS["urgent"], lambda: asked.append(1) or [w("b")], BatchWindow(600, 8), clock, clock.sleep
    )
    assert company.taken == [] and asked == [] and clock.sleeps == [] and "urgent" in company.why


def test_window_zero_takes_what_is_waiting_now_and_max_one_turns_batching_off() -> None:
    clock = FakeClock()
    company = gather("a", 0, lambda: [w("b"), w("a"), w("b")], BatchWindow(0, 8), clock, clock.sleep)
    assert [x.prompt for x in company.taken] == ["b"] and clock.sleeps == []  # its own prompt and doubles left out
    off = gather("a", 0, lambda: [w("b")], BatchWindow(600, 1), clock, clock.sleep)
    assert off.taken == [] and "off" in off.why


def test_a_terminated_run_stops_waiting() -> None:
    clock = FakeClock()
    company = gather("a", 0, lambda: [], BatchWindow(600, 8), clock, clock.sleep, cancelled=lambda: clock.now > 102)
    assert company.taken == [] and company.waited_seconds == 3 and "terminated" in company.why


@pytest.mark.parametrize("window, count", [(-1, 8), (10, 0)])
def test_bounds_are_checked(window: float, count: int) -> None:
    with pytest.raises(ValueError, match="window"):
        BatchWindow(window, count)


def test_nobody_on_the_way_means_no_wait_and_the_wait_ends_when_the_last_one_arrives() -> None:
    clock = FakeClock()
    company = gather("a", 0, lambda: [], BatchWindow(600, 8), clock, clock.sleep, on_the_way=lambda: 0)
    assert company.taken == [] and clock.sleeps == [] and "no other run" in company.why
    # two runs still starting: wait for them (not for the window), then go
    find = arrivals({0: [w("b")], 5: [w("c")]}, clock)
    start = clock.now
    coming = lambda: 0 if clock.now - start >= 5 else 1  # noqa: E731 - c arrives at 5 s
    company = gather("a", 0, find, BatchWindow(600, 8, poll_seconds=1), clock, clock.sleep, on_the_way=coming)
    assert [x.prompt for x in company.taken] == ["b", "c"] and company.waited_seconds == 5
