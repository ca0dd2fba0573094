"""A fault-injecting TCP proxy on 127.0.0.1, put between a client and a server (the test sshd).

It forwards bytes both ways and, on request, breaks the link the ways a real network does:

- :meth:`FaultProxy.cut`: every open connection is reset at once (RST), as when a route or NAT entry dies;
  new connections work.
- :meth:`FaultProxy.cut_for` / :meth:`down` / :meth:`up`: cut, and while down every new connection is reset
  as soon as it is accepted (the host cannot be reached), for a while or until :meth:`up`.
- :meth:`FaultProxy.cut_after`: cut once ``nbytes`` more bytes went one way (``"up"`` client to server,
  ``"down"`` server to client), optionally ``times`` times in a row and staying down ``down_for`` seconds.
- :meth:`FaultProxy.stall` / :meth:`unstall`: the open connections stop carrying bytes without closing (a
  black hole: only timeouts notice); new connections work.
- :meth:`FaultProxy.throttle`: at most ``bytes_per_s`` each way.

Counters (:attr:`bytes_up`, :attr:`bytes_down`, :attr:`connections`, :attr:`cuts`) say what went through. The proxy
runs its own thread and event loop, stops by itself after ``max_lifetime_s``, and :meth:`stop` ends it earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

READ_CHUNK = 256 * 1024
DEFAULT_LIFETIME_S = 600.0


@dataclass
class _Trigger:
    direction: str
    left: int
    every: int
    times: int
    down_for: float


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)


class FaultProxy:
    """Listens on 127.0.0.1:``port`` (a free one when 0) and forwards to ``target_host``:``target_port``."""

    def __init__(
        self, target_host: str, target_port: int, port: int = 0, max_lifetime_s: float = DEFAULT_LIFETIME_S
    ) -> None:
        self.target_host, self.target_port, self.port = target_host, target_port, port
        self.max_lifetime_s = max_lifetime_s
        self.known_hosts: Path | None = None  # a known_hosts file for the proxy's address, when a test writes one
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self.cuts = 0
        self.cut_happened = threading.Event()
        self._conns: set[_Conn] = set()
        self._down = False
        self._up_handle: asyncio.TimerHandle | None = None
        self._rate: float | None = None
        self._triggers: list[_Trigger] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ life

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"fault proxy did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _call(self, fn, *args) -> None:
        assert self._loop is not None
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise RuntimeError("fault proxy did not answer within 10 s")

    # ------------------------------------------------------------------ faults (callable from any thread)

    def cut(self) -> None:
        """Reset every open connection now."""
        self._call(self._cut_all)

    def down(self) -> None:
        """Cut, and reset every new connection until :meth:`up`."""
        self._call(self._set_down, None)

    def up(self) -> None:
        self._call(self._set_up)

    def cut_for(self, seconds: float) -> None:
        """Cut, and stay down for ``seconds``."""
        self._call(self._set_down, seconds)

    def cut_after(self, nbytes: int, direction: str = "up", *, times: int = 1, down_for: float = 0.0) -> None:
        """Cut once ``nbytes`` more bytes went ``direction``; again after each further ``nbytes``, ``times`` times."""
        if direction not in ("up", "down"):
            raise ValueError(f"direction {direction!r}: 'up' or 'down'")
        self._call(self._triggers.append, _Trigger(direction, nbytes, nbytes, times, down_for))

    def stall(self) -> None:
        """The open connections stop carrying bytes (nothing is closed); new ones work."""
        self._call(lambda: [c.flowing.clear() for c in self._conns])

    def unstall(self) -> None:
        self._call(lambda: [c.flowing.set() for c in self._conns])

    def throttle(self, bytes_per_s: float | None) -> None:
        """At most ``bytes_per_s`` each way per connection (None: no limit)."""
        self._rate = bytes_per_s

    def clear(self) -> None:
        """No fault: up, unstalled, unthrottled, no pending trigger."""
        self._rate = None
        self._call(self._clear)

    # ------------------------------------------------------------------ inside the loop

    def _clear(self) -> None:
        self._triggers.clear()
        self._set_up()
        for conn in self._conns:
            conn.flowing.set()

    def _cut_all(self) -> None:
        self.cuts += 1
        for conn in list(self._conns):
            for writer in (conn.client, conn.server):
                _reset(writer)
            for task in conn.tasks:
                task.cancel()
        self._conns.clear()
        self.cut_happened.set()

    def _set_down(self, seconds: float | None) -> None:
        self._down = True
        self._cut_all()
        if self._up_handle is not None:
            self._up_handle.cancel()
            self._up_handle = None
        if seconds is not None and self._loop is not None:
            self._up_handle = self._loop.call_later(seconds, self._set_up)

    def _set_up(self) -> None:
        self._down = False
        if self._up_handle is not None:
            self._up_handle.cancel()
            self._up_handle = None

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
            self._cut_all()
        for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            task.cancel()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._down:
            _reset(client_w)
            return
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _reset(client_w)
            return
        for w in (client_w, server_w):
            with contextlib.suppress(OSError):
                w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(client_w, server_w)
        conn.flowing.set()
        self._conns.add(conn)
        conn.tasks = [
            asyncio.create_task(self._pipe(conn, client_r, server_w, "up")),
            asyncio.create_task(self._pipe(conn, server_r, client_w, "down")),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*conn.tasks)
        self._conns.discard(conn)
        for w in (client_w, server_w):
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        while True:
            try:
                data = await reader.read(READ_CHUNK)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                with contextlib.suppress(Exception):
                    writer.write_eof()
                return
            await conn.flowing.wait()
            if conn not in self._conns:
                return  # cut meanwhile
            data = self._pass(data, direction)
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return
            if direction == "up":
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            if self._rate:
                await asyncio.sleep(len(data) / self._rate)
            self._fire(direction, len(data))

    def _pass(self, data: bytes, direction: str) -> bytes:
        """What of ``data`` goes through before a pending trigger (a cut lands mid-chunk, on the exact byte)."""
        for trigger in self._triggers:
            if trigger.direction == direction and trigger.left < len(data):
                return data[: max(trigger.left, 0)] or data[:1]
        return data

    def _fire(self, direction: str, nbytes: int) -> None:
        for trigger in list(self._triggers):
            if trigger.direction != direction:
                continue
            trigger.left -= nbytes
            if trigger.left <= 0:
                trigger.times -= 1
                trigger.left = trigger.every
                if trigger.times <= 0:
                    self._triggers.remove(trigger)
                if trigger.down_for > 0:
                    self._set_down(trigger.down_for)
                else:
                    self._cut_all()
                return


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a dead route or a rebooted NAT does, not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()


def wait_for_cut(proxy: FaultProxy, seconds: float = 60.0) -> None:
    """Block until the proxy cut a link (bounded)."""
    deadline = time.monotonic() + seconds
    while not proxy.cut_happened.wait(0.1):
        if time.monotonic() > deadline:
            raise AssertionError(f"the proxy made no cut within {seconds:.0f}s")
