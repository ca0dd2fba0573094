"""The container lifecycle over a scripted link (reconnect messages reach the run's log; secrets through stdin;
log lines once across a re-attach), and secrets kept out of reprs. The argv tests are in tests/test_command.py."""

from __future__ import annotations

import re
import shlex
from collections import deque
from collections.abc import Callable, Sequence

import pytest
from pydantic import ValidationError

from cosmos_assets.machines import docker_engine
from cosmos_assets.machines.docker import DockerCli
from cosmos_assets.machines.docker_engine import ContainerRemovedError, DockerUnreachableError, DockerWentAwayError
from cosmos_assets.machines.docker_logs import LogFollower
from cosmos_assets.machines.docker_run import (
    DockerRunSettings,
    container_name_for,
    docker_run_argv,
    secret_env,
    secrets_from_stdin,
)
from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.machines.ssh_link import TAG, LinkDropped, SshLink
from cosmos_assets.machines.ssh_target import SshTarget
from cosmos_assets.redaction import shell_join

INNER = ["python3", "cosmos_transfer1/diffusion/inference/transfer.py", "--controlnet_specs", "inputs/prompts/p.json",
         "--video_save_folder", "outputs/p/run1", "--num_gpus", "1"]  # fmt: skip


def settings(**overrides: object) -> DockerRunSettings:
    fields: dict[str, object] = {
        "image": "nvcr.io/me/cosmos-transfer1:latest",
        "container_name": "cosmos-generate-p-1",
        "remote_dir": "/home/ubuntu/NatsFS/cosmos-transfer1",
        "checkpoint_dir_host": "/home/ubuntu/NatsFS/checkpoints",
        "uid": 1000,
        "gid": 1001,
    }
    fields.update(overrides)
    return DockerRunSettings(**fields)


# --------------------------------------------------------------------------- secrets (the argv tests are in tests/test_command.py)


def test_secret_values_stay_out_of_reprs_and_validation_errors() -> None:
    env = {"HF_TOKEN": "hf_supersecret", "LOG_LEVEL": "info"}
    s = settings(env=env)
    assert "hf_supersecret" not in repr(s) and "hf_supersecret" not in shell_join(docker_run_argv(s, INNER))
    with pytest.raises(ValidationError) as bad:
        settings(env={**env, "BAD-NAME": "x"})
    assert "hf_supersecret" not in str(bad.value)


# --------------------------------------------------------------------------- lifecycle over a scripted link

Result = tuple[int, str, str]


class ScriptedLink(SshLink):
    """An SshLink whose commands answer from a script (a result, or an error to raise); no network."""

    def __init__(
        self, execs: Sequence[Result | BaseException], streams: Sequence[Callable[[Callable[[str], None]], int]] = ()
    ) -> None:
        super().__init__(SshTarget(host="gpu1"), "ssh@gpu1", reconnect_attempts=3, sleep=self._slept)
        self.execs, self.streams = list(execs), list(streams)
        self.commands: list[tuple[list[str], list[str]]] = []
        self.stream_argvs: list[list[str]] = []
        self.sleeps: list[float] = []
        self.reconnects = 0

    def _slept(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def exec(self, argv: Sequence[str], stdin_lines: Sequence[str] | None = None, timeout: float = 0) -> Result:
        self.commands.append((list(argv), list(stdin_lines or ())))
        result = self.execs.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None]) -> int:
        self.stream_argvs.append(list(argv))
        return self.streams.pop(0)(on_line)

    def reconnect(self) -> None:
        self.reconnects += 1


def test_start_sends_secrets_through_stdin_only() -> None:
    link = ScriptedLink([(1, "", "No such object"), (0, "0123456789abcdef\n", "")])
    s = settings(env={"HF_TOKEN": "hf_value", "MODE": "fast"})
    command = docker_run_argv(s, INNER)
    lines: list[str] = []
    assert DockerCli(link).start(s, command, lines.append) is False
    argv, stdin = link.commands[-1]
    assert argv == secrets_from_stdin(["HF_TOKEN"], command) and stdin == ["hf_value"]
    assert "hf_value" not in shlex.join(argv)
    assert lines == [
        f"{TAG} started container cosmos-generate-p-1 (0123456789ab), detached: it keeps running if the SSH link drops"
    ]


def test_a_secret_with_a_line_break_is_refused_by_name() -> None:
    link = ScriptedLink([(1, "", "No such object")])
    s = settings(env={"A_TOKEN": "fine", "HF_TOKEN": "two\nlines"})
    with pytest.raises(HostNotReadyError, match="secret HF_TOKEN holds a line break"):
        DockerCli(link).start(s, docker_run_argv(s, INNER), print)


def test_following_the_log_across_a_dropped_link_delivers_each_line_once() -> None:
    t = "2025-01-02T03:04:05.00000000{}Z {}"

    def first(on_line: Callable[[str], None]) -> int:
        for i, text in enumerate(["loading", "step 1/2"]):
            on_line(t.format(i, text))
        raise LinkDropped("the SSH link closed under a running command")

    def second(on_line: Callable[[str], None]) -> int:
        for i, text in ((1, "step 1/2"), (2, "step 2/2"), (3, "GUARDRAIL BLOCKED: x")):
            on_line(t.format(i, text))
        return 0

    link = ScriptedLink([(0, "exited 1\n", "")], streams=[first, second])
    lines: list[str] = []
    follower = LogFollower(lines.append, deque(maxlen=10), guardrail_marker="GUARDRAIL BLOCKED")
    assert DockerCli(link).follow_until_exit("c1", follower, lines.append) == 1
    delivered = [line for line in lines if not line.startswith(TAG)]
    assert delivered == ["loading", "step 1/2", "step 2/2", "GUARDRAIL BLOCKED: x"] and follower.guardrail
    assert any("re-attaching to c1's log" in line for line in lines)
    assert link.stream_argvs[1][-3:] == ["--since", "1735787045.000000001", "c1"]


DOWN = (1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n")
GONE = (1, "", "Error: No such object: c1\n")


def _ends(on_line: Callable[[str], None]) -> int:
    """`docker logs --follow` ending (the container exited, or the engine closed the stream)."""
    on_line("2025-01-02T03:04:05.000000001Z step 1/2")
    return 1


@pytest.fixture
def no_engine_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_engine, "ENGINE_POLL_S", 0.0)
    monkeypatch.setattr(docker_engine.time, "sleep", lambda _s: None)


def _follow(link: ScriptedLink, lines: list[str]) -> int:
    return DockerCli(link).follow_until_exit("c1", LogFollower(lines.append, deque(maxlen=10)), lines.append)


def test_an_engine_restart_that_ends_the_container_is_docker_unreachable_naming_it(no_engine_wait: None) -> None:
    link = ScriptedLink([DOWN, DOWN, (0, "exited 137\n", "")], streams=[_ends])
    lines: list[str] = []
    with pytest.raises(DockerWentAwayError) as caught:
        _follow(link, lines)
    message = str(caught.value)
    assert "\n" not in message and "docker on ssh@gpu1 went away while container c1 ran" in message
    assert "exit code 137" in message and "a later attempt runs it again" in message
    assert caught.value.cause == "docker_unreachable"
    assert any("stopped answering while c1 ran" in line for line in lines)
    assert any("answers again; container c1: exited, exit code 137" in line for line in lines)


def test_a_container_that_outlives_the_engine_restart_is_followed_to_its_own_end(no_engine_wait: None) -> None:
    link = ScriptedLink([DOWN, (0, "running 0\n", ""), (0, "exited 0\n", "")], streams=[_ends, _ends])
    lines: list[str] = []
    assert _follow(link, lines) == 0  # live-restore kept it running: its own exit code, no error
    assert len(link.stream_argvs) == 2


def test_a_container_that_finished_while_the_engine_was_away_did_its_work(no_engine_wait: None) -> None:
    link = ScriptedLink([DOWN, (0, "exited 0\n", "")], streams=[_ends])
    assert _follow(link, []) == 0  # its outputs are collected, not run again


def test_an_engine_that_stays_away_ends_the_wait_with_docker_unreachable(
    no_engine_wait: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docker_engine, "ENGINE_WAIT_S", 0.0)
    link = ScriptedLink([DOWN, DOWN], streams=[_ends])
    with pytest.raises(
        DockerWentAwayError, match="did not answer again within 0s .*Cannot connect to the Docker daemon"
    ):
        _follow(link, [])


def test_an_engine_restart_that_removed_the_container_is_still_the_engine(no_engine_wait: None) -> None:
    link = ScriptedLink([DOWN, GONE], streams=[_ends])
    with pytest.raises(DockerWentAwayError, match="and that removed it"):
        _follow(link, [])


def test_a_container_removed_while_the_engine_stayed_up_is_killed_from_outside() -> None:
    link = ScriptedLink([GONE], streams=[_ends])
    with pytest.raises(ContainerRemovedError) as caught:
        _follow(link, [])
    assert caught.value.cause == "killed" and "container c1 was removed from ssh@gpu1 while it ran" in str(caught.value)


def test_state_never_mistakes_an_engine_that_does_not_answer_for_a_missing_container() -> None:
    assert DockerCli(ScriptedLink([GONE])).state("c1") is None
    with pytest.raises(DockerUnreachableError, match="docker is not reachable on ssh@gpu1"):
        DockerCli(ScriptedLink([DOWN])).state("c1")
    assert DockerCli(ScriptedLink([(1, "", "Error: No such image: x\n")])).image_present("x") is False
    with pytest.raises(DockerUnreachableError):  # an engine that does not answer has not lost its images
        DockerCli(ScriptedLink([DOWN])).image_present("x")


def test_the_image_id_is_none_only_when_docker_says_the_image_is_absent() -> None:
    """An unknown ID left out of the inputs digest made finished work look new (issue 20): only docker's own "no such
    image" is None (the preflight then builds or pulls it and the ID is read after); a link or engine that does not
    answer, or any other failure, raises the error that retries the attempt or sends it to another host."""
    from cosmos_assets.machines.job import HostUnreachableError
    from cosmos_assets.machines.ssh_host import SshHost
    from cosmos_assets.machines.ssh_host_settings import SshHostSettings

    image = "nvcr.io/me/cosmos-transfer1:latest"

    def image_id(answer: Result | BaseException) -> str | None:
        return SshHost(
            SshTarget(host="gpu1"), SshHostSettings(docker_image=image), link=ScriptedLink([answer])
        ).image_id()

    ident = "sha256:" + "0a" * 32
    assert image_id((0, ident + "\n", "")) == ident
    assert image_id((1, "[]\n", f"Error: No such image: {image}\n")) is None
    assert image_id((1, "[]\n", f"Error response from daemon: No such image: {image}\n")) is None
    with pytest.raises(DockerUnreachableError, match="docker is not reachable on ssh@gpu1"):
        image_id(DOWN)
    with pytest.raises(
        HostUnreachableError,
        match="the ID of image nvcr.io/me/cosmos-transfer1:latest could not be "
        "read on ssh@gpu1 .*the host stopped answering",
    ):
        image_id(LinkDropped("the host stopped answering"))
    with pytest.raises(HostUnreachableError, match="no answer within"):
        image_id(TimeoutError("`docker image inspect` on ssh@gpu1 gave no answer within 60s"))
    denied = "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock"
    with pytest.raises(
        HostNotReadyError, match="docker image inspect .* failed on ssh@gpu1 .*permission denied"
    ) as other:
        image_id((1, "", denied + "\n"))
    assert not isinstance(other.value, (DockerUnreachableError, HostUnreachableError))
    with pytest.raises(HostNotReadyError, match="answered 'not an id', not an image ID"):
        image_id((0, "not an id\n", ""))
    with pytest.raises(HostNotReadyError, match="permission denied"):  # not "missing": the preflight would build it
        DockerCli(ScriptedLink([(1, "", denied)])).image_present(image)


# --------------------------------------------------------------------------- docker run argv


def test_docker_run_argv_shape() -> None:
    inner = INNER
    argv = docker_run_argv(settings(), inner)
    assert argv[: argv.index("nvcr.io/me/cosmos-transfer1:latest")] == [
        "docker",
        "run",
        "-d",
        "--name",
        "cosmos-generate-p-1",
        "--gpus",
        "all",
        "--ipc=host",
        "-u",
        "1000:1001",
        "-v",
        "/home/ubuntu/NatsFS/cosmos-transfer1:/workspace",
        "-v",
        "/home/ubuntu/NatsFS/checkpoints:/workspace/checkpoints",
        "-w",
        "/workspace",
        "-e",
        "PYTHONPATH=/workspace",
    ]
    assert argv[-len(inner) :] == inner


def test_docker_gpu_device_list_is_csv_quoted() -> None:
    argv = docker_run_argv(settings(gpus=[0, 2]), ["true"])
    assert argv[argv.index("--gpus") + 1] == '"device=0,2"'


def test_docker_host_paths_are_normalised() -> None:
    argv = docker_run_argv(settings(checkpoint_dir_host="/home/u/cosmos-transfer1/../checkpoints"), ["true"])
    assert "/home/u/checkpoints:/workspace/checkpoints" in argv


def test_docker_without_gpus_or_detach_or_user() -> None:
    argv = docker_run_argv(settings(gpus=None, detach=False, uid=None, gid=None, shm_size="16g"), ["true"])
    assert "--gpus" not in argv and "-d" not in argv and "-u" not in argv
    assert "--shm-size=16g" in argv


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"remote_dir": "relative/dir"}, "absolute"),
        ({"remote_dir": "/a:b"}, "separators"),
        ({"container_name": "-bad name"}, "container_name"),
        ({"image": "img --privileged"}, "image"),
        ({"env": {"PYTHONPATH": "/x"}}, "PYTHONPATH"),
        ({"env": {"BAD-NAME": "x"}}, "env name"),
        ({"uid": None, "gid": 5}, "gid without uid"),
    ],
)
def test_bad_docker_settings_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        settings(**overrides)


def test_secret_env_never_in_argv() -> None:
    env = {"HF_TOKEN": "hf_supersecret", "MY_API_KEY": "k-secret", "DB_PASSWORD": "pw-secret", "LOG_LEVEL": "info"}
    s = settings(env=env)
    argv = docker_run_argv(s, INNER)
    joined = shell_join(argv)
    for value in ("hf_supersecret", "k-secret", "pw-secret"):
        assert value not in joined
    assert argv[argv.index("HF_TOKEN") - 1] == "-e"
    assert "LOG_LEVEL=info" in argv
    assert secret_env(s) == {"HF_TOKEN": "hf_supersecret", "MY_API_KEY": "k-secret", "DB_PASSWORD": "pw-secret"}


# --------------------------------------------------------------------------- container names

NAME_RULE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@pytest.mark.parametrize(
    "run_id, key, stage",
    [
        ("3f2a9c1e-7b7d-4c1e-9d2a-1b2c3d4e5f60", "building_v1_20250821_143000", "generate"),
        ("r", "../weird key/with spaces & $(x)", "upscale"),
        ("-", "---", "___"),
        ("0" * 100, "k" * 300, "s" * 50),
    ],
)
def test_container_name_is_valid_short_and_deterministic(run_id: str, key: str, stage: str) -> None:
    name = container_name_for(run_id, key, stage)
    assert NAME_RULE.match(name)
    assert len(name) <= 80
    assert name == container_name_for(run_id, key, stage)


def test_container_names_differ_across_run_key_and_stage() -> None:
    base = ("run-1", "prompt_a", "generate")
    names = {
        container_name_for(*base),
        container_name_for("run-2", "prompt_a", "generate"),
        container_name_for("run-1", "prompt_b", "generate"),
        container_name_for("run-1", "prompt_a", "upscale"),
        container_name_for("run-1", "prompt a", "generate"),  # slugs to "prompt-a"; the digest differs anyway
    }
    assert len(names) == 5
