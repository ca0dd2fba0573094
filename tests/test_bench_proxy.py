"""The benchmark's latency proxy forwards bytes intact both ways and adds (at least) its delay.

Only lower bounds on time are asserted: a slow, shared machine may add delay, never remove it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bench.latency_proxy import latency_proxy

DELAY_S = 0.05


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(min(1 << 20, n - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP server that sends back everything it receives, one connection at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                while data := conn.recv(1 << 16):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    listener.close()
    thread.join(5)


def test_proxy_forwards_bytes_intact_both_ways(echo_server: int) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with latency_proxy("127.0.0.1", echo_server, delay_s=0.005, max_lifetime_s=60) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            echoed = _recv_exactly(sock, len(payload))
            sender.join()
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert proxy.stats.bytes_up == len(payload) and proxy.stats.bytes_down == len(payload)


def test_proxy_adds_its_delay_each_way(echo_server: int) -> None:
    with latency_proxy("127.0.0.1", echo_server, delay_s=DELAY_S, max_lifetime_s=60) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            sock.sendall(b"warm-up")
            assert _recv_exactly(sock, 7) == b"warm-up"
            started = time.monotonic()
            sock.sendall(b"ping")
            assert _recv_exactly(sock, 4) == b"ping"
            round_trip = time.monotonic() - started
    assert round_trip >= 2 * DELAY_S  # a lower bound only


def test_proxy_stops_by_itself_after_its_lifetime(echo_server: int) -> None:
    with latency_proxy("127.0.0.1", echo_server, delay_s=0.001, max_lifetime_s=0.3) as proxy:
        proxy._thread.join(10)
        assert not proxy._thread.is_alive()
