"""One model on a host's GPUs at a time (issue 19): the engine is asked for every running container of ours, whoever
started it (no prompt or pool-host filter), and a new run waits for them, bounded, naming the container and its run.
Over a scripted link with a clock the test moves by hand: each case (free, freed while waiting, still busy at the
bound, no wait at all) is forced."""

from __future__ import annotations

import logging

import pytest

from cosmos_assets.machines import busy_host
from cosmos_assets.machines.docker_engine import DockerUnreachableError
from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.machines.ssh_link import TAG, LinkDropped
from tests.machines.test_docker import ScriptedLink

OLD = "cosmos-generate-p1-20261207-0a1b2c3d4e\t20261207_101010_0a1b2c3d\tp1\tgenerate\tdagster-run-1\tgpu-a\t0,1"
BATCH = "cosmos-generate-a-b-c-20261207-99\t20261207_101010_0a1b2c3d_batch0\ta+b+c\tgenerate\t\tgpu-b\tall"
PREVIEW = "cosmos-generate-pv-20261207-77\t20261207_111111_77777777\tpv\tgenerate\t\tgpu-a\tnone"
OTHER_GPU = "cosmos-generate-p5-20261207-66\t20261207_121212_66666666\tp5\tgenerate\t\tgpu-c\t1"
SAME_PROMPT = "cosmos-generate-x-p2-y-20261207-44\t20261207_131313_44444444_batch0\tx+p2+y\tgenerate\t\tgpu-c\tnone"
UPSCALE = "cosmos-upscale-p2-20261207-33\t20261207_141414_33333333_upscale\tp2\tupscale\t\tgpu-c\tnone"
UNLABELLED = "cosmos-generate-p9-20251010-55\t20251010_101010_55555555\tp9\tgenerate\t\t\t"  # before the gpus label
MINE = "cosmos-generate-p2-new"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def ps(*lines: str) -> tuple[int, str, str]:
    return 0, "".join(line + "\n" for line in lines), ""


def wait(link: ScriptedLink, log: list[str], wait_seconds: float, clock: Clock) -> None:
    busy_host.wait_until_free(
        link,
        MINE,
        log.append,
        wait_seconds,
        gpus="0",
        prompt="p2",
        stage="generate",
        clock=clock,
        sleep=clock.sleep,
        poll_seconds=5,
    )


def test_any_running_gpu_container_of_ours_is_waited_for_whoever_started_it_then_the_run_starts() -> None:
    link, log, clock = (
        ScriptedLink([ps(OLD, PREVIEW), ps(OLD), ps(BATCH), ps(PREVIEW, OTHER_GPU, UPSCALE, MINE)]),
        [],
        Clock(),
    )
    wait(link, log, 3600, clock)
    argv = link.commands[0][0]
    assert argv[:4] == ["docker", "ps", "--filter", "label=cosmos-assets.run-id"]  # every one of ours: no prompt,
    assert not any("prompt=" in a or "host=" in a for a in argv)  # no pool-host filter (one engine, one GPU host)
    assert log[0] == (
        f"{TAG} waiting for container {OLD.split()[0]} (generate of p1, run 20261207_101010_0a1b2c3d, "
        "Dagster run dagster-run-1, started for gpu-a) to end on ssh@gpu1 before starting "
        f"{MINE}: one model on a host's GPUs at a time, whoever started it (waited 0s of at most 3600s)"
    )
    assert (
        "container cosmos-generate-a-b-c-20261207-99 (generate of a+b+c, run 20261207_101010_0a1b2c3d_batch0, "
        "started for gpu-b)" in log[1]
    )  # the next one is named as soon as it is the one waited for
    # no GPU, other GPUs, another stage of its prompt, its own name: none of them holds what it needs
    assert log[2] == f"{TAG} ssh@gpu1 is free now (waited 15s): starting {MINE}"
    assert clock.sleeps == [5, 5, 5] and len(log) == 3


def test_a_run_still_waiting_is_said_again_each_minute_and_refused_at_the_bound_naming_the_container() -> None:
    link, log, clock = ScriptedLink([ps(UNLABELLED)] * 40), [], Clock()
    with pytest.raises(HostNotReadyError) as refused:
        wait(link, log, 150, clock)
    message = str(refused.value)
    assert message.startswith(
        f"container {UNLABELLED.split()[0]} (generate of p9, run 20251010_101010_55555555) is "
        "still running on ssh@gpu1's docker engine after waiting 150s"
    )  # unlabelled: a GPU one
    assert "docker rm -f cosmos-generate-p9-20251010-55" in message and "COSMOS_HOST_BUSY_WAIT_MINUTES" in message
    assert [line.split("(waited ")[1] for line in log] == [
        "0s of at most 150s)",
        "60s of at most 150s)",
        "120s of at most 150s)",
    ]
    assert sum(clock.sleeps) == 150 and max(clock.sleeps) == 5


def test_no_wait_refuses_at_once_and_a_free_engine_is_one_question() -> None:
    link, log, clock = ScriptedLink([ps(OLD)]), [], Clock()
    with pytest.raises(HostNotReadyError, match="is still running on ssh@gpu1's docker engine after waiting 0s"):
        wait(link, log, 0, clock)
    assert clock.sleeps == []
    link, log = ScriptedLink([ps()]), []
    wait(link, log, 3600, clock)
    assert log == [] and len(link.commands) == 1


def test_listing_reconnects_into_the_run_log_and_a_stopped_engine_is_retryable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    link, log = ScriptedLink([LinkDropped("the host stopped answering"), ps()]), []
    wait(link, log, 60, Clock())
    assert log[0].startswith(f"{TAG} SSH link to ssh@gpu1 lost during listing containers")
    assert log[1] == f"{TAG} reconnected to ssh@gpu1" and link.reconnects == 1 and "lost during" not in caplog.text
    down = (1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
    with pytest.raises(DockerUnreachableError, match="docker is not reachable on ssh@gpu1"):
        wait(ScriptedLink([down]), [], 60, Clock())
    with pytest.raises(HostNotReadyError, match="`docker ps` failed on ssh@gpu1 .permission denied"):
        wait(ScriptedLink([(1, "", "permission denied")]), [], 60, Clock())


def test_the_same_prompt_is_never_run_twice_at_once_on_one_engine_whatever_gpus_each_holds() -> None:
    """The gap closed: two pool entries on one engine, each with its own GPUs, both running p2 (here, a batch holding
    p2, on no GPU); the host label told them apart, so the second started."""
    link, log, clock = ScriptedLink([ps(SAME_PROMPT, OTHER_GPU), ps(OTHER_GPU)]), [], Clock()
    wait(link, log, 60, clock)
    assert "waiting for container cosmos-generate-x-p2-y-20261207-44 (generate of x+p2+y" in log[0] and len(log) == 2


def test_gpu_labels_say_which_devices_a_container_holds() -> None:
    assert busy_host.gpus_held(True, "all") == "all" and busy_host.gpus_held(True, ("0", "1")) == "0,1"
    assert busy_host.gpus_held(True, None) == "all"  # COSMOS_DOCKER_GPUS=none on a test host: the model wants them
    assert busy_host.gpus_held(False, "all") == "none"  # the preview's dry run holds none
    held = busy_host.OurContainer("c", "r", "p", "generate", "", "h", "0,1")
    assert (
        held.holds_any_of("1,2")
        and held.holds_any_of("all")
        and not held.holds_any_of("2")
        and not held.holds_any_of("none")
    )
