"""A TCP proxy on 127.0.0.1 that adds a fixed one-way delay to every chunk, both directions.

Stands in for a cloud GPU host's round trip (``tc netem`` is not available here). Each chunk read
from one side is stamped with ``arrival + delay`` and queued; a writer task sends it when its time
comes. The stream is never paused as a whole, so a long fat pipe keeps its throughput: many chunks
are in flight at once and only the window/round-trip behaviour of the protocol on top limits speed.

The proxy runs in its own thread and event loop, has a bounded lifetime (``max_lifetime_s``) and
stops by itself when it ends; ``stop()`` ends it earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

READ_CHUNK = 256 * 1024
MAX_QUEUED_CHUNKS = 256  # at most ~64 MiB in flight per direction: a bounded "pipe"
DEFAULT_LIFETIME_S = 900.0


@dataclass
class ProxyStats:
    connections: int = 0
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client


@dataclass
class LatencyProxy:
    """Listens on 127.0.0.1:``port`` and forwards to ``target_host``:``target_port``."""

    target_host: str
    target_port: int
    delay_s: float = 0.020
    max_lifetime_s: float = DEFAULT_LIFETIME_S
    port: int = 0
    stats: ProxyStats = field(default_factory=ProxyStats)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def start(self) -> LatencyProxy:
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("latency proxy did not start within 10 s")
        if self._error is not None:
            raise RuntimeError(f"latency proxy failed to start: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.max_lifetime_s)
            server.close()
        for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            task.cancel()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.close()
            return
        for w in (client_w, server_w):
            _no_delay(w)
        up = asyncio.create_task(self._pipe(client_r, server_w, "up"))
        down = asyncio.create_task(self._pipe(server_r, client_w, "down"))
        try:
            await asyncio.gather(up, down)
        except asyncio.CancelledError:  # the proxy is stopping: just close both ends
            up.cancel()
            down.cancel()
        finally:
            for w in (client_w, server_w):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        """Read chunks as they come, release each one ``delay_s`` after it arrived."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_QUEUED_CHUNKS)
        sender = asyncio.create_task(self._send_when_due(queue, writer, direction))
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                await queue.put((time.monotonic() + self.delay_s, data))
                if not data:
                    break
        except (ConnectionError, OSError):
            await queue.put((time.monotonic(), b""))
        await sender

    async def _send_when_due(self, queue: asyncio.Queue, writer: asyncio.StreamWriter, direction: str) -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return
            if direction == "up":
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextlib.contextmanager
def latency_proxy(
    target_host: str, target_port: int, delay_s: float = 0.020, max_lifetime_s: float = DEFAULT_LIFETIME_S
) -> Iterator[LatencyProxy]:
    """A running proxy for the ``with`` block; stopped on exit (and by itself after its lifetime)."""
    proxy = LatencyProxy(target_host, target_port, delay_s, max_lifetime_s).start()
    try:
        yield proxy
    finally:
        proxy.stop()
