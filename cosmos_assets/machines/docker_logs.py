"""A container's log as ``docker logs --follow --timestamps`` gives it, delivered once across re-attaches.

After a dropped link the log is read again with ``--since <last timestamp>``; :class:`LogFollower` skips the
lines already delivered, so every line reaches the run log exactly once.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import deque

from cosmos_assets.machines.job import LogLine


def timestamp_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of a docker log timestamp (RFC 3339, up to 9 fraction digits)."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        return None
    seconds = calendar.timegm(time.strptime(match[1], "%Y-%m-%dT%H:%M:%S"))
    if match[3] != "Z":
        sign = 1 if match[3][0] == "+" else -1
        seconds -= sign * (int(match[3][1:3]) * 3600 + int(match[3][4:6]) * 60)
    return seconds * 10**9 + int((match[2] or "").ljust(9, "0"))


def since_arg(ns: int) -> str:
    """``docker logs --since`` value: Unix seconds with nanoseconds (inclusive bound)."""
    return f"{ns // 10**9}.{ns % 10**9:09d}"


class LogFollower:
    """Turns ``docker logs --timestamps`` lines into log lines, each delivered once across re-attaches.

    After a reconnect the log is read again from the last timestamp seen (``--since`` is inclusive): lines
    older than it, and as many lines at exactly it as were already delivered, are skipped. A line holding
    ``guardrail_marker`` sets :attr:`guardrail`.
    """

    def __init__(self, log: LogLine, tail: deque[str], guardrail_marker: str | None = None) -> None:
        self._log = log
        self.tail = tail
        self.guardrail_marker = guardrail_marker
        self.last_ns: int | None = None
        self.at_last = 0
        self.delivered = 0
        self.guardrail = False
        self._replaying = False
        self._skip = 0

    def since(self) -> str | None:
        return since_arg(self.last_ns) if self.last_ns is not None else None

    def resume(self) -> None:
        """The next lines are a re-read from ``since()``."""
        self._replaying = self.last_ns is not None
        self._skip = self.at_last

    def feed(self, raw: str) -> None:
        stamp, _, text = raw.partition(" ")
        ns = timestamp_ns(stamp)
        if ns is None:  # not a log line (e.g. an error message of docker itself)
            self._deliver(raw)
            return
        if self._replaying and self.last_ns is not None:
            if ns < self.last_ns:
                return
            if ns == self.last_ns and self._skip > 0:
                self._skip -= 1
                return
            self._replaying = False
        if self.last_ns is None or ns > self.last_ns:
            self.last_ns, self.at_last = ns, 1
        elif ns == self.last_ns:
            self.at_last += 1
        self._deliver(text)

    def _deliver(self, text: str) -> None:
        self.delivered += 1
        self.tail.append(text)
        self.guardrail = self.guardrail or (self.guardrail_marker is not None and self.guardrail_marker in text)
        self._log(text)
