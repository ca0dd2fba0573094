"""Who ended a container, as a cause (pure logic; the real kills are in tests/faults/test_run_faults.py): exit 137
is out of memory only when docker says OOMKilled (or cannot say), else a kill from outside, never retried."""

from __future__ import annotations

import pytest

from cosmos_assets.machines.docker_engine import ContainerRemovedError, DockerWentAwayError, kernel_oom_kill
from cosmos_assets.runs import oom
from cosmos_assets.runs.causes import failure_cause, retryable


@pytest.mark.parametrize(
    "exit_code, oom_killed, memory, killed",
    [
        (137, True, "host", False),  # the kernel's OOM killer: docker says so
        (137, None, "host", False),  # docker could not say: the cautious out-of-memory message
        (137, False, None, True),  # docker kill, docker stop past its grace period, a host agent
        (1, False, None, False),  # the model's own failure
        (143, False, None, False),  # SIGTERM: a stop the model did not survive, not SIGKILL
        (0, False, None, False),
    ],
)
def test_exit_137_is_out_of_memory_only_when_docker_says_so_or_cannot_say(
    exit_code: int, oom_killed: bool | None, memory: str | None, killed: bool
) -> None:
    found = oom.memory_failure(exit_code, ["step 3/35"], oom_killed)
    assert (found.kind if found else None) == memory
    why = oom.killed_from_outside(exit_code, oom_killed, "cosmos-generate-p-1")
    assert (why is not None) == killed
    if why is not None:
        assert "container cosmos-generate-p-1 was killed from outside" in why and "SIGKILL" in why
        assert "not OOMKilled" in why and "\n" not in why


def test_an_engine_going_away_is_retried_and_a_kill_from_outside_is_not() -> None:
    assert failure_cause(DockerWentAwayError("docker on h went away")) == "docker_unreachable"
    assert retryable("docker_unreachable")
    assert failure_cause(ContainerRemovedError("removed")) == "killed" and not retryable("killed")


CONTAINER = "ca50ff076c8b7240b0f9b4ee72047c1bad336927bbf1e75f21112c9f0ed98539"
KERNEL_LOG = f"""[ 1864.360708] python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
[ 1864.362187] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/system.slice/docker-{CONTAINER}.scope,task=python3,pid=23789,uid=4321
[ 1864.362201] Out of memory: Killed process 23789 (python3) total-vm:1290000kB"""


def test_a_host_wide_oom_kill_that_docker_did_not_flag_is_read_from_the_kernel_log() -> None:
    assert kernel_oom_kill(KERNEL_LOG, CONTAINER)
    assert not kernel_oom_kill(KERNEL_LOG, "0" * 64)  # another container's kill
    assert not kernel_oom_kill(KERNEL_LOG, "")  # no id: never a match on everything
    assert not kernel_oom_kill(
        f"[ 1.0] docker0: port 1(veth{CONTAINER[:7]}) entered blocking state {CONTAINER}", CONTAINER
    )
    found = oom.memory_failure(137, ["step 3/35"], False, kernel_oom=True)
    assert found is not None and found.kind == "host" and "kernel log shows its OOM killer" in found.evidence
    assert oom.killed_from_outside(137, False, "c1", kernel_oom=True) is None


def test_a_kernel_log_that_cannot_be_read_says_so_rather_than_no_oom_kill(tmp_path) -> None:
    """With neither dmesg nor journalctl allowed (dmesg_restrict, no journal group), the pipeline still exits 0:
    the command's own output must tell 'unread' from 'read, no kill', or a real OOM kill is reported as `killed`."""
    import subprocess

    from cosmos_assets.machines.docker_engine import KERNEL_LOG, NO_KERNEL_LOG, kernel_log_read

    denied = tmp_path / "bin"
    denied.mkdir()
    for tool in ("dmesg", "journalctl"):  # each refuses, as they do for a user without the right
        (denied / tool).write_text(
            "#!/bin/sh\necho 'dmesg: read kernel buffer failed: Operation not permitted' >&2\nexit 1\n"
        )
        (denied / tool).chmod(0o755)
    tail = subprocess.run(["sh", "-c", "command -v tail"], capture_output=True, text=True, check=True).stdout.strip()
    (denied / "tail").symlink_to(tail)
    done = subprocess.run(["/bin/sh", "-c", KERNEL_LOG], capture_output=True, text=True, env={"PATH": str(denied)})
    assert done.returncode == 0 and NO_KERNEL_LOG in done.stdout and not kernel_log_read(done.stdout)
    assert not kernel_log_read("") and kernel_log_read(KERNEL_LOG_LINES)


KERNEL_LOG_LINES = "[ 1.0] Linux version 6.1.0\n[ 2.0] docker0: port 1 entered blocking state\n"
