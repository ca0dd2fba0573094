"""A host reached over SSH: files by SFTP, the model in docker, live logs, and a run that survives a dropped link.

Everything rides one verified :class:`~cosmos_assets.machines.ssh_link.SshLink`: SFTP for files, the host's own
``docker`` CLI for the container (:class:`~cosmos_assets.machines.docker.DockerCli`), plain commands for the
preflight. A job that needs no GPU (the preview backend, as a dry run of a new host) gets no ``--gpus`` and no
GPU check.

Run design (one container, one output, never a second GPU job): nothing starts while a model container of ours
runs on the host's engine, whoever started it (:mod:`~cosmos_assets.machines.busy_host`: a bounded wait); the
container is detached and named after the run; a retry of the same run attaches to it; after a dropped link the log is followed again without repeating
lines; a cancelled step stops and removes it; a link that stays down leaves it running (never kill what we
cannot see) and says how to look at it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cosmos_assets.machines import busy_host, gpu_usage, model_service, preflight, ssh_served
from cosmos_assets.machines.base import JobState, Machine, MachineState
from cosmos_assets.machines.docker import DockerCli
from cosmos_assets.machines.docker_engine import (
    DockerUnreachableError,
    docker_down,
)
from cosmos_assets.machines.docker_logs import LogFollower
from cosmos_assets.machines.docker_run import (
    CONTAINER_CHECKPOINTS,
    CONTAINER_ROOT,
    LABEL_PREFIX,
    DockerRunSettings,
    container_labels,
    container_name_for,
    docker_run_argv,
    parse_gpus,
)
from cosmos_assets.machines.host_facts import HostFacts, read_host_facts, read_revisions, remote_child
from cosmos_assets.machines.job import (
    HostLinkLostError,
    HostNotReadyError,
    HostUnreachableError,
    InferenceJob,
    LinkDropped,
    LogLine,
    RunOutcome,
    StagedFile,
)
from cosmos_assets.machines.remote_tree import list_remote_files
from cosmos_assets.machines.sftp_download import download_tree
from cosmos_assets.machines.sftp_transfer import upload_files
from cosmos_assets.machines.ssh_host_settings import SshHostSettings
from cosmos_assets.machines.ssh_link import TAG, SshLink
from cosmos_assets.machines.ssh_target import SshTarget
from cosmos_assets.machines.transfer_resume import LandedParts
from cosmos_assets.progress import TransferProgress, TransferStats
from cosmos_assets.redaction import first_line, is_secret_name, redacted

LOG_TAIL_LINES = 40


class SshHost(Machine):
    """The model in docker on a host reached over SSH."""

    def __init__(
        self,
        target: SshTarget,
        settings: SshHostSettings,
        secrets: Mapping[str, str] | None = None,
        *,
        link: SshLink | None = None,
        facts: HostFacts | None = None,
    ) -> None:
        """``secrets``: name -> value for the container (e.g. HF_TOKEN), kept here only and sent through stdin.

        ``facts``: what the host is known to be like (skips asking it; for argv building without a connection).
        """
        for name in secrets or {}:
            if not is_secret_name(name):
                raise ValueError(
                    f"secret {name}: its name does not say it is a secret, so docker would show its value; "
                    "use a name with TOKEN, SECRET, PASSWORD or KEY"
                )
        self._secrets = {name: value for name, value in (secrets or {}).items() if value}
        self.target = target
        self.settings = settings
        self.link = link or SshLink(target, self.label, settings.reconnect_attempts)
        self.docker = DockerCli(self.link)
        self._facts = facts
        self.serving_job: InferenceJob | None = None  # the job a request to the model service runs for now

    def __repr__(self) -> str:
        return f"SshHost({self.label})"

    @property
    def label(self) -> str:
        return self.settings.name or f"ssh@{self.target.host}"

    @property
    def runtime(self) -> str:
        return "docker"

    def openssh_argv(self, command: Sequence[str] = ()) -> list[str]:
        """The OpenSSH client argv reaching this host the way we do (``cosmos-assets ssh``)."""
        return self.target.openssh_argv(command)

    def close(self) -> None:
        self.link.close()

    def describe(self) -> MachineState:
        try:
            facts = self.facts()
            code, out, _ = self.link.exec(["nvidia-smi", "-L"])
            gpus = sum(1 for line in out.splitlines() if line.startswith("GPU ")) if code == 0 else 0
            code, out, _ = self.link.exec(["df", "-Pk", "--", facts.remote_dir])
            lines = out.strip().splitlines()
            free = int(lines[-1].split()[3]) * 1024 / 1e9 if code == 0 and len(lines) >= 2 else None
            try:
                present: bool | None = self.docker.image_present(self.settings.docker_image)
                docker_problem = None
            except DockerUnreachableError as error:  # the host answers, its docker does not: reachable, image unknown
                present, docker_problem = None, f"docker is not answering: {first_line(error)}"
            except HostNotReadyError as error:  # docker answers but cannot say (it refuses the SSH user...)
                present, docker_problem = None, first_line(error)
        except (HostNotReadyError, OSError, RuntimeError) as error:
            return MachineState(reachable=False, problem=first_line(error))
        return MachineState(reachable=True, gpus=gpus, free_gb=free, image_present=present, problem=docker_problem)

    # ------------------------------------------------------------------ an earlier attempt's job (adoption)

    @property
    def image(self) -> str | None:
        return self.settings.docker_image

    def image_id(self) -> str | None:
        """None only when docker says the image is not there (the preflight builds or pulls it; the ID is read after).
        Unknown is never None: an ID left out of the inputs digest would make finished work look new (issue 20)."""
        image = self.settings.docker_image
        try:  # one try, no backoff: a host that does not answer now is another attempt's, or another host's
            return self.docker.image_id(image)
        except HostNotReadyError:  # docker down (DockerUnreachableError), or a failure docker named
            raise
        except Exception as error:
            if not (isinstance(error, TimeoutError) or self.link.lost(error)):
                raise
            raise HostUnreachableError(
                f"the ID of image {image} could not be read on {self.label} "
                f"({first_line(error)}); a later attempt retries"
            ) from error

    def checkpoint_revisions(self, job: InferenceJob) -> dict[str, str]:
        try:
            return read_revisions(self.link, self.facts(), job.invocation.revision_files)
        except Exception:  # noqa: BLE001 - a fact for the record, never a failure of the run
            return {}

    def job_state(self, job: InferenceJob, output_file: str) -> JobState:
        def ask() -> JobState:
            name = container_name_for(job.run_id, job.prompt, job.stage)
            state = self.docker.state(name)
            if state is not None and state.status not in ("exited", "dead"):
                return "running"  # running, created, restarting or paused: attach and wait
            if state is not None and state.exit_code != 0:
                return "failed"
            present = self.link.exec(["test", "-f", remote_child(self.facts().remote_dir, output_file)])[0] == 0
            if state is not None:
                return "exited_ok" if present else "failed"
            return "outputs" if present else "gone"

        return self.link.with_reconnect("looking for an earlier run's container", ask, print)

    def stop(self, job: InferenceJob, log: LogLine) -> bool:
        if self.serving_job is not None and self.serving_job.run_id == job.run_id:
            return ssh_served.model_service(self, job).remove(log, "the run was stopped") or True
        self.docker.stop(container_name_for(job.run_id, job.prompt, job.stage), log)
        return True

    def stop_service(self, log: LogLine, why: str = "asked from the CLI") -> list[str]:
        """Stop this host's model services (``cosmos-assets service stop``, a drained host, a one-shot GPU run)."""
        return model_service.stop_services(self.link, self.label, log, why=why)

    # ------------------------------------------------------------------ host facts and preflight

    def check_reachable(self) -> None:
        """Raise :class:`HostUnreachableError` now unless the host answers: the open link (one round trip), else one
        fresh connection, no backoff. Facts read earlier prove nothing (the host may have gone since)."""
        if not self.link.answers():
            self.link.reconnect()
        self.facts()

    def facts(self) -> HostFacts:
        """Absolute REMOTE_DIR and checkpoint folder, and the uid:gid the container runs as (asked once)."""
        if self._facts is None:
            try:
                self._facts = read_host_facts(
                    self.link, self.settings.remote_dir, self.settings.checkpoint_dir, self.settings.container_user
                )
            except LinkDropped as error:
                raise HostUnreachableError(
                    f"the SSH link to {self.label} dropped while reading host facts ({error})"
                ) from error
        return self._facts

    def preflight(self, job: InferenceJob, log: LogLine) -> None:
        self.link.with_reconnect("preflight", lambda: self._preflight(job, log), log)

    def _preflight(self, job: InferenceJob, log: LogLine) -> None:
        started = time.monotonic()
        facts = self.facts()
        log(
            f"{TAG} connected to {self.label}; REMOTE_DIR {facts.remote_dir}; checkpoints {facts.checkpoint_dir}; "
            f"container user {facts.uid}:{facts.gid} ({facts.user_source})"
        )
        preflight.check_not_the_project(self.link, facts, job)  # before anything is staged there
        if ssh_served.loaded_for(self, job):  # its image, GPUs and checkpoints are in use: only the disk is left
            preflight.check_disk(self.link, facts, self.settings.min_free_gb)
            return log(f"{TAG} preflight ok in {time.monotonic() - started:.1f}s: the model service is loaded")
        preflight.check_checkout(self.link, facts, job)
        try:
            preflight.check_docker(self.link)
        except HostNotReadyError as error:
            if docker_down(str(error)):
                raise DockerUnreachableError(
                    f"{error} A later attempt retries: the daemon may be restarting."
                ) from error
            raise
        preflight.ensure_image(self.docker, facts, self.settings.docker_image, log)
        preflight.check_gpus(self.link, job, self.settings.docker_gpus, log)
        preflight.check_checkpoints(self.link, facts, job)
        preflight.check_gpu_memory(self.link, job, self.settings.docker_gpus, log)
        preflight.check_caches(self.link, facts, job, log)
        preflight.check_disk(self.link, facts, self.settings.min_free_gb)
        needs = (
            f"{job.invocation.num_gpus} GPU(s), checkpoints present" if job.invocation.needs_gpu else "no GPU needed"
        )
        log(f"{TAG} preflight ok in {time.monotonic() - started:.1f}s: image {self.settings.docker_image}, {needs}")

    # ------------------------------------------------------------------ files

    def upload(self, files: list[StagedFile], log: LogLine) -> TransferStats:
        facts = self.facts()
        items = [(item.local, remote_child(facts.remote_dir, item.remote)) for item in files]
        progress = TransferProgress.for_files("upload", [item.local.stat().st_size for item in files], log)
        landed = LandedParts()  # a retry after a dropped link sends only what never landed in the .part files
        stats = self.link.with_reconnect(
            "upload", lambda: upload_files(self.link, items, progress.callback, landed), log
        )
        progress.finish()
        log(
            f"{TAG} upload: {stats.files_sent} file(s) sent ({stats.bytes_sent} bytes), "
            f"{stats.files_skipped} unchanged (same size and sha256) in {stats.seconds:.1f}s"
        )
        return stats

    def download(self, remote_dir: str, local_dir: Path, log: LogLine) -> TransferStats:
        source = remote_child(self.facts().remote_dir, remote_dir)

        def fetch() -> TransferStats:
            sftp = self.link.open_sftp()
            try:
                files = list_remote_files(sftp, source)
            finally:
                sftp.close()
            progress = TransferProgress.for_files("download", [size for _, size in files], log)
            stats = download_tree(self.link, source, local_dir, progress.callback, files=files)
            progress.finish()
            return stats

        stats = self.link.with_reconnect("download", fetch, log)
        log(
            f"{TAG} download: {stats.files_sent} file(s), {stats.bytes_sent} bytes from {source} into {local_dir} "
            f"in {stats.seconds:.1f}s"
        )
        return stats

    # ------------------------------------------------------------------ the run

    def docker_settings(self, job: InferenceJob) -> DockerRunSettings:
        facts = self.facts()
        return DockerRunSettings(
            image=self.settings.docker_image,
            container_name=container_name_for(job.run_id, job.prompt, job.stage),
            remote_dir=facts.remote_dir,
            checkpoint_dir_host=facts.checkpoint_dir,
            uid=facts.uid,
            gid=facts.gid,
            gpus=parse_gpus(self.settings.docker_gpus) if job.invocation.needs_gpu else None,
            ipc="host",
            env={"PYTHONUNBUFFERED": "1", **job.invocation.env, **self.settings.container_env, **self._secrets},
            labels={
                **container_labels(job.prompt, job.stage, job.run_id, job.dagster_run_id),
                f"{LABEL_PREFIX}.host": self.label,  # which pool host started it (one engine may serve several)
                busy_host.GPU_LABEL: busy_host.gpus_held(
                    job.invocation.needs_gpu, parse_gpus(self.settings.docker_gpus)
                ),
            },
            detach=True,
            cache_mounts=preflight.cache_mounts(facts, job),
        )

    def command_for(self, job: InferenceJob) -> list[str]:
        if ssh_served.serve_choice(self, job)[0]:
            return ssh_served.model_service(self, job).command()
        return docker_run_argv(self.docker_settings(job), job.invocation.argv)

    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        return ssh_served.run(self, job, log, self._run_one_shot)  # the host's model service, or a container

    def _run_one_shot(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        settings = self.docker_settings(job)
        command = docker_run_argv(settings, job.invocation.argv)
        name = settings.container_name
        started = datetime.now(UTC)
        follower = LogFollower(log, deque(maxlen=LOG_TAIL_LINES), job.invocation.guardrail_marker)
        attached = False
        try:
            if self.link.with_reconnect("looking for the container", lambda: self.docker.state(name), log) is None:
                # about to start a container: one model on the engine's GPUs at a time, whoever started the other
                busy_host.wait_until_free(
                    self.link,
                    name,
                    log,
                    self.settings.busy_wait_minutes * 60,
                    gpus=settings.labels[busy_host.GPU_LABEL],
                    prompt=job.prompt,
                    stage=job.stage,
                )
            attached = self.link.with_reconnect(
                "starting the container", lambda: self.docker.start(settings, command, log), log
            )
            exit_code = self.docker.follow_until_exit(name, follower, log)
        except HostNotReadyError:
            raise  # refused before any container was started
        except HostLinkLostError as error:
            # The container is detached and may still be running: never kill what we cannot see.
            raise HostLinkLostError(
                f"{error}. Container {name} may still be running on the host: `cosmos-assets ssh`, then "
                f"`docker logs -f {name}`; it is left to finish, and the next attempt of this prompt attaches to it "
                "and collects its outputs."
            ) from error
        except BaseException:
            self.docker.stop(name, log)  # cancelled or failed while following: stop the GPU job
            raise
        oom_killed, kernel_oom = self.docker.oom_killed(name) if exit_code != 0 else (False, False)  # before removal
        self.link.with_reconnect("removing the container", lambda: self.docker.remove(name), log)
        return RunOutcome(
            exit_code=exit_code,
            command=command,
            container={
                **self._container_record(settings, attached),
                "oom_killed": oom_killed,
                "kernel_oom_kill": kernel_oom,
            },
            environment=redacted({"PYTHONPATH": CONTAINER_ROOT, **settings.env}),
            started_at=started,
            finished_at=datetime.now(UTC),
            log_tail=list(follower.tail),
            guardrail_blocked=follower.guardrail,
        )

    def gpu_reader(self) -> Callable[[], str | None] | None:
        def read() -> str | None:
            if not self.link.answers():  # never reconnect from the sampler's thread: the run's own thread does
                return None
            code, out, _ = self.link.exec(list(gpu_usage.QUERY), timeout=gpu_usage.QUERY_TIMEOUT_SECONDS)
            return out if code == 0 else None

        return read

    def _container_record(self, settings: DockerRunSettings, attached: bool) -> dict[str, Any]:
        return {
            "runtime": "docker",
            "host": self.label,
            "name": settings.container_name,
            "image": settings.image,
            "gpus": self.settings.docker_gpus if settings.gpus is not None else "none",
            "ipc": settings.ipc,
            "mounts": {
                settings.remote_dir: CONTAINER_ROOT,
                settings.checkpoint_dir_host: CONTAINER_CHECKPOINTS,
                **settings.cache_mounts,
            },
            "workdir": settings.workdir,
            "user": f"{settings.uid}:{settings.gid}",
            "user_source": self.facts().user_source,
            "labels": settings.labels,
            "attached_to_existing": attached,
        }
