"""A run on an SSH host through the host's resident model service, and the choice between that and a one-shot run.

The choice (:func:`serve_choice`): the model must have a serving app (its backend sets ``Invocation.served``) and the
checkout must hold it; then the host's ``serve`` setting decides: ``never``, ``always``, or ``auto`` (the default),
which serves the runs the app can finish within its own request limit (models/cosmos3_serve.py) and runs the others
one-shot. Either way the run log and the record say which, and why.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from cosmos_assets.machines.docker import DockerCli
from cosmos_assets.machines.docker_logs import LogFollower
from cosmos_assets.machines.docker_run import DockerRunSettings
from cosmos_assets.machines.host_facts import HostFacts, remote_child
from cosmos_assets.machines.job import InferenceJob, LogLine, RunOutcome, Serving
from cosmos_assets.machines.model_service import (
    TAG,
    WATCHDOG_LOCAL,
    WATCHDOG_REMOTE,
    ModelService,
    ServiceKnobs,
    list_services,
    serve_request,
)
from cosmos_assets.machines.sftp_transfer import upload_files
from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.redaction import redacted


class ServiceHost(Protocol):
    """What a served run needs of its host (``SshHost`` is one)."""

    link: SshLink
    docker: DockerCli
    serving_job: InferenceJob | None

    @property
    def settings(self) -> Any: ...

    @property
    def label(self) -> str: ...

    def facts(self) -> HostFacts: ...

    def docker_settings(self, job: InferenceJob) -> DockerRunSettings: ...

    def stop_service(self, log: LogLine, why: str = ...) -> list[str]: ...

    def image_id(self) -> str | None: ...


def run(
    host: ServiceHost, job: InferenceJob, log: LogLine, one_shot: Callable[[InferenceJob, LogLine], RunOutcome]
) -> RunOutcome:
    """``job`` through the host's model service when :func:`serve_choice` says so, else ``one_shot`` (after stopping a
    service that would hold the GPU it needs); a Cosmos 3 run says which, and why, in its log and its outcome."""
    served, why = serve_choice(host, job)
    if served:
        host.serving_job = job
        try:
            return run_served(host, job, log, why)
        finally:
            host.serving_job = None
    if job.invocation.needs_gpu:  # a resident service holds GPU memory this container needs
        try:
            host.stop_service(log, f"a one-shot {job.invocation.model} run needs the GPU")
        except Exception as error:  # noqa: BLE001 - the container's own start says what is wrong with docker
            log(f"{TAG} could not look for a model service on {host.label} ({error}); going on")
    if why:
        log(f"{TAG} {why}")
    outcome = one_shot(job, log)
    return outcome.model_copy(update={"serving": Serving(mode="one-shot", reason=why)}) if why else outcome


def loaded_for(host: ServiceHost, job: InferenceJob) -> bool:
    """Whether ``job`` is served and the service is loaded now (its preflight has little left to check)."""
    return serve_choice(host, job)[0] and model_service(host, job).loaded()


def serve_choice(host: ServiceHost, job: InferenceJob) -> tuple[bool, str]:
    """(served?, why) for ``job`` on ``host``; why is empty for a model that has no serving app at all."""
    call = job.invocation.served
    if call is None or not job.invocation.needs_gpu:
        return False, ""
    mode = host.settings.serve
    if mode == "never":
        return False, "one-shot: serving is off for this host (COSMOS_SERVE=never, or serve: never in the pool file)"
    if not has_file(host, call.entry_point):
        return False, f"one-shot: the checkout on {host.label} has no serving app ({call.entry_point})"
    if mode == "always" and not call.fits:
        return True, f"served (serve: always), although {call.why.removeprefix('one-shot: ')}"
    return call.fits, call.why


_FILES: dict[tuple[str, str], bool] = {}


def has_file(host: ServiceHost, relative: str) -> bool:
    """Whether the host's REMOTE_DIR holds ``relative`` (asked once per host and file in this process)."""
    path = remote_child(host.facts().remote_dir, relative)
    if (host.label, path) not in _FILES:
        _FILES[(host.label, path)] = host.link.exec(["test", "-f", path])[0] == 0
    return _FILES[(host.label, path)]


def services(host: ServiceHost) -> list[tuple[str, str]]:
    """(name, state) of the host's model services (``cosmos-assets service status``)."""
    return list_services(host.link, host.label)


def model_service(host: ServiceHost, job: InferenceJob) -> ModelService:
    assert job.invocation.served is not None
    settings = host.docker_settings(job)
    knobs = ServiceKnobs(
        idle_seconds=host.settings.serve_idle_minutes * 60.0,
        load_timeout_s=host.settings.serve_load_minutes * 60.0,
        request_deadline_s=host.settings.serve_request_seconds,
    )
    # the image's ID, not only its tag: a service of a since-rebuilt image is another service (its runs are new work)
    return ModelService(
        host.link,
        host.docker,
        host.label,
        host.facts().remote_dir,
        settings,
        job.invocation.served.service_argv,
        knobs,
        image_id=host.image_id(),
    )


def run_served(host: ServiceHost, job: InferenceJob, log: LogLine, why: str) -> RunOutcome:
    """``job`` as one request to the host's model service; its sample lands where the one-shot run writes it."""
    assert job.invocation.served is not None
    service = model_service(host, job)
    started = datetime.now(UTC)
    follower = LogFollower(log, deque(maxlen=40), job.invocation.guardrail_marker)
    log(f"{TAG} {why}")
    watchdog = [(WATCHDOG_LOCAL, remote_child(host.facts().remote_dir, WATCHDOG_REMOTE))]
    host.link.with_reconnect("uploading the service watchdog", lambda: upload_files(host.link, watchdog), log)
    service.follow_from_now(follower)
    served = serve_request(service, job.invocation.served.request, follower, log)
    exit_code = 0
    if served.reply.status != 200:
        log(f"{TAG} the serving app refused the request: HTTP {served.reply.status}: {served.reply.detail(1500)}")
        exit_code = 1
    else:
        body = served.reply.json()
        if body.get("status") != "success":
            log(f"{TAG} the request ended with status {body.get('status')!r}: {body.get('message')}")
            exit_code = 1
        else:
            where = service.move_outputs(served.reply, job.output_folder, str(job.invocation.served.request["name"]))
            log(f"{TAG} outputs of the request moved to {where} on {host.label}")
    if served.load_seconds is not None:
        log(f"{TAG} this run waited for the model load: {served.load_seconds:.1f}s")
    serving = Serving(
        mode="served",
        reason=why,
        service_container=service.name,
        service_id=service.container_id(),
        load_seconds=served.load_seconds,
        restarted=served.restarted,
    )
    return RunOutcome(
        exit_code=exit_code,
        command=service.command(),
        container={
            "runtime": "docker",
            "host": host.label,
            "name": service.name,
            "image": service.settings.image,
            "service": True,
            "user": f"{service.settings.uid}:{service.settings.gid}",
            "request": job.invocation.served.request,
        },
        environment=redacted(dict(service.settings.env)),
        started_at=started,
        finished_at=datetime.now(UTC),
        log_tail=list(follower.tail),
        serving=serving,
    )
