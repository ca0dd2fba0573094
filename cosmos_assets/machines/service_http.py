"""HTTP to the model service inside its container, carried by the verified SSH link; no port is opened anywhere.

The serving app listens on the container's own loopback (Ray Serve's default 127.0.0.1:8000,
docs/upstream/cosmos3-serve.md §2), which nothing outside the container can reach, and that is kept: each request
is one SSH exec channel running ``docker exec -i <container> python -c <relay> 8000``, a few lines that copy the
channel's bytes to that port and back. ``http.client`` speaks HTTP/1.1 over the channel (``Connection: close``),
so the host publishes no port, not even on its loopback, and the link's host-key check covers the requests.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

import paramiko

from cosmos_assets.machines.ssh_link import SshLink

APP_PORT = 8000
# stdin -> 127.0.0.1:PORT -> stdout, until the app closes the connection; exit 3 when nothing listens
RELAY = (
    "import os,socket,sys,threading\n"
    "try:\n s=socket.create_connection(('127.0.0.1',int(sys.argv[1])),10)\n"
    "except OSError as e:\n sys.stderr.write('relay: %s\\n'%e);sys.exit(3)\n"
    "s.settimeout(None)\n"
    "def up():\n"
    " while True:\n  d=os.read(0,65536)\n  if not d:break\n  s.sendall(d)\n"
    "threading.Thread(target=up,daemon=True).start()\n"
    "o=sys.stdout.buffer\n"
    "while True:\n d=s.recv(65536)\n if not d:break\n o.write(d);o.flush()\n"
)


class ServiceUnreachable(ConnectionError):
    """Nothing answered HTTP inside the container (not listening, gone, or the relay could not start)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def detail(self, limit: int = 400) -> str:
        text = self.body.decode("utf-8", "replace").strip()
        return " ".join(text.split())[:limit] or "(empty body)"


class _ChannelSocket:
    """The little of a socket ``http.client`` uses, over a paramiko channel."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan

    def sendall(self, data: bytes) -> None:
        self.chan.sendall(data)

    def makefile(self, mode: str) -> Any:
        return self.chan.makefile(mode)

    def settimeout(self, seconds: float | None) -> None:
        self.chan.settimeout(seconds)

    def close(self) -> None:
        """Nothing: http.client closes its socket as soon as it has read the headers of a ``Connection: close``
        answer (a real socket lives on in the response's file); closing the channel there loses the body not yet
        arrived. :func:`request` closes the channel once the body is read."""


class _ChannelConnection(http.client.HTTPConnection):
    def __init__(self, chan: paramiko.Channel) -> None:
        super().__init__("model-service")
        self.sock = _ChannelSocket(chan)  # type: ignore[assignment]

    def connect(self) -> None:  # the channel is the connection; never dial
        raise ServiceUnreachable("the relay channel was closed")


def relay_argv(container: str, port: int = APP_PORT) -> list[str]:
    return ["docker", "exec", "-i", container, "python", "-c", RELAY, str(port)]


def request(
    link: SshLink,
    container: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: float = 30.0,
    port: int = APP_PORT,
) -> Reply:
    """One HTTP request to the app in ``container``; :class:`ServiceUnreachable` when nothing answered, TimeoutError
    when no answer came within ``timeout`` seconds."""
    chan = link.start(relay_argv(container, port), timeout)
    conn = _ChannelConnection(chan)
    try:
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Connection": "close", **({"Content-Type": "application/json"} if payload is not None else {})}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return Reply(response.status, response.read())
    except (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionError, EOFError) as error:
        err = b""
        try:
            if chan.recv_stderr_ready():
                err = chan.recv_stderr(4096)
        except (OSError, paramiko.SSHException):
            pass
        why = err.decode("utf-8", "replace").strip() or str(error) or type(error).__name__
        raise ServiceUnreachable(
            f"{method} {path} in {container}: no HTTP answer ({' '.join(why.split())[:300]})"
        ) from error
    except TimeoutError as error:
        raise TimeoutError(f"{method} {path} in {container}: no answer within {timeout:.0f}s") from error
    finally:
        conn.close()
        chan.close()
