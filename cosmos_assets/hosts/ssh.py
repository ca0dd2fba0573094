"""A real GPU host over SSH: files by SFTP, Cosmos-Transfer1 in Docker, live logs, survives a dropped link.

Everything rides ONE verified paramiko link made by :func:`cosmos_assets.hosts.sftp.connect_ssh`
(known_hosts checked, TOFU only when asked, a changed key always refused): SFTP for files, and the
host's own ``docker`` CLI run over exec channels, so the command we record is the command that ran.

Run design (one container, one output, never a second GPU job):
- the container is started detached (``docker run -d``) under a name derived from the run, so a
  dropped SSH link does not stop it; if a container of that name already exists (a retry of the
  same run) we attach to it instead of starting another, and a running container of another run
  for the same prompt and stage makes us refuse;
- logs are followed with ``docker logs --follow --timestamps``; after a drop we reconnect (bounded
  retries, backoff) and follow again with ``--since <last timestamp>``, skipping the lines already
  delivered, until the container has exited; then its exit code is read and it is removed;
- any other interruption of the step (Dagster cancel raises into it) stops and removes the container.

Secrets (the HF token) never enter an argv: ``docker run`` gets ``-e HF_TOKEN`` and the value reaches
the docker client's environment through the exec channel's stdin (``read -r``), so it shows in no
process list, log, ``spec_used.json`` or metadata.
"""

from __future__ import annotations

import bisect
import calendar
import itertools
import logging
import os
import posixpath
import re
import shlex
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import paramiko
from pydantic import Field, PrivateAttr, field_validator

from cosmos_assets.command import (
    CONTAINER_CHECKPOINTS,
    CONTAINER_ROOT,
    ENTRY_POINT,
    VALID_GPU_COUNTS,
    DockerRunSettings,
    container_name_for,
    docker_run_argv,
    is_secret_name,
    redacted,
    secret_env,
    transfer_argv,
)
from cosmos_assets.config import RemoteSettings
from cosmos_assets.hosts.base import (
    GUARDRAIL_MARKER,
    GpuHost,
    HostNotReadyError,
    InferenceJob,
    LogLine,
    RunOutcome,
    TRANSFER_PROGRESS_SECONDS,
    StagedFile,
    TransferStats,
    format_transfer_progress,
)
from cosmos_assets.hosts.sftp import (
    DEFAULT_PASSPHRASE_ENV,
    HostKeyError,
    SshSettings,
    TransferReport,
    connect_ssh,
    download_tree,
    list_remote_files,
    resolve_target,
    upload_files,
)

log = logging.getLogger(__name__)

TAG = "[ssh]"
BUILD_TAG = "[docker build]"
LOG_TAIL_LINES = 40
STREAM_POLL_S = 20.0  # no output for this long: check the link is alive
PROBE_TIMEOUT_S = 20.0
EXIT_STATUS_WAIT_S = 10.0
COMMAND_TIMEOUT_S = 120.0
MAX_BACKOFF_S = 30.0
LABEL_PREFIX = "cosmos-assets"
SECRET_ENV_NAMES = ("HF_TOKEN",)

MODEL_DIR = "nvidia/Cosmos-Transfer1-7B"
AV_MODEL_DIR = "nvidia/Cosmos-Transfer1-7B-Sample-AV"
# Checkpoint paths under the checkpoint dir, from cosmos_transfer1/checkpoints.py (see FACTS.md).
ALWAYS_NEEDED = ("nvidia/Cosmos-Tokenize1-CV8x8x8-720p", "google-t5/t5-11b", "nvidia/Cosmos-Guardrail1")
CONTROL_CHECKPOINTS: dict[str, tuple[str, ...]] = {
    "vis": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/vis_control.pt"),
    "edge": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/edge_control.pt"),
    "seg": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/seg_control.pt"),
    "depth": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/depth_control.pt"),
    "keypoint": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/keypoint_control.pt"),
    "upscale": (f"{MODEL_DIR}/base_model.pt", f"{MODEL_DIR}/4kupscaler_control.pt"),
    "hdmap": (f"{AV_MODEL_DIR}/base_model.pt", f"{AV_MODEL_DIR}/hdmap_control.pt"),
    "lidar": (f"{AV_MODEL_DIR}/base_model.pt", f"{AV_MODEL_DIR}/lidar_control.pt"),
}
# Models Cosmos runs to derive a control video when the spec gives none.
DERIVED_CONTROL_MODELS: dict[str, tuple[str, ...]] = {
    "depth": ("depth-anything/Depth-Anything-V2-Small-hf",),
    "seg": ("facebook/sam2-hiera-large", "IDEA-Research/grounding-dino-tiny"),
}
UPSAMPLER_MODEL = "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer"


class HostUnreachableError(HostNotReadyError):
    """The SSH connection could not be made (network, auth); worth retrying, unlike a host-key refusal."""


class HostLinkLostError(RuntimeError):
    """The SSH link stayed down through every reconnect attempt; the container may still be running."""


class _LinkDropped(Exception):
    """The SSH link broke under a command (internal: triggers a reconnect)."""


@dataclass(frozen=True)
class HostFacts:
    """What we learn about the host once per connection: absolute paths and the container's user."""

    home: str
    remote_dir: str
    checkpoint_dir: str
    uid: int
    gid: int
    user_source: str


@dataclass
class ContainerState:
    status: str
    exit_code: int


def absolute_remote_path(path: str, home: str) -> str:
    """REMOTE_DIR as the host sees it: ``~`` and relative paths are under the remote user's home."""
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    elif path.startswith("~"):
        raise ValueError(f"{path!r}: only ~ (the remote user's home) is expanded, not ~user; give an absolute path")
    elif not path.startswith("/"):
        path = posixpath.join(home, path)
    return posixpath.normpath(path)


def remote_child(root: str, relative: str) -> str:
    """``root/relative`` for a path that must stay inside root (the cosmos-transfer1 checkout)."""
    normal = posixpath.normpath(relative)
    if relative.startswith("/") or normal == ".." or normal.startswith("../"):
        raise ValueError(f"{relative!r} must be relative to the cosmos-transfer1 root and stay inside it")
    return posixpath.join(root, normal)


def required_checkpoints(spec: Any, upsample_prompt: bool = False) -> list[str]:
    """Checkpoint files and folders (relative to the checkpoint dir) the spec's controls need."""
    needed: list[str] = list(ALWAYS_NEEDED)
    for key, control in spec.controls():
        needed += CONTROL_CHECKPOINTS.get(key, ())
        if not control.input_control:
            needed += DERIVED_CONTROL_MODELS.get(key, ())
    if upsample_prompt:
        needed.append(UPSAMPLER_MODEL)
    return list(dict.fromkeys(needed))


def parse_gpus(value: str) -> str | tuple[str, ...] | None:
    """COSMOS_DOCKER_GPUS: ``all``, ``none`` (no GPU request, for hosts without the NVIDIA runtime) or ``0,1``."""
    text = value.strip().lower()
    if text == "all":
        return "all"
    if text == "none":
        return None
    devices = tuple(d.strip() for d in value.split(",") if d.strip())
    if not devices or not all(re.match(r"^[A-Za-z0-9-]+$", d) for d in devices):
        raise ValueError(f"docker_gpus {value!r}: use 'all', 'none' or device ids like '0,1'")
    return devices


def parse_user(value: str) -> tuple[int, int]:
    match = re.match(r"^\s*(\d+):(\d+)\s*$", value)
    if not match:
        raise ValueError(f"container_user {value!r} must be numeric uid:gid, e.g. 1000:1000")
    return int(match[1]), int(match[2])


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

    After a reconnect the log is read again from the last timestamp seen (``--since`` is inclusive):
    lines older than it, and as many lines at exactly it as were already delivered, are skipped.
    """

    def __init__(self, log: LogLine, tail: deque[str]) -> None:
        self._log = log
        self.tail = tail
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
        self.guardrail = self.guardrail or GUARDRAIL_MARKER in text
        self._log(text)


def progress_logger(log: LogLine, direction: str, sizes: list[int],
                    every_s: float = TRANSFER_PROGRESS_SECONDS) -> Callable[[int, int], None]:
    """A (bytes done, bytes total) callback logging the shared progress line at most every ``every_s`` and at the end.

    Files are sent in order, so the files done follow from the bytes done and each file's size.
    """
    started = time.monotonic()
    ends = list(itertools.accumulate(sizes))
    last = [started]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < every_s:
            return
        last[0] = now
        files_done = bisect.bisect_right(ends, done)
        log(format_transfer_progress(direction, done, total, files_done, len(sizes), now - started))

    return progress


def _stats(report: TransferReport) -> TransferStats:
    return TransferStats(
        files_sent=report.files_sent, files_skipped=report.files_skipped,
        bytes_sent=report.bytes_sent, seconds=report.seconds,
    )  # fmt: skip


def _in_dir(directory: str, argv: list[str]) -> list[str]:
    """argv run from ``directory`` on the host (both passed as arguments, never pasted into the script)."""
    return ["sh", "-c", 'cd -- "$1" && shift && exec "$@"', "sh", directory, *argv]


def _secrets_from_stdin(names: list[str], argv: list[str]) -> list[str]:
    """argv run with each named variable read from one stdin line and exported (values stay off argv)."""
    reads = "".join(f"IFS= read -r {name} && export {name} && " for name in names)
    return ["sh", "-c", reads + 'exec "$@"', "sh", *argv]


def _is_link_error(error: BaseException) -> bool:
    return isinstance(error, (paramiko.SSHException, EOFError, ConnectionError, socket.error)) and not isinstance(
        error, HostKeyError
    )


class SshGpuHost(GpuHost):
    """Cosmos-Transfer1 in Docker on a GPU host reached over SSH (the seed's scripts, as a resource)."""

    host: str = Field(description="REMOTE_HOST: address or an alias from ~/.ssh/config.")
    user: str | None = Field(default=None, description="REMOTE_USER; default from ~/.ssh/config, else the local user.")
    port: int | None = Field(default=None, description="REMOTE_PORT; default from ~/.ssh/config, else 22.")
    ssh_key: str | None = Field(default=None, description="SSH_KEY: private key file; default from ~/.ssh/config.")
    key_passphrase_env: str = Field(
        default=DEFAULT_PASSPHRASE_ENV, description="Name of the environment variable holding the key's passphrase."
    )
    known_hosts: str | None = Field(default=None, description="known_hosts file; default ~/.ssh/known_hosts.")
    ssh_config: str | None = Field(default=None, description="ssh config file; default ~/.ssh/config.")
    trust_on_first_use: bool = Field(default=False, description="Record an unknown host key instead of refusing.")
    remote_dir: str = Field(default="~/cosmos-transfer1", description="REMOTE_DIR: the cosmos-transfer1 checkout.")
    checkpoint_dir: str | None = Field(
        default=None, description="CHECKPOINT_DIR_REMOTE; default REMOTE_DIR/../checkpoints."
    )
    docker_image: str = Field(description="DOCKER_IMAGE; built from REMOTE_DIR/Dockerfile when missing.")
    docker_gpus: str = Field(default="all", description="'all', 'none' (no NVIDIA runtime) or device ids '0,1'.")
    container_user: str | None = Field(
        default=None, description="uid:gid for the container; default the remote user's, or REMOTE_DIR's owner for root."
    )
    container_env: dict[str, str] = Field(default_factory=dict, description="Extra non-secret container variables.")
    hf_token: str | None = Field(default=None, description="Hugging Face token (use dg.EnvVar('HF_TOKEN')).")
    min_free_gb: float = Field(default=20.0, description="Preflight: free space needed on REMOTE_DIR's disk.")
    reconnect_attempts: int = Field(default=6, description="Reconnects tried (with backoff) when the link drops.")
    name: str | None = Field(default=None, description="Host name in tags and metadata; default ssh@REMOTE_HOST.")

    _client: paramiko.SSHClient | None = PrivateAttr(default=None)
    _facts: HostFacts | None = PrivateAttr(default=None)

    @field_validator("docker_gpus")
    @classmethod
    def _valid_gpus(cls, v: str) -> str:
        parse_gpus(v)
        return v

    @field_validator("container_user")
    @classmethod
    def _valid_user(cls, v: str | None) -> str | None:
        if v is not None:
            parse_user(v)
        return v

    @field_validator("container_env")
    @classmethod
    def _no_secrets_in_env(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if is_secret_name(name):
                raise ValueError(f"container_env {name}: secrets do not go in config; set hf_token=dg.EnvVar(...)")
        return v

    @classmethod
    def from_env(cls) -> "SshGpuHost":
        """The seed's config.sh variables (see :class:`RemoteSettings`); HF_TOKEN stays an EnvVar."""
        settings = RemoteSettings.from_env()
        if not settings.host:
            raise ValueError(
                "COSMOS_HOST=ssh needs REMOTE_HOST (the GPU host's address or ~/.ssh/config alias); "
                "see docs/gpu-host.md"
            )
        return cls(
            host=settings.host,
            user=settings.user,
            port=settings.port,
            ssh_key=settings.ssh_key,
            known_hosts=settings.known_hosts,
            trust_on_first_use=settings.trust_on_first_use,
            remote_dir=settings.remote_dir,
            checkpoint_dir=settings.checkpoint_dir,
            docker_image=settings.docker_image,
            docker_gpus=settings.docker_gpus,
            container_user=settings.container_user,
            hf_token=dg.EnvVar("HF_TOKEN") if os.environ.get("HF_TOKEN") else None,
            min_free_gb=settings.min_free_gb,
        )

    # ------------------------------------------------------------------ identity

    @property
    def label(self) -> str:
        return self.name or f"ssh@{self.host}"

    @property
    def backend(self) -> str:
        return "cosmos-transfer1"

    def ssh_settings(self) -> SshSettings:
        return SshSettings(
            host=self.host,
            port=self.port,
            user=self.user,
            key_file=Path(self.ssh_key).expanduser() if self.ssh_key else None,
            key_passphrase_env=self.key_passphrase_env,
            known_hosts=Path(self.known_hosts).expanduser() if self.known_hosts else None,
            ssh_config=Path(self.ssh_config).expanduser() if self.ssh_config else None,
            trust_on_first_use=self.trust_on_first_use,
        )

    def openssh_argv(self, command: list[str] | None = None) -> list[str]:
        """The OpenSSH client argv for an interactive shell with the same settings (``cosmos-assets ssh``)."""
        target = resolve_target(self.ssh_settings())
        argv = ["ssh", "-p", str(target.port)]
        if self.ssh_config:
            argv += ["-F", str(Path(self.ssh_config).expanduser())]
        for key in target.key_files:
            argv += ["-i", str(key)]
        # ssh splits UserKnownHostsFile on spaces; quotes keep one path whole
        known = str(target.known_hosts)
        known = f'"{known}"' if any(c.isspace() for c in known) else known
        strict = "accept-new" if self.trust_on_first_use else "yes"
        argv += ["-o", f"UserKnownHostsFile={known}", "-o", f"StrictHostKeyChecking={strict}"]
        argv += ["--", f"{target.user}@{target.hostname}", *(command or [])]
        return argv

    # ------------------------------------------------------------------ connection

    def _connect(self) -> paramiko.SSHClient:
        try:
            return connect_ssh(self.ssh_settings())
        except HostKeyError as error:
            raise HostNotReadyError(str(error)) from error
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise HostUnreachableError(
                f"cannot connect to {self.label} ({error}). Check REMOTE_HOST, REMOTE_PORT, REMOTE_USER and "
                "SSH_KEY (or the host's entry in ~/.ssh/config), that the instance is running, and try "
                "`cosmos-assets ssh`."
            ) from error

    def _ssh(self) -> paramiko.SSHClient:
        """The live SSH client, reconnecting lazily when the link is gone."""
        client = self._client
        if client is not None:
            transport = client.get_transport()
            if transport is not None and transport.is_active():
                return client
            client.close()
            self._client = None
        self._client = self._connect()
        return self._client

    def _transport(self) -> paramiko.Transport:
        transport = self._ssh().get_transport()
        assert transport is not None
        return transport

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def _exec(self, argv: list[str], stdin_lines: list[str] | None = None,
              timeout: float = COMMAND_TIMEOUT_S) -> tuple[int, str, str]:
        """Run argv on the host (every word quoted); (exit code, stdout, stderr). A broken link raises _LinkDropped."""
        transport = self._transport()
        try:
            chan = transport.open_session(timeout=timeout)
            try:
                chan.settimeout(timeout)
                chan.exec_command(shlex.join(argv))
                for line in stdin_lines or []:
                    chan.sendall((line + "\n").encode())
                chan.shutdown_write()
                out = chan.makefile("rb").read()
                err = chan.makefile_stderr("rb").read()
                code = chan.recv_exit_status()
            finally:
                chan.close()
        except BaseException as error:
            if _is_link_error(error) or not transport.is_active():
                raise _LinkDropped(f"{type(error).__name__}: {error}") from error
            raise
        if code == -1 and not transport.is_active():
            raise _LinkDropped("the SSH link closed before the command's exit status arrived")
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def _probe(self, transport: paramiko.Transport) -> None:
        """Raise _LinkDropped unless the server still answers (opening a channel needs a round trip)."""
        if not transport.is_active():
            raise _LinkDropped("the SSH link closed")
        try:
            transport.open_session(timeout=PROBE_TIMEOUT_S).close()
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise _LinkDropped(f"the host stopped answering ({error})") from error

    def _stream(self, argv: list[str], on_line: LogLine) -> int:
        """Run argv on the host, passing each output line (stdout and stderr) to on_line; its exit code."""
        transport = self._transport()
        try:
            chan = transport.open_session(timeout=COMMAND_TIMEOUT_S)
            chan.set_combine_stderr(True)
            chan.settimeout(STREAM_POLL_S)
            chan.exec_command(shlex.join(argv))
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise _LinkDropped(f"{type(error).__name__}: {error}") from error
        pending = b""
        try:
            while True:
                try:
                    data = chan.recv(65536)
                except TimeoutError:
                    self._probe(transport)  # quiet for a while (model loading): is the link alive?
                    continue
                except (paramiko.SSHException, OSError, EOFError) as error:
                    raise _LinkDropped(f"{type(error).__name__}: {error}") from error
                if not data:
                    break
                *lines, pending = (pending + data).split(b"\n")
                for raw in lines:
                    on_line(raw.decode(errors="replace").rstrip("\r"))
            # EOF: a finished command, or a dead link (then no exit status comes; a partial line is dropped)
            if not chan.status_event.wait(EXIT_STATUS_WAIT_S) or not transport.is_active():
                raise _LinkDropped("the SSH link closed under a running command")
            code = chan.recv_exit_status()
            if code == -1:
                raise _LinkDropped("the command ended without an exit status (link closed)")
            if pending:
                on_line(pending.decode(errors="replace").rstrip("\r"))
            return code
        finally:
            chan.close()

    def _reconnect(self) -> None:
        self.close()
        self._ssh()

    def _with_reconnect(self, what: str, action: Callable[[], Any], log_line: LogLine) -> Any:
        """Run action; if the SSH link breaks under it, reconnect with backoff and run it again (it must be idempotent)."""
        failures = 0
        while True:
            try:
                return action()
            except BaseException as error:
                link = isinstance(error, (_LinkDropped, HostUnreachableError)) or (
                    _is_link_error(error) and self._client is not None and not self._link_alive()
                )
                if not link:
                    raise
                failures += 1
                if failures > self.reconnect_attempts:
                    raise HostLinkLostError(
                        f"{what}: the SSH link to {self.label} stayed down after {self.reconnect_attempts} "
                        f"reconnects ({error})"
                    ) from error
                self._wait_and_reconnect(failures, what, error, log_line)

    def _link_alive(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def _wait_and_reconnect(self, failures: int, what: str, error: BaseException, log_line: LogLine) -> bool:
        delay = min(MAX_BACKOFF_S, 2.0 ** (failures - 1))
        log_line(f"{TAG} SSH link to {self.label} lost during {what} ({error}); reconnecting in {delay:.0f}s "
                 f"(attempt {failures}/{self.reconnect_attempts})")
        time.sleep(delay)
        try:
            self._reconnect()
        except HostUnreachableError as again:
            log_line(f"{TAG} reconnect failed: {again}")
            return False
        log_line(f"{TAG} reconnected to {self.label}")
        return True

    # ------------------------------------------------------------------ host facts

    def host_facts(self) -> HostFacts:
        """Absolute REMOTE_DIR and checkpoint dir, and the uid:gid the container runs as."""
        if self._facts is None:
            try:
                self._facts = self._read_facts()
            except _LinkDropped as error:
                raise HostUnreachableError(f"the SSH link to {self.label} dropped while reading host facts ({error})") from error
        return self._facts

    def _read_facts(self) -> HostFacts:
        sftp = self._ssh().open_sftp()
        try:
            home = sftp.normalize(".")
        finally:
            sftp.close()
        remote_dir = absolute_remote_path(self.remote_dir, home)
        checkpoints = absolute_remote_path(self.checkpoint_dir or f"{remote_dir}/../checkpoints", home)
        uid, gid, source = self._container_ids(remote_dir)
        return HostFacts(home=home, remote_dir=remote_dir, checkpoint_dir=checkpoints, uid=uid, gid=gid,
                         user_source=source)

    def _container_ids(self, remote_dir: str) -> tuple[int, int, str]:
        """uid:gid for ``docker run -u``: configured, else the remote user's, else (root) REMOTE_DIR's owner."""
        if self.container_user:
            uid, gid = parse_user(self.container_user)
            return uid, gid, "container_user setting"
        code, out, err = self._exec(["sh", "-c", "id -u && id -g"])
        if code != 0:
            raise HostNotReadyError(f"`id -u; id -g` failed on {self.label}: {err.strip()}")
        uid, gid = (int(x) for x in out.split()[:2])
        if uid != 0:
            return uid, gid, "remote user (id -u, id -g)"
        # Logged in as root: outputs would be root-owned; write them as the checkout's owner instead.
        code, out, _ = self._exec(["stat", "-c", "%u %g", "--", remote_dir])
        if code == 0:
            owner_uid, owner_gid = (int(x) for x in out.split()[:2])
            if owner_uid != 0:
                return owner_uid, owner_gid, f"owner of {remote_dir} (remote user is root)"
        return 0, 0, "root (remote user and REMOTE_DIR owner are root; set COSMOS_CONTAINER_USER=uid:gid)"

    # ------------------------------------------------------------------ preflight

    def preflight(self, job: InferenceJob, log: LogLine) -> None:
        started = time.monotonic()
        facts = self.host_facts()
        log(f"{TAG} connected to {self.label}; REMOTE_DIR {facts.remote_dir}; checkpoints {facts.checkpoint_dir}; "
            f"container user {facts.uid}:{facts.gid} ({facts.user_source})")
        self._check_checkout(facts)
        self._check_docker()
        self._ensure_image(facts, log)
        self._check_gpus(job, log)
        self._check_checkpoints(job, facts)
        self._check_disk(facts)
        log(f"{TAG} preflight ok in {time.monotonic() - started:.1f}s: image {self.docker_image}, "
            f"{job.invocation.num_gpus} GPU(s), checkpoints present")

    def _check_checkout(self, facts: HostFacts) -> None:
        code, _, _ = self._exec(["test", "-f", remote_child(facts.remote_dir, ENTRY_POINT)])
        if code != 0:
            raise HostNotReadyError(
                f"{facts.remote_dir} on {self.label} is not a cosmos-transfer1 checkout (no {ENTRY_POINT}). Fix: on "
                f"the host, git clone https://github.com/nvidia-cosmos/cosmos-transfer1 {shlex.quote(facts.remote_dir)}"
                " (or set REMOTE_DIR to where it is)."
            )

    def _check_docker(self) -> None:
        code, out, err = self._exec(["docker", "version", "--format", "{{.Server.Version}}"])
        if code != 0:
            raise HostNotReadyError(
                f"docker is not reachable on {self.label} ({(err or out).strip()[-400:]}). Fix: install Docker and the "
                "NVIDIA Container Toolkit, start the daemon, and let the SSH user use it "
                "(sudo usermod -aG docker $USER, then log in again)."
            )

    def _image_present(self) -> bool:
        code, _, _ = self._exec(["docker", "image", "inspect", "--format", "{{.Id}}", self.docker_image])
        return code == 0

    def _ensure_image(self, facts: HostFacts, log: LogLine) -> None:
        if self._image_present():
            return
        dockerfile = remote_child(facts.remote_dir, "Dockerfile")
        if self._exec(["test", "-f", dockerfile])[0] != 0:
            raise HostNotReadyError(
                f"image {self.docker_image} is not on {self.label} and there is no {dockerfile} to build it from. "
                f"Fix: clone cosmos-transfer1 into REMOTE_DIR (it has the Dockerfile), or docker pull/load the image, "
                "or set DOCKER_IMAGE to an image the host has."
            )
        build = ["docker", "build", "-f", "Dockerfile", ".", "-t", self.docker_image]  # the seed's command
        log(f"{TAG} image {self.docker_image} missing: building it on the host in {facts.remote_dir}: "
            f"{shlex.join(build)}")
        started = time.monotonic()
        tail: deque[str] = deque(maxlen=20)

        def build_line(line: str) -> None:
            tail.append(line)
            log(f"{BUILD_TAG} {line}")

        try:
            code = self._stream(_in_dir(facts.remote_dir, build), build_line)
        except _LinkDropped as error:
            raise HostNotReadyError(
                f"the SSH link dropped during the image build on {self.label} ({error}); run again to restart it"
            ) from error
        if code != 0 or not self._image_present():
            raise HostNotReadyError(
                f"docker build of {self.docker_image} failed on {self.label} (exit {code}). Fix the Dockerfile in "
                f"{facts.remote_dir} or build it by hand there. Last lines:\n" + "\n".join(tail)
            )
        log(f"{TAG} built {self.docker_image} in {time.monotonic() - started:.1f}s")

    def _check_gpus(self, job: InferenceJob, log: LogLine) -> None:
        needed = job.invocation.num_gpus
        if needed not in VALID_GPU_COUNTS:
            raise HostNotReadyError(f"num_gpus {needed} must divide 16 (1, 2, 4, 8 or 16); see FACTS.md")
        gpus = parse_gpus(self.docker_gpus)
        if gpus is None:
            log(f"{TAG} COSMOS_DOCKER_GPUS=none: the container gets no GPUs (a test host; the model needs them)")
            return
        code, out, err = self._exec(["nvidia-smi", "-L"])
        found = [line for line in out.splitlines() if line.startswith("GPU ")]
        if code == 127:
            raise HostNotReadyError(
                f"nvidia-smi is not installed on {self.label}: install the NVIDIA driver and Container Toolkit, "
                "or set COSMOS_DOCKER_GPUS=none on a host without GPUs (testing only)."
            )
        usable = len(found) if gpus == "all" else min(len(found), len(gpus))
        if usable < needed:
            detail = (out or err).strip().splitlines()[:1]
            raise HostNotReadyError(
                f"{self.label} has {usable} usable GPU(s) (nvidia-smi -L: {detail[0] if detail else 'no output'}; "
                f"COSMOS_DOCKER_GPUS={self.docker_gpus}) but the run needs {needed}. Fix: set NUM_GPU / num_gpus to "
                f"at most {usable} (1, 2, 4, 8 or 16), or use an instance with more GPUs."
            )

    def _check_checkpoints(self, job: InferenceJob, facts: HostFacts) -> None:
        upsample = job.invocation.extra.get("upsample_prompt") is True
        wanted = [posixpath.join(facts.checkpoint_dir, rel) for rel in required_checkpoints(job.spec, upsample)]
        script = 'for p do [ -e "$p" ] || printf "%s\\n" "$p"; done'
        code, out, err = self._exec(["sh", "-c", script, "sh", *wanted])
        if code != 0:
            raise HostNotReadyError(f"could not check checkpoints on {self.label}: {err.strip()}")
        missing = out.splitlines()
        if missing:
            raise HostNotReadyError(
                f"{len(missing)} checkpoint file(s) this spec needs are missing on {self.label} under "
                f"{facts.checkpoint_dir}:\n  " + "\n  ".join(missing) + "\nFix: download them in REMOTE_DIR with "
                "a Hugging Face token that accepted the models' terms (HF_TOKEN=... python scripts/"
                "download_checkpoints.py --output_dir checkpoints/); that script can exit 0 after failing, so "
                "check the files, or set CHECKPOINT_DIR_REMOTE."
            )

    def _check_disk(self, facts: HostFacts) -> None:
        code, out, err = self._exec(["df", "-Pk", "--", facts.remote_dir])
        lines = out.strip().splitlines()
        if code != 0 or len(lines) < 2:
            raise HostNotReadyError(f"df of {facts.remote_dir} failed on {self.label}: {err.strip()}")
        free_gb = int(lines[-1].split()[3]) * 1024 / 1e9
        if free_gb < self.min_free_gb:
            raise HostNotReadyError(
                f"only {free_gb:.1f} GB free on {self.label} under {facts.remote_dir}; outputs need at least "
                f"{self.min_free_gb:g} GB (COSMOS_MIN_FREE_GB). Fix: delete old runs under outputs/ or unused images "
                "(docker image prune)."
            )

    # ------------------------------------------------------------------ files

    def upload(self, files: list[StagedFile], log: LogLine) -> TransferStats:
        facts = self.host_facts()
        items = [(item.local, remote_child(facts.remote_dir, item.remote)) for item in files]
        progress = progress_logger(log, "upload", [item.local.stat().st_size for item in files])

        def send() -> TransferReport:
            sftp = self._ssh().open_sftp()
            try:
                return upload_files(sftp, items, progress)
            finally:
                sftp.close()

        report: TransferReport = self._with_reconnect("upload", send, log)  # resumes from the .part files
        log(f"{TAG} upload: {report.files_sent} file(s) sent ({report.bytes_sent} bytes), "
            f"{report.files_skipped} unchanged (same size and sha256) in {report.seconds:.1f}s")
        return _stats(report)

    def download(self, remote_dir: str, local_dir: Path, log: LogLine) -> TransferStats:
        source = remote_child(self.host_facts().remote_dir, remote_dir)

        def fetch() -> TransferReport:
            sftp = self._ssh().open_sftp()
            try:
                sizes = [size for _, size in list_remote_files(sftp, source)]  # download_tree's order
            finally:
                sftp.close()
            return download_tree(self._ssh(), source, local_dir, progress_logger(log, "download", sizes))

        report: TransferReport = self._with_reconnect("download", fetch, log)
        log(f"{TAG} download: {report.files_sent} file(s), {report.bytes_sent} bytes from {source} into {local_dir} "
            f"in {report.seconds:.1f}s")
        return _stats(report)

    # ------------------------------------------------------------------ the run

    def _secret_values(self) -> dict[str, str]:
        token = self.hf_token.get_value() if isinstance(self.hf_token, dg.EnvVar) else self.hf_token
        return {"HF_TOKEN": token} if token else {}

    def docker_settings(self, job: InferenceJob) -> DockerRunSettings:
        facts = self.host_facts()
        labels = {
            f"{LABEL_PREFIX}.prompt": job.prompt,
            f"{LABEL_PREFIX}.stage": job.stage,
            f"{LABEL_PREFIX}.run-id": job.run_id,
            f"{LABEL_PREFIX}.dagster-run-id": job.dagster_run_id or "",
        }
        gpus = parse_gpus(self.docker_gpus)
        return DockerRunSettings(
            image=self.docker_image,
            container_name=container_name_for(job.run_id, job.prompt, job.stage),
            remote_dir=facts.remote_dir,
            checkpoint_dir_host=facts.checkpoint_dir,
            uid=facts.uid,
            gid=facts.gid,
            gpus=gpus,
            ipc="host",
            env={"PYTHONUNBUFFERED": "1", **self.container_env, **self._secret_values()},
            labels=labels,
            detach=True,
        )

    def command_for(self, job: InferenceJob) -> list[str]:
        return docker_run_argv(self.docker_settings(job), transfer_argv(job.invocation))

    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        settings = self.docker_settings(job)
        command = docker_run_argv(settings, transfer_argv(job.invocation))
        name = settings.container_name
        started = datetime.now(timezone.utc)
        follower = LogFollower(log, deque(maxlen=LOG_TAIL_LINES))
        attached = False
        try:
            self._refuse_other_container(job, name)
            attached = self._with_reconnect("starting the container", lambda: self._start(settings, command, log), log)
            exit_code = self._follow_until_exit(name, follower, log)
        except HostNotReadyError:
            raise  # refused before any container was started
        except HostLinkLostError as error:
            # The container is detached and may still be running: never kill what we cannot see.
            raise HostLinkLostError(
                f"{error}. Container {name} may still be running on the host: `cosmos-assets ssh`, then "
                f"`docker logs -f {name}`; a run of this prompt is refused while it runs."
            ) from error
        except BaseException:
            self._stop_container(name, log)  # cancelled or failed while following: stop the GPU job
            raise
        self._with_reconnect("removing the container", lambda: self._remove(name), log)
        return RunOutcome(
            exit_code=exit_code,
            command=command,
            container=self._container_record(settings, attached),
            environment=redacted({"PYTHONPATH": CONTAINER_ROOT, **settings.env}),
            started_at=started,
            finished_at=datetime.now(timezone.utc),
            log_tail=list(follower.tail),
            guardrail_blocked=follower.guardrail,
        )

    def _container_record(self, settings: DockerRunSettings, attached: bool) -> dict[str, Any]:
        facts = self.host_facts()
        return {
            "runtime": "docker",
            "host": self.label,
            "name": settings.container_name,
            "image": settings.image,
            "gpus": self.docker_gpus,
            "ipc": settings.ipc,
            "mounts": {settings.remote_dir: CONTAINER_ROOT, settings.checkpoint_dir_host: CONTAINER_CHECKPOINTS},
            "workdir": settings.workdir,
            "user": f"{settings.uid}:{settings.gid}",
            "user_source": facts.user_source,
            "labels": settings.labels,
            "attached_to_existing": attached,
        }

    def _refuse_other_container(self, job: InferenceJob, name: str) -> None:
        """One GPU job per prompt and stage: a still-running container of an earlier run blocks a new one."""
        code, out, err = self._with_reconnect("listing containers", lambda: self._exec([
            "docker", "ps", "--format", "{{.Names}}",
            "--filter", f"label={LABEL_PREFIX}.prompt={job.prompt}",
            "--filter", f"label={LABEL_PREFIX}.stage={job.stage}",
        ]), log.info)  # fmt: skip
        if code != 0:
            raise HostNotReadyError(
                f"`docker ps` failed on {self.label} ({err.strip() or f'exit {code}'}), so it cannot be checked that no "
                f"earlier {job.stage} of {job.prompt} is still running; fix docker on the host and run again."
            )
        others = [n for n in out.split() if n != name]
        if others:
            raise HostNotReadyError(
                f"container {others[0]} (an earlier run of {job.stage} for {job.prompt}) is still running on "
                f"{self.label}; wait for it or stop it (`cosmos-assets ssh`, then `docker rm -f {others[0]}`)."
            )

    def _state(self, name: str) -> ContainerState | None:
        code, out, _ = self._exec(["docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name])
        if code != 0:
            return None
        status, exit_code = out.split()
        return ContainerState(status=status, exit_code=int(exit_code))

    def _start(self, settings: DockerRunSettings, command: list[str], log: LogLine) -> bool:
        """Start the container detached; if one of that name exists (a retry of this run), attach. True if attached."""
        name = settings.container_name
        if self._state(name) is not None:
            log(f"{TAG} container {name} already exists (an earlier attempt of this run): attaching to it, "
                "not starting another")
            return True
        secrets = secret_env(settings)
        names = sorted(secrets)
        if any("\n" in secrets[n] for n in names):
            raise HostNotReadyError(f"secret {names[0]} holds a line break; remove it")
        argv = _secrets_from_stdin(names, command) if names else command
        code, out, err = self._exec(argv, stdin_lines=[secrets[n] for n in names])
        if code != 0:
            if self._state(name) is not None:  # lost a race with an earlier attempt: attach to it
                return True
            hint = ""
            if "gpu" in err.lower():
                hint = (" Fix: install the NVIDIA Container Toolkit (nvidia-ctk runtime configure --runtime=docker; "
                        "restart docker), or COSMOS_DOCKER_GPUS=none on a test host without GPUs.")
            raise HostNotReadyError(f"docker run failed on {self.label} (exit {code}): {err.strip()[-600:]}{hint}")
        log(f"{TAG} started container {name} ({out.strip()[:12]}), detached: it keeps running if the SSH link drops")
        return False

    def _follow_until_exit(self, name: str, follower: LogFollower, log: LogLine) -> int:
        """Stream the container's log until it exits, re-attaching after link drops; its exit code."""
        failures = 0
        while True:
            delivered = follower.delivered
            try:
                since = follower.since()
                argv = ["docker", "logs", "--follow", "--timestamps", *(["--since", since] if since else []), name]
                self._stream(argv, follower.feed)
                state = self._state(name)
                if state is None:
                    raise RuntimeError(f"container {name} disappeared from {self.label} (removed by someone else?)")
                if state.status in ("exited", "dead"):
                    return state.exit_code
                follower.resume()  # `docker logs` ended early while the container runs: follow again
                time.sleep(1.0)
            except (_LinkDropped, HostUnreachableError) as error:
                if follower.delivered > delivered:
                    failures = 0  # the link carried lines since the last drop: a new incident
                failures += 1
                if failures > self.reconnect_attempts:
                    raise HostLinkLostError(
                        f"lost the SSH link to {self.label} while following {name} and {self.reconnect_attempts} "
                        f"reconnects failed ({error})"
                    ) from error
                if self._wait_and_reconnect(failures, f"the run of {name}", error, log):
                    log(f"{TAG} re-attaching to {name}'s log from where it stopped")
                follower.resume()

    def _remove(self, name: str) -> bool:
        """docker rm --force; False when there was no such container."""
        code, _, err = self._exec(["docker", "rm", "--force", name])
        if code != 0 and "No such container" not in err:
            raise RuntimeError(f"docker rm {name} failed on {self.label}: {err.strip()}")
        return code == 0

    def _stop_container(self, name: str, log: LogLine) -> None:
        """Best effort (we are already failing): stop and remove the container, reconnecting once if needed."""
        for attempt in (1, 2):
            try:
                if attempt == 2:
                    self._reconnect()
                if self._remove(name):
                    log(f"{TAG} stopped and removed container {name}")
                return
            except BaseException as error:  # noqa: BLE001 - the original error is what the caller raises
                last = error
        log(f"{TAG} could not stop container {name} ({last}); stop it by hand: cosmos-assets ssh, "
            f"then docker rm -f {name}")
