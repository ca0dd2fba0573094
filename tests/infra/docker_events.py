"""The engine's own record of our containers: start/die events since a moment, as tests count them."""

from __future__ import annotations

import time
from collections.abc import Iterable

import docker


def container_events(
    client: docker.DockerClient, since: float, actions: Iterable[str] = ("start",), label: str | None = None
) -> list[dict]:
    """Container events of ``actions`` (with ``label`` when given) from ``since`` (a ``time.time()``) to now, in the
    engine's order. The engine's query works in whole seconds, so events of the second before ``since`` (a previous
    test's container) are dropped here by their nanosecond time."""
    filters: dict = {"type": "container", "event": list(actions)}
    if label is not None:
        filters["label"] = label
    events = client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True, filters=filters)
    return sorted((e for e in events if e["timeNano"] >= since * 1e9), key=lambda e: e["timeNano"])


def attributes(event: dict) -> dict[str, str]:
    return event["Actor"]["Attributes"]
