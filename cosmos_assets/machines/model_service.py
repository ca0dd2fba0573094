"""The resident model service on a host: upstream's serving app in one detached container, kept loaded between runs.

- Started on first use from the same checkout and image as the one-shot runs, under
  :mod:`~cosmos_assets.machines.service_watchdog` (its first process: passes the app's log on, writes ``ready.json``
  at the app's ready line, stops it after ``idle_seconds`` without a request, with no orchestrator alive).
- Named after the host and what it loads (image, command, GPUs, user, variables): a run that needs another setup
  replaces it; one service per host (a one-shot GPU container stops it first, :func:`stop_services`).
- Reached through the SSH link only (:mod:`~cosmos_assets.machines.service_http`), health-checked (``GET /models``)
  before each request, the request's log lines followed live as a one-shot run's are.
- A crashed (container gone or exited), unhealthy (no HTTP answer) or wedged (no answer by ``request_deadline_s``)
  service, or a request the app failed (HTTP 500), is restarted once; a second failure fails the run
  (:class:`ServiceFailed`, cause ``service_failed``). Its state on the host: ``REMOTE_DIR/outputs/.service/<name>/``
  (``out/`` is the app's ``-o``; ``ready.json``, ``last_request``, ``busy``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosmos_assets.machines import service_http, service_watchdog
from cosmos_assets.machines.docker import DockerCli
from cosmos_assets.machines.docker_logs import LogFollower
from cosmos_assets.machines.docker_run import CONTAINER_ROOT, LABEL_PREFIX, DockerRunSettings, docker_run_argv
from cosmos_assets.machines.job import LogLine
from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.redaction import is_secret_name

TAG = "[service]"
SERVICE_ROOT = "outputs/.service"
WATCHDOG_REMOTE = ".cosmos_assets/service_watchdog.py"
WATCHDOG_LOCAL = Path(service_watchdog.__file__)
# Ray Serve's line once every deployment (the model load included) is healthy: "Deployment '<name>' is ready at ..."
# (older) or "Application '<name>' is ready at ..." (newer). UNVERIFIED for the Ray version upstream locks.
READY_PATTERN = "is ready at"
OUTPUT_FOLDER = re.compile(r"^generate_\d{8}_\d{6}_[0-9a-f]{4}$")  # serve.py:208-210
SERVICE_LABEL = f"{LABEL_PREFIX}.service"


class ServiceProblem(RuntimeError):
    """The service crashed, stopped answering or wedged; the caller restarts it once."""


class ServiceFailed(RuntimeError):
    """The service failed again after its one restart (or could not be started): the run fails with this cause."""

    cause = "service_failed"


@dataclass(frozen=True)
class ServiceKnobs:
    """How long to wait, from the settings (COSMOS_SERVE_IDLE_MINUTES...)."""

    idle_seconds: float = 900.0
    load_timeout_s: float = 3600.0  # a first start downloads the checkpoints (~90 GiB)
    request_deadline_s: float = 360.0  # the app's own 300 s (serve.py:166) and a margin: no answer by then is wedged
    poll_s: float = 1.0


@dataclass
class Served:
    """One request's answer, and what it cost."""

    reply: service_http.Reply
    load_seconds: float | None  # the load this run waited for; None: the model was loaded already
    restarted: str | None  # why the service was restarted during this run


class ModelService:
    """The service one host runs for one setup (image, command, GPUs); built by ``SshHost``."""

    def __init__(
        self,
        link: SshLink,
        docker: DockerCli,
        host: str,
        remote_dir: str,
        run_settings: DockerRunSettings,
        app_argv: tuple[str, ...],
        knobs: ServiceKnobs,
        *,
        image_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link, self.docker, self.host, self.remote_dir, self.knobs = link, docker, host, remote_dir, knobs
        self._clock = clock
        env = sorted((k, v) for k, v in run_settings.env.items() if not is_secret_name(k))
        identity = json.dumps(
            [
                run_settings.image,
                image_id,
                list(app_argv),
                run_settings.gpus,
                run_settings.uid,
                run_settings.gid,
                env,
                knobs.idle_seconds,
            ],
            default=str,
        )
        self.key = hashlib.sha256(identity.encode()).hexdigest()[:10]
        slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", host).strip("-_.")[:24] or "host"
        self.name = f"cosmos-service-{slug}-{self.key}"
        state = f"{SERVICE_ROOT}/{self.name}"
        self.state_host = posixpath.join(remote_dir, state)
        self.state_container = posixpath.join(CONTAINER_ROOT, state)
        self.settings = run_settings.model_copy(
            update={
                "container_name": self.name,
                "detach": True,
                "labels": {
                    **run_settings.labels,
                    SERVICE_LABEL: "1",
                    f"{LABEL_PREFIX}.host": host,
                    f"{LABEL_PREFIX}.service-key": self.key,
                },
            }
        )
        self.inner_argv = [
            "python",
            posixpath.join(CONTAINER_ROOT, WATCHDOG_REMOTE),
            "--state",
            self.state_container,
            "--idle-seconds",
            f"{knobs.idle_seconds:g}",
            "--busy-stale-seconds",
            f"{knobs.request_deadline_s + 60:g}",
            "--ready-pattern",
            READY_PATTERN,
            "--",
            *app_argv,
            "-o",
            posixpath.join(self.state_container, "out"),
        ]

    def command(self) -> list[str]:
        """The ``docker run`` argv that starts this service (secrets named only)."""
        return docker_run_argv(self.settings, self.inner_argv)

    # ------------------------------------------------------------------ lifecycle

    def container_id(self) -> str | None:
        code, out, _ = self.link.exec(["docker", "inspect", "--format", "{{.Id}}", self.name])
        return out.strip()[:12] if code == 0 and out.strip() else None

    def ready_seconds(self) -> float | None:
        """The load time from ``ready.json`` once the app said it is ready; None before."""
        code, out, _ = self.link.exec(["cat", posixpath.join(self.state_host, "ready.json")])
        if code != 0:
            return None
        try:
            return float(json.loads(out)["load_seconds"])
        except (ValueError, KeyError, TypeError):
            return None

    def loaded(self) -> bool:
        """Running, and the app said it is ready."""
        state = self.docker.state(self.name)
        return state is not None and state.status == "running" and self.ready_seconds() is not None

    def ensure(self, follower: LogFollower, log: LogLine) -> float | None:
        """Running and loaded when it returns: started (and its load waited for) if needed; the load seconds this
        call waited for, None when it was loaded already."""
        state = self.docker.state(self.name)
        if state is not None and state.status == "running":
            self._touch()  # in use from now: its idle clock starts again before the health check
            loaded = self.ready_seconds()
            if loaded is not None:
                log(f"{TAG} model service {self.name} is loaded on {self.host}: no model load for this run")
                return None
            log(f"{TAG} model service {self.name} is still loading on {self.host}: waiting for it")
            return self._wait_ready(follower, log)
        if state is not None:
            why = "idle stop" if state.exit_code == 0 else f"exit code {state.exit_code}"
            log(f"{TAG} model service {self.name} had ended ({why}); starting it again")
            self.docker.remove(self.name)
        stop_services(self.link, self.host, log, keep=self.name, why="another model setup is asked for")
        self.docker.start(self.settings, self.command(), log)
        log(
            f"{TAG} started model service {self.name} on {self.host}; loading the model (it stays loaded between "
            f"runs, and stops after {self.knobs.idle_seconds / 60:g} min without a request)"
        )
        return self._wait_ready(follower, log)

    def _touch(self) -> None:
        """Mark the service as used now (``last_request``, which its watchdog's idle clock reads)."""
        self.link.exec(["sh", "-c", 'test -d "$1" && touch -- "$1/last_request"', "sh", self.state_host])

    def _wait_ready(self, follower: LogFollower, log: LogLine) -> float:
        deadline = self._clock() + self.knobs.load_timeout_s
        while True:
            self.follow(follower)
            state = self.docker.state(self.name)
            if state is None or state.status in ("exited", "dead"):
                ended = "was removed" if state is None else f"exited with code {state.exit_code}"
                raise ServiceProblem(
                    f"model service {self.name} {ended} before the model was loaded (its last lines are in the run log)"
                )
            loaded = self.ready_seconds()
            if loaded is not None:
                self._touch()  # its idle clock counts from now, not from the ready line
                return loaded
            if self._clock() > deadline:
                raise ServiceProblem(
                    f"model service {self.name} did not finish loading within "
                    f"{self.knobs.load_timeout_s / 60:g} min (COSMOS_SERVE_LOAD_MINUTES)"
                )
            time.sleep(self.knobs.poll_s)

    def health(self) -> None:
        """``GET /models`` answers a list, or :class:`ServiceProblem`."""
        try:
            reply = service_http.request(self.link, self.name, "GET", "/models", timeout=30.0)
        except (service_http.ServiceUnreachable, TimeoutError) as error:
            raise ServiceProblem(f"model service {self.name} failed its health check: {error}") from error
        if reply.status != 200:
            raise ServiceProblem(
                f"model service {self.name} failed its health check: GET /models answered "
                f"{reply.status}: {reply.detail()}"
            )

    def follow_from_now(self, follower: LogFollower) -> None:
        """Make ``follower`` start at the host's present time: a run sees its own lines, not earlier runs'."""
        code, out, _ = self.link.exec(["date", "+%s%N"])
        if code == 0 and out.strip().isdigit():
            follower.last_ns, follower.at_last = int(out.strip()), 0

    def follow(self, follower: LogFollower) -> None:
        """The log lines written since the last call (``docker logs --since``), each delivered once."""
        since = follower.since()
        follower.resume()
        self.link.stream(
            ["docker", "logs", "--timestamps", *(["--since", since] if since else []), self.name], follower.feed
        )

    def generate(self, body: dict[str, Any], follower: LogFollower) -> service_http.Reply:
        """``POST /generate`` while following the log; :class:`ServiceProblem` when the container goes or the answer
        does not come by the deadline."""
        self.link.exec(["sh", "-c", 'touch -- "$1/busy" "$1/last_request"', "sh", self.state_host])
        result: list[service_http.Reply | BaseException] = []

        def call() -> None:
            try:
                result.append(
                    service_http.request(
                        self.link, self.name, "POST", "/generate", body, timeout=self.knobs.request_deadline_s
                    )
                )
            except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
                result.append(error)

        worker = threading.Thread(target=call, name=f"request-{self.name}", daemon=True)
        worker.start()
        deadline = self._clock() + self.knobs.request_deadline_s
        try:
            while worker.is_alive():
                worker.join(self.knobs.poll_s)
                self.follow(follower)
                if not worker.is_alive():
                    break
                self._raise_if_gone()
                if self._clock() > deadline:
                    raise ServiceProblem(
                        f"model service {self.name} gave no answer within {self.knobs.request_deadline_s:.0f}s: wedged"
                    )
            self.follow(follower)
        finally:
            self.link.exec(["sh", "-c", 'rm -f -- "$1/busy"; touch -- "$1/last_request"', "sh", self.state_host])
        answer = result[0]
        if isinstance(answer, (service_http.ServiceUnreachable, TimeoutError)):
            self._raise_if_gone()  # the container's end says more than the cut connection
            raise ServiceProblem(f"model service {self.name}: {answer}") from answer
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _raise_if_gone(self) -> None:
        state = self.docker.state(self.name)
        if state is None or state.status != "running":
            ended = "was removed" if state is None else f"exited with code {state.exit_code}"
            raise ServiceProblem(f"model service {self.name} {ended} during the request")

    def remove(self, log: LogLine, why: str) -> None:
        if self.docker.remove(self.name):
            log(f"{TAG} stopped model service {self.name} on {self.host} ({why})")

    def move_outputs(self, reply: service_http.Reply, dest: str, name: str) -> str:
        """The request's ``generate_*`` folder renamed to ``dest/name`` under REMOTE_DIR (where a one-shot run writes
        its sample), so the download and the output mapping are a one-shot run's. The folder's name is checked; the
        move runs in the service's container, as its user, so what it creates is owned as a one-shot run's is."""
        files = [f for output in reply.json().get("outputs", []) for f in output.get("files", [])]
        folders = {str(f).split("/", 1)[0] for f in files}
        if len(folders) != 1 or not OUTPUT_FOLDER.match(next(iter(folders))):
            raise ServiceFailed(
                f"model service {self.name} answered files outside one generate_<stamp> folder: {files[:3]}"
            )
        source = posixpath.join(self.state_container, "out", folders.pop())
        target_dir = posixpath.join(CONTAINER_ROOT, dest)
        script = 'mkdir -p -- "$2" && mv -T -- "$1" "$2/$3"'
        code, _, err = self.link.exec(["docker", "exec", self.name, "sh", "-c", script, "sh", source, target_dir, name])
        if code != 0:
            raise ServiceFailed(
                f"could not move the request's outputs {source} to {target_dir}/{name} in "
                f"{self.name}: {err.strip()[-300:]}"
            )
        return posixpath.join(dest, name)


def serve_request(service: ModelService, body: dict[str, Any], follower: LogFollower, log: LogLine) -> Served:
    """Start or reuse the service, health-check it, send ``body``; a failed service is restarted once (said in the
    log), a second failure raises :class:`ServiceFailed`."""
    restarted: str | None = None
    load: float | None = None
    for attempt in (1, 2):
        try:
            waited = service.ensure(follower, log)
            load = waited if waited is not None else load
            service.health()
            reply = service.generate(body, follower)
            if reply.status in (200, 404, 422):  # success, or our request is wrong (the same again would be too)
                return Served(reply, load, restarted)
            raise ServiceProblem(
                f"model service {service.name} failed the request: HTTP {reply.status}: {reply.detail()}"
            )
        except ServiceProblem as problem:
            if attempt == 2:
                service.remove(log, "failed twice")
                raise ServiceFailed(
                    f"the model service on {service.host} failed again after one restart ({problem}); "
                    f"first failure: {restarted}. Look at the run log; COSMOS_SERVE=never (or serve: "
                    "never for this host in the pool file) runs Cosmos 3 one-shot"
                ) from problem
            restarted = str(problem)
            log(f"{TAG} {problem}: restarting the model service once")
            service.remove(log, "restart")
    raise AssertionError("unreachable")


def list_services(link: SshLink, host: str | None = None) -> list[tuple[str, str]]:
    """(name, status) of the model services on the engine (of pool host ``host`` only, when given)."""
    argv = [
        "docker",
        "ps",
        "-a",
        "--format",
        "{{.Names}} {{.State}}",
        "--filter",
        f"label={SERVICE_LABEL}=1",
        *(["--filter", f"label={LABEL_PREFIX}.host={host}"] if host else []),
    ]
    code, out, err = link.exec(argv)
    if code != 0:
        raise RuntimeError(f"`docker ps` failed on {link.label}: {err.strip() or f'exit {code}'}")
    return [tuple(line.split(" ", 1)) for line in out.splitlines() if " " in line]  # type: ignore[misc]


def stop_services(link: SshLink, host: str, log: LogLine, keep: str | None = None, why: str = "asked") -> list[str]:
    """Remove the model services of pool host ``host`` (but ``keep``): they hold GPU memory another job needs."""
    stopped = []
    for name, _ in list_services(link, host):
        if name != keep:
            code, _, err = link.exec(["docker", "rm", "--force", name])
            if code == 0:
                stopped.append(name)
                log(f"{TAG} stopped model service {name} on {host} ({why})")
            elif "No such container" not in err:
                raise RuntimeError(f"docker rm {name} failed on {link.label}: {err.strip()}")
    return stopped
