"""SshLink: one exec/stream implementation, one rule for a lost link, bounded reconnects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmos_assets.machines import ssh_link
from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.machines.ssh_link import TAG, HostLinkLostError, HostUnreachableError, LinkDropped, SshLink
from cosmos_assets.machines.ssh_target import SshTarget
from tests.infra.sshd import SshServer


class OfflineLink(SshLink):
    """No network: reconnects are counted, sleeps recorded; ``answering`` is what a probe would find."""

    def __init__(self, answering: bool = False, attempts: int = 3) -> None:
        self.sleeps: list[float] = []
        super().__init__(SshTarget(host="gpu1"), "ssh@gpu1", attempts, sleep=self.sleeps.append)
        self.answering = answering
        self.reconnects = 0

    def answers(self) -> bool:
        return self.answering

    def reconnect(self) -> None:
        self.reconnects += 1


def test_reconnects_are_bounded_with_backoff_and_end_in_one_clear_error() -> None:
    link = OfflineLink(attempts=3)
    lines: list[str] = []

    def always_dropped() -> None:
        raise LinkDropped("EOFError: ")

    with pytest.raises(HostLinkLostError, match=r"^upload: the SSH link to ssh@gpu1 stayed down after 3 reconnects"):
        link.with_reconnect("upload", always_dropped, lines.append)
    assert link.sleeps == [1.0, 2.0, 4.0] and link.reconnects == 3
    assert lines[0] == f"{TAG} SSH link to ssh@gpu1 lost during upload (EOFError: ); reconnecting in 1s (attempt 1/3)"


def test_an_action_is_run_again_after_a_lost_link_and_its_result_returned() -> None:
    link = OfflineLink()
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise HostUnreachableError("cannot connect to ssh@gpu1 (timed out)")
        return "done"

    assert link.with_reconnect("listing", flaky, print) == "done" and len(calls) == 2


def refused() -> HostUnreachableError:
    """What SshLink's connect raises for a host whose sshd is gone: the advice, caused by the network's error."""
    error = HostUnreachableError("cannot connect to ssh@gpu1 ([Errno 111] Connection refused). Check REMOTE_HOST, ...")
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return error


class UnreachableLink(OfflineLink):
    """Every reconnect fails as a host whose sshd is gone does."""

    def reconnect(self) -> None:
        self.reconnects += 1
        raise refused()


@pytest.mark.parametrize("first", ["a drop", "a failed connect"])
def test_an_outage_says_one_line_per_attempt_with_the_host_and_the_reason(first: str) -> None:
    link = UnreachableLink(attempts=3)
    lines: list[str] = []
    errors = iter([LinkDropped("EOFError: ") if first == "a drop" else refused()])

    def down() -> None:
        raise next(errors, refused())

    with pytest.raises(HostLinkLostError):
        link.with_reconnect("upload", down, lines.append)
    assert lines[0].startswith(f"{TAG} SSH link to ssh@gpu1 lost during upload (") and "(attempt 1/3)" in lines[0]
    assert lines[1:] == [
        f"{TAG} reconnect to ssh@gpu1 failed (attempt {n}/3, during upload): [Errno 111] Connection refused"
        for n in (1, 2, 3)
    ]
    assert not any("Check REMOTE_HOST" in line for line in lines)


@pytest.mark.parametrize("error", [ValueError("bad"), HostNotReadyError("no docker"), KeyboardInterrupt()])
def test_other_errors_are_not_retried(error: BaseException) -> None:
    link = OfflineLink()

    def fails() -> None:
        raise error

    with pytest.raises(type(error)):
        link.with_reconnect("x", fails, print)
    assert link.sleeps == [] and link.reconnects == 0


def test_an_os_error_is_a_lost_link_only_when_the_host_stops_answering() -> None:
    assert not OfflineLink(answering=True).lost(FileNotFoundError("local file gone"))
    assert OfflineLink(answering=False).lost(OSError("Socket is closed"))
    assert OfflineLink(answering=False).lost(EOFError())


def test_a_failed_connect_leaves_paramikos_traceback_at_debug_and_raises_the_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that answers with something other than SSH and hangs up: paramiko's transport thread logs the failed
    handshake at ERROR with a traceback (what printed on every failed reconnect); the caller gets the exception."""
    import logging
    import socket
    import threading

    import paramiko

    from cosmos_assets.machines.ssh_connect import connect

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_not_ssh() -> None:
        conn, _ = server.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n")
        conn.close()

    threading.Thread(target=answer_not_ssh, daemon=True).start()
    caplog.set_level(logging.DEBUG, logger="paramiko")
    target = SshTarget(
        host="127.0.0.1",
        port=port,
        user="me",
        known_hosts=tmp_path / "known_hosts",
        ssh_config=tmp_path / "none",
        allow_agent=False,
    )
    try:
        with pytest.raises(paramiko.SSHException, match="Error reading SSH protocol banner"):
            connect(target)
    finally:
        server.close()
    paramiko_records = [r for r in caplog.records if r.name.startswith("paramiko")]
    assert any("Traceback" in r.getMessage() for r in paramiko_records)  # paramiko did log it...
    assert not [r.getMessage() for r in paramiko_records if r.levelno > logging.DEBUG]  # ...at DEBUG only


# --------------------------------------------------------------------------- against the test sshd


@pytest.fixture
def link(sshd: SshServer, tmp_path: Path) -> Iterator[SshLink]:
    target = SshTarget(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.key_path,
        known_hosts=sshd.known_hosts,
        ssh_config=tmp_path / "none",
        allow_agent=False,
    )
    link = SshLink(target, "test sshd", reconnect_attempts=3, sleep=lambda _s: None)
    yield link
    link.close()


@pytest.mark.integration
def test_every_word_is_quoted_and_stdin_lines_arrive(link: SshLink, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    code, out, err = link.exec(
        ["sh", "-c", 'read -r a; printf "%s|%s" "$a" "$1"', "sh", f"$(touch {marker}); x"], stdin_lines=["first line"]
    )
    assert (code, out, err) == (0, f"first line|$(touch {marker}); x", "") and not marker.exists()


@pytest.mark.integration
def test_a_killed_link_is_reconnected_and_the_command_run_again(link: SshLink, sshd: SshServer) -> None:
    assert link.exec(["true"])[0] == 0
    assert sshd.kill_sessions() >= 1
    lines: list[str] = []
    assert link.with_reconnect("echo", lambda: link.exec(["echo", "back"]), lines.append)[1] == "back\n"
    assert lines == [] or lines[-1] == f"{TAG} reconnected to test sshd"  # a dead transport may already be seen


@pytest.mark.integration
def test_a_quiet_stream_is_probed_and_a_slow_command_on_a_live_link_is_not_a_drop(
    link: SshLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssh_link, "STREAM_POLL_S", 0.3)
    probes: list[bool] = []
    real = link.answers
    monkeypatch.setattr(link, "answers", lambda: probes.append(real()) or probes[-1])
    got: list[str] = []
    assert link.stream(["sh", "-c", "sleep 1; echo one; echo two >&2; exit 3"], got.append) == 3
    assert got == ["one", "two"] and probes and all(probes)
    with pytest.raises(TimeoutError, match="`sleep 5` on test sshd gave no answer within 1s"):
        link.exec(["sleep", "5"], timeout=1)
