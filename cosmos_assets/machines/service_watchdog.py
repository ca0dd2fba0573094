"""The resident model service's entry point on the host: runs the serving app, says when it is ready, stops it idle.

Self-contained (stdlib only, Python 3.8+): copied onto the host as ``.cosmos_assets/service_watchdog.py`` and run as
the container's first process, so the idle stop needs no orchestrator alive::

    python service_watchdog.py --state DIR --idle-seconds N --ready-pattern TEXT -- python -m <serving app> ...

- Every line of the app is passed on to the container's log (``docker logs``) as it comes.
- The first line holding ``--ready-pattern`` (the app's own ready line) writes ``DIR/ready.json``
  (``load_seconds``: from start to that line), which the client reads instead of guessing from HTTP.
- The client touches ``DIR/last_request`` when a request starts and ends, and holds ``DIR/busy`` while it runs. Idle
  = ready, not busy (a ``busy`` older than ``--busy-stale-seconds`` is a client that died: not busy), and no request
  for ``--idle-seconds`` (counted from readiness when none came). Then the app's process group gets SIGTERM, SIGKILL
  after a grace, and the container ends with exit 0. :func:`idle_expired` is the whole rule (tests force its clock).
- SIGTERM to this process (``docker stop``) is passed on to the app.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

POLL_SECONDS = 1.0
GRACE_SECONDS = 20.0
TAG = "[service]"


def idle_expired(
    now: float,
    ready_at: float | None,
    last_request: float | None,
    busy_since: float | None,
    idle_seconds: float,
    busy_stale_seconds: float,
) -> bool:
    """Whether the service has been idle long enough to stop (all times in the host's epoch seconds)."""
    if ready_at is None:
        return False  # still loading: the client's own load deadline decides
    if busy_since is not None and now - busy_since < busy_stale_seconds:
        return False  # a request is running
    since = max(t for t in (ready_at, last_request, busy_since) if t is not None)
    return now - since >= idle_seconds


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _say(text: str) -> None:
    sys.stdout.write(f"{TAG} {text}\n")
    sys.stdout.flush()


def _write_json(path: str, data: dict) -> None:
    part = path + ".part"
    with open(part, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(part, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="service_watchdog")
    parser.add_argument("--state", required=True)
    parser.add_argument("--idle-seconds", type=float, required=True)
    parser.add_argument("--busy-stale-seconds", type=float, default=3600.0)
    parser.add_argument("--ready-pattern", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    os.makedirs(args.state, exist_ok=True)
    ready_file = os.path.join(args.state, "ready.json")
    for stale in (ready_file, os.path.join(args.state, "busy")):
        if os.path.exists(stale):
            os.unlink(stale)
    started = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ready: list[float] = []

    def pump() -> None:
        assert child.stdout is not None
        for raw in iter(child.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            if not ready and args.ready_pattern in line:
                ready.append(time.time())
                _write_json(
                    ready_file, {"load_seconds": round(ready[0] - started, 3), "ready_at": ready[0], "pid": child.pid}
                )
                _say(f"model loaded in {ready[0] - started:.1f}s; stops after {args.idle_seconds:g}s without a request")

    def stop(reason: str) -> None:
        _say(reason)
        for sig, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                return
            try:
                child.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    signal.signal(signal.SIGTERM, lambda *_: (stop("stopped (SIGTERM)"), sys.exit(143)))
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while child.poll() is None:
        time.sleep(POLL_SECONDS)
        now = time.time()
        busy = _mtime(os.path.join(args.state, "busy"))
        last = _mtime(os.path.join(args.state, "last_request"))
        if idle_expired(now, ready[0] if ready else None, last, busy, args.idle_seconds, args.busy_stale_seconds):
            stop(f"idle for {args.idle_seconds:g}s since the last request: stopping the model service")
            reader.join(5.0)
            return 0
    reader.join(5.0)
    _say(f"the serving app exited with code {child.returncode}")
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


if __name__ == "__main__":
    sys.exit(main())
