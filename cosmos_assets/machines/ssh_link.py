"""One SSH link to a host: lazy connect, remote commands, streamed output, and the one rule for a dropped link.

Every remote command in the package goes through :class:`SshLink`: argv lists only, each word shell-quoted
(``shlex.join``), never a string pasted together. A link is *lost* when the transport is closed or the server
no longer answers a channel request (:meth:`SshLink.lost`); :meth:`SshLink.with_reconnect` re-runs an
idempotent action after such a loss, with bounded backoff, and gives up with :class:`HostLinkLostError`.
The count and the backoff start again once data flows after a reconnect (transfers report the bytes that
landed through :meth:`SshLink.carried`): many short blips over a long transfer never use up the budget, a
link that never comes back still ends it.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import paramiko

from cosmos_assets.machines.job import HostLinkLostError, HostNotReadyError, HostUnreachableError, LinkDropped, LogLine
from cosmos_assets.machines.ssh_connect import HostKeyError, connect
from cosmos_assets.machines.ssh_target import SshTarget, SshTargetError

_logger = logging.getLogger(__name__)
T = TypeVar("T")

TAG = "[ssh]"
COMMAND_TIMEOUT_S = 120.0
STREAM_POLL_S = 20.0  # no output for this long: check the link is alive
PROBE_TIMEOUT_S = 20.0
EXIT_STATUS_WAIT_S = 10.0
MAX_BACKOFF_S = 30.0
LINK_ERRORS = (paramiko.SSHException, EOFError, OSError)  # OSError covers socket errors and timeouts


class SshLink:
    """A paramiko client to one host, connected when first used and again after the link is lost."""

    def __init__(
        self,
        target: SshTarget,
        label: str,
        reconnect_attempts: int = 6,
        *,
        sleep: Callable[[float], None] = time.sleep,
        connect_fn: Callable[[SshTarget], paramiko.SSHClient] = connect,
    ) -> None:
        self.target = target
        self.label = label
        self.reconnect_attempts = reconnect_attempts
        self._sleep = sleep
        self._connect_fn = connect_fn
        self._client: paramiko.SSHClient | None = None
        self._carried = 0
        self._carried_lock = threading.Lock()

    # ------------------------------------------------------------------ connection

    def _connect(self) -> paramiko.SSHClient:
        try:
            return self._connect_fn(self.target)
        except (HostKeyError, SshTargetError) as error:
            raise HostNotReadyError(str(error)) from error
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise HostUnreachableError(
                f"cannot connect to {self.label} ({error}). Check REMOTE_HOST, REMOTE_PORT, REMOTE_USER and "
                "SSH_KEY (or the host's entry in ~/.ssh/config), that the instance is running, and try "
                "`cosmos-assets ssh`."
            ) from error

    def client(self) -> paramiko.SSHClient:
        """The live client, reconnecting when the link is gone."""
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        self._client = self._connect()
        return self._client

    def transport(self) -> paramiko.Transport:
        transport = self.client().get_transport()
        assert transport is not None
        return transport

    def open_sftp(self) -> paramiko.SFTPClient:
        return self.client().open_sftp()

    def reconnect(self) -> None:
        self.close()
        self.client()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------------ the one rule for a lost link

    def answers(self) -> bool:
        """Whether the current transport is up and the server answers a channel request (one round trip)."""
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            return False
        try:
            transport.open_session(timeout=PROBE_TIMEOUT_S).close()
        except paramiko.ChannelException:
            return True  # the server answered, with a refusal (e.g. MaxSessions)
        except (paramiko.SSHException, OSError, EOFError):
            return False
        return True

    def lost(self, error: BaseException) -> bool:
        """Whether ``error`` means the link is gone (rather than a failure of the command or of local I/O)."""
        if isinstance(error, (LinkDropped, HostUnreachableError)):
            return True
        if isinstance(error, HostKeyError) or not isinstance(error, LINK_ERRORS):
            return False
        return not self.answers()

    def _dropped(self, error: BaseException) -> BaseException:
        """LinkDropped for an error that lost the link, else the error itself."""
        if isinstance(error, LinkDropped) or not self.lost(error):
            return error
        return LinkDropped(f"{type(error).__name__}: {error}")

    # ------------------------------------------------------------------ commands

    def start(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> paramiko.Channel:
        """Start argv (every word quoted); collect it with :meth:`finish`, or talk to it over the channel."""
        transport = self.transport()
        try:
            chan = transport.open_session(timeout=timeout)
        except BaseException as error:
            raise self._dropped(error) from error
        try:
            chan.settimeout(timeout)
            chan.exec_command(shlex.join(argv))
        except BaseException as error:
            chan.close()
            raise self._dropped(error) from error
        return chan

    def finish(self, chan: paramiko.Channel) -> tuple[int, str, str]:
        """Wait for a command from :meth:`start`: (exit code, stdout, stderr)."""
        try:
            out = chan.makefile("rb").read()
            err = chan.makefile_stderr("rb").read()
            code = chan.recv_exit_status()
        except BaseException as error:
            raise self._dropped(error) from error
        finally:
            chan.close()
        transport = chan.get_transport()
        if code == -1 and (transport is None or not transport.is_active()):
            raise LinkDropped("the SSH link closed before the command's exit status arrived")
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def exec(
        self, argv: Sequence[str], stdin_lines: Sequence[str] | None = None, timeout: float = COMMAND_TIMEOUT_S
    ) -> tuple[int, str, str]:
        """Run argv on the host: (exit code, stdout, stderr). ``stdin_lines`` are sent first, one per line."""
        chan = self.start(argv, timeout)
        try:
            for line in stdin_lines or ():
                chan.sendall((line + "\n").encode())
            chan.shutdown_write()
        except BaseException as error:
            chan.close()
            raise self._dropped(error) from error
        try:
            return self.finish(chan)
        except TimeoutError as error:
            raise TimeoutError(
                f"`{shlex.join(argv)[:120]}` on {self.label} gave no answer within {timeout:.0f}s"
            ) from error

    def stream(self, argv: Sequence[str], on_line: LogLine) -> int:
        """Run argv, passing each output line (stdout and stderr) to ``on_line`` as it comes; its exit code.

        While the command is quiet the link is probed every STREAM_POLL_S, so a dead link is noticed.
        """
        chan = self.start(argv, COMMAND_TIMEOUT_S)
        try:
            chan.set_combine_stderr(True)
            chan.settimeout(STREAM_POLL_S)
            pending = b""
            while True:
                try:
                    data = chan.recv(65536)
                except TimeoutError:
                    if not self.answers():  # quiet for a while (model loading): is the link alive?
                        raise LinkDropped("the host stopped answering") from None
                    continue
                except BaseException as error:
                    raise self._dropped(error) from error
                if not data:
                    break
                *lines, pending = (pending + data).split(b"\n")
                for raw in lines:
                    on_line(raw.decode(errors="replace").rstrip("\r"))
            # EOF: a finished command, or a dead link (then no exit status comes; a partial line is dropped)
            transport = chan.get_transport()
            if not chan.status_event.wait(EXIT_STATUS_WAIT_S) or transport is None or not transport.is_active():
                raise LinkDropped("the SSH link closed under a running command")
            code = chan.recv_exit_status()
            if code == -1:
                raise LinkDropped("the command ended without an exit status (link closed)")
            if pending:
                on_line(pending.decode(errors="replace").rstrip("\r"))
            return code
        finally:
            chan.close()

    # ------------------------------------------------------------------ reconnecting

    def carried(self, nbytes: int) -> None:
        """Data of a transfer that crossed the link (landed on the far side, or arrived here); any thread."""
        with self._carried_lock:
            self._carried += nbytes

    @property
    def carried_bytes(self) -> int:
        """Bytes reported by :meth:`carried` over this link's life."""
        return self._carried

    def with_reconnect(self, what: str, action: Callable[[], T], log: LogLine) -> T:
        """Run ``action``; if the link is lost under it, reconnect with backoff and run it again (it must be idempotent).

        Once data flowed again after a reconnect (:meth:`carried`), a later loss is a new incident: the count and
        the backoff start again. ``action`` must keep what it carried (a transfer resumes from it), so a link that
        carries a little between drops still gets the work done, and one that carries nothing ends the budget.
        """
        failures = 0
        started = time.monotonic()
        mark = self.carried_bytes
        while True:
            try:
                return action()
            except BaseException as error:
                if not self.lost(error):
                    raise
                if self.carried_bytes > mark:
                    failures, started = 0, time.monotonic()  # data flowed since the last reconnect
                failures += 1
                if failures > self.reconnect_attempts:
                    last = " ".join(str(error).split()) or type(error).__name__
                    raise HostLinkLostError(
                        f"{what}: the SSH link to {self.label} stayed down after {self.reconnect_attempts} "
                        f"reconnects over {time.monotonic() - started:.0f}s ({last}). Check the network to the host "
                        "and that it is up (`cosmos-assets ssh`), then run again: what already arrived is kept"
                    ) from error
                self.wait_and_reconnect(failures, what, error, log)
                mark = self.carried_bytes

    def wait_and_reconnect(self, failures: int, what: str, error: BaseException, log: LogLine) -> bool:
        """Back off (1, 2, 4... up to MAX_BACKOFF_S seconds), then reconnect; False if the host is still unreachable.

        One line per attempt, naming the host and the reason: the loss when it is new, each failed reconnect (an
        ``error`` that is itself a failed connect is the outage going on, already said)."""
        delay = min(MAX_BACKOFF_S, 2.0 ** (failures - 1))
        if failures == 1 or not isinstance(error, HostUnreachableError):
            reason = _reason(error) if isinstance(error, HostUnreachableError) else error
            log(
                f"{TAG} SSH link to {self.label} lost during {what} ({reason}); reconnecting in {delay:.0f}s "
                f"(attempt {failures}/{self.reconnect_attempts})"
            )
        self._sleep(delay)
        try:
            self.reconnect()
        except HostUnreachableError as again:
            log(
                f"{TAG} reconnect to {self.label} failed (attempt {failures}/{self.reconnect_attempts}, during "
                f"{what}): {_reason(again)}"
            )
            return False
        log(f"{TAG} reconnected to {self.label}")
        return True


def _reason(error: HostUnreachableError) -> str:
    """The network's own words for a failed connect (without the advice :class:`HostUnreachableError` adds)."""
    cause = error.__cause__ or error
    return " ".join(str(cause).split()) or type(cause).__name__
