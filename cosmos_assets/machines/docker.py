"""The docker container a run happens in, on a host: started, followed, stopped (its ``docker run`` argv, name and
labels are :mod:`cosmos_assets.machines.docker_run`).

The host's own ``docker`` CLI runs over the verified :class:`~cosmos_assets.machines.ssh_link.SshLink`, so the
command we record is the command that ran, behind the same host-key check as the file transfers.

- The container is started detached (``docker run -d``) under a name derived from the run, so a dropped SSH
  link does not stop it; if a container of that name already exists (a retry of the same run) we attach to it.
  Before it starts, a model container of ours still running on the engine makes us wait
  (:mod:`~cosmos_assets.machines.busy_host`).
- Secrets never enter an argv: ``docker run`` gets ``-e NAME`` and the value reaches the docker client's
  environment through the exec channel's stdin (``read -r``), so it shows in no process list, log or record.
- Logs are followed with ``docker logs --follow --timestamps``; after a drop we reconnect and follow again
  with ``--since <last timestamp>``, skipping the lines already delivered
  (:class:`~cosmos_assets.machines.docker_logs.LogFollower`).
- Who ended a container is told apart: the engine going away under it (``docker`` cannot reach its daemon: stopped
  or restarting, whose shutdown stops our container) is :class:`DockerWentAwayError`, retryable; a container removed
  while the engine stayed up is :class:`ContainerRemovedError` (someone ran ``docker rm -f``), never retried.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cosmos_assets.machines.docker_engine import (
    KERNEL_LOG,
    ContainerRemovedError,
    DockerUnreachableError,
    DockerWentAwayError,
    docker_down,
    kernel_log_read,
    kernel_oom_kill,
    one_line,
    wait_for_engine,
)
from cosmos_assets.machines.docker_logs import LogFollower
from cosmos_assets.machines.docker_run import (
    DockerRunSettings,
    secret_env,
    secrets_from_stdin,
)
from cosmos_assets.machines.job import HostLinkLostError, HostNotReadyError, HostUnreachableError, LinkDropped, LogLine
from cosmos_assets.machines.ssh_link import TAG, SshLink

IMAGE_ABSENT_SIGNS = ("No such image", "image not known")  # docker's (CLI or daemon) and podman's "not there"


# --------------------------------------------------------------------------- lifecycle on a host


@dataclass(frozen=True)
class ContainerState:
    status: str
    exit_code: int


class DockerCli:
    """The host's ``docker`` CLI over an SSH link: images, and one run's container from start to removal."""

    def __init__(self, link: SshLink) -> None:
        self.link = link

    @property
    def label(self) -> str:
        return self.link.label

    def image_present(self, image: str) -> bool:
        """Whether the engine has ``image``; :class:`DockerUnreachableError` when it does not answer (never "missing")."""
        return self._inspect_image(image)[0] == 0

    def image_id(self, image: str) -> str | None:
        """``image``'s ID on the engine (``sha256:...``: a rebuilt tag is a new ID); None only when docker says it is
        not there; :class:`HostNotReadyError` when the answer is not an ID."""
        code, out = self._inspect_image(image)
        if code != 0:
            return None
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", out.strip()):
            raise HostNotReadyError(
                f"`docker image inspect {image}` on {self.label} answered {one_line(out, 80)!r}, "
                "not an image ID; check the host's docker"
            )
        return out.strip()

    def _inspect_image(self, image: str) -> tuple[int, str]:
        """(0, its ID) or (non-zero, "") when docker says there is no such image; any other failure raises (a docker
        that cannot be asked has not lost its images)."""
        code, out, err = self.link.exec(["docker", "image", "inspect", "--format", "{{.Id}}", image])
        if code == 0:
            return code, out
        if docker_down(err):
            raise DockerUnreachableError(
                f"docker is not reachable on {self.label} ({one_line(err)}). A later "
                "attempt retries: the daemon may be restarting."
            )
        if not any(sign in err for sign in IMAGE_ABSENT_SIGNS):
            raise HostNotReadyError(
                f"`docker image inspect {image}` failed on {self.label} "
                f"({one_line(err or out) or f'exit {code}'}), so whether the image is there is "
                "unknown. Fix: let the SSH user use docker there (sudo usermod -aG docker $USER, "
                "then log in again)"
            )
        return code, ""

    def state(self, name: str) -> ContainerState | None:
        """The container's status and exit code; None when there is no such container. Raises
        :class:`DockerUnreachableError` when the docker daemon does not answer (so no answer is never "gone")."""
        code, out, err = self.link.exec(
            ["docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name]
        )
        if code != 0:
            if docker_down(err):
                raise DockerUnreachableError(
                    f"docker is not reachable on {self.label} ({one_line(err)}). A later "
                    "attempt retries: the daemon may be restarting."
                )
            return None
        status, exit_code = out.split()
        return ContainerState(status=status, exit_code=int(exit_code))

    def start(self, settings: DockerRunSettings, command: Sequence[str], log: LogLine) -> bool:
        """Start the container detached; if one of that name exists (a retry of this run), attach. True if attached."""
        name = settings.container_name
        if self.state(name) is not None:
            log(
                f"{TAG} container {name} already exists (an earlier attempt of this run): attaching to it, "
                "not starting another"
            )
            return True
        secrets = secret_env(settings)
        names = sorted(secrets)
        broken = [n for n in names if "\n" in secrets[n] or "\r" in secrets[n]]
        if broken:
            raise HostNotReadyError(f"secret {broken[0]} holds a line break; remove it")
        argv = secrets_from_stdin(names, command) if names else list(command)
        code, out, err = self.link.exec(argv, stdin_lines=[secrets[n] for n in names])
        if code != 0:
            if self.state(name) is not None:  # lost a race with an earlier attempt: attach to it
                return True
            hint = ""
            if "gpu" in err.lower():
                hint = (
                    " Fix: install the NVIDIA Container Toolkit (nvidia-ctk runtime configure --runtime=docker; "
                    "restart docker), or COSMOS_DOCKER_GPUS=none on a test host without GPUs."
                )
            raise HostNotReadyError(f"docker run failed on {self.label} (exit {code}): {err.strip()[-600:]}{hint}")
        log(f"{TAG} started container {name} ({out.strip()[:12]}), detached: it keeps running if the SSH link drops")
        return False

    def follow_until_exit(self, name: str, follower: LogFollower, log: LogLine) -> int:
        """Stream the container's log until it exits, re-attaching after link drops; its exit code.

        Raises :class:`DockerWentAwayError` when the engine stopped answering meanwhile and the container did not
        outlive it (or the engine is not back within ENGINE_WAIT_S), :class:`ContainerRemovedError` when the
        container was removed while the engine stayed up. A container that finished (exit 0) while the engine was
        away did its work: its 0 is returned and its outputs are collected."""
        failures = 0
        engine_went_away = False  # the engine stopped answering under us and the container is not seen running since
        while True:
            delivered = follower.delivered
            try:
                since = follower.since()
                self.link.stream(
                    ["docker", "logs", "--follow", "--timestamps", *(["--since", since] if since else []), name],
                    follower.feed,
                )
                try:
                    state = self.state(name)
                except DockerUnreachableError as down:
                    engine_went_away = True  # kept across a link drop while waiting for the engine
                    state = wait_for_engine(lambda: self.state(name), self.label, name, down, log)
                if engine_went_away and (
                    state is None or (state.status in ("exited", "dead") and state.exit_code != 0)
                ):
                    ended = "removed it" if state is None else f"ended it (exit code {state.exit_code})"
                    raise DockerWentAwayError(
                        f"docker on {self.label} went away while container {name} ran (the engine was stopped or "
                        f"restarted, and that {ended}); the work was not at fault: a later attempt runs it again"
                    )
                if state is None:
                    raise ContainerRemovedError(
                        f"container {name} was removed from {self.label} while it ran, with the docker engine up "
                        f"(someone or something ran `docker rm -f {name}`); not retried: materialize again to run it"
                    )
                if state.status in ("exited", "dead"):
                    return state.exit_code
                engine_went_away = False  # it outlived the engine's restart (live-restore): follow on
                follower.resume()  # `docker logs` ended early while the container runs: follow again
                time.sleep(1.0)
            except (LinkDropped, HostUnreachableError) as error:
                if follower.delivered > delivered:
                    failures = 0  # the link carried lines since the last drop: a new incident
                failures += 1
                if failures > self.link.reconnect_attempts:
                    raise HostLinkLostError(
                        f"lost the SSH link to {self.label} while following {name} and {self.link.reconnect_attempts} "
                        f"reconnects failed ({error})"
                    ) from error
                if self.link.wait_and_reconnect(failures, f"the run of {name}", error, log):
                    log(f"{TAG} re-attaching to {name}'s log from where it stopped")
                follower.resume()

    def remove(self, name: str) -> bool:
        """docker rm --force; False when there was no such container."""
        code, _, err = self.link.exec(["docker", "rm", "--force", name])
        if code != 0 and "No such container" not in err:
            raise RuntimeError(f"docker rm {name} failed on {self.label}: {err.strip()}")
        return code == 0

    def stop(self, name: str, log: LogLine) -> None:
        """Best effort (we are already failing): stop and remove the container, reconnecting once if needed."""
        last: BaseException | None = None
        for attempt in (1, 2):
            try:
                if attempt == 2:
                    self.link.reconnect()
                if self.remove(name):
                    log(f"{TAG} stopped and removed container {name}")
                return
            except BaseException as error:  # noqa: BLE001 - the original error is what the caller raises
                last = error
        log(
            f"{TAG} could not stop container {name} ({last}); stop it by hand: cosmos-assets ssh, then docker rm -f {name}"
        )

    def oom_killed(self, name: str) -> tuple[bool | None, bool]:
        """Whether the kernel's OOM killer ended the container: docker's ``State.OOMKilled`` (None if docker could not
        be asked), and, when docker says no, whether the kernel log names the container in an ``oom-kill`` line."""
        try:
            code, out, _ = self.link.exec(["docker", "inspect", "--format", "{{.State.OOMKilled}} {{.Id}}", name])
            if code != 0 or len(out.split()) != 2:
                return None, False
            flag, container_id = out.split()
            if flag == "true":
                return True, False
            code, log, _ = self.link.exec(["sh", "-c", KERNEL_LOG], timeout=30)
            if code != 0 or not kernel_log_read(log):
                return None, False  # docker's flag misses a host-wide OOM kill and the kernel cannot tell: unknown
            return False, kernel_oom_kill(log, container_id)
        except Exception:  # noqa: BLE001 - a detail of the failure, never a failure of its own
            return None, False
