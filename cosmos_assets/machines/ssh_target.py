"""One model of an SSH target, resolved against ``~/.ssh/config`` the way OpenSSH does it.

:class:`SshTarget` holds what the settings say (explicit fields win over the ssh config, like ``ssh -p/-l/-i``);
:meth:`SshTarget.resolve` gives the :class:`ResolvedTarget` that :mod:`~cosmos_assets.machines.ssh_connect` connects
to and that :meth:`ResolvedTarget.openssh_argv` hands to the OpenSSH client, so ``cosmos-assets ssh`` reaches the
host the same way: same address, key, known_hosts, and the same ``ProxyJump``/``ProxyCommand``.

``ProxyCommand`` is honoured as an argv: the template is split into words first, then ``%h %p %r %n %%`` are
expanded inside each word, so a host name never becomes shell syntax. ``ProxyJump`` is honoured by resolving each
hop as a target of its own (same known_hosts, same strict host-key policy). Anything we cannot honour exactly is
refused with a one-line :class:`SshTargetError` naming the host and the setting.
"""

from __future__ import annotations

import getpass
import glob
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import paramiko
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cosmos_assets.files import UnsafeReadError, printable_path, read_bounded
from cosmos_assets.settings import KEY_PASSPHRASE_ENV

DEFAULT_PASSPHRASE_ENV = KEY_PASSPHRASE_ENV
MAX_HOPS = 8
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Stand-ins for '%' and '~' in ProxyCommand/ProxyJump lines, so paramiko leaves their tokens for us to expand.
_PERCENT, _TILDE = "\ue000", "\ue001"
_PROXY_LINE = re.compile(r"^(\s*(?:proxycommand|proxyjump)(?:\s*=\s*|\s+))(.*)$", re.IGNORECASE)
_INCLUDE_LINE = re.compile(r"^\s*include(?:\s*=\s*|\s+)(.*)$", re.IGNORECASE)
_HEADER_LINE = re.compile(r"^\s*(?:host|match)(?:\s*=\s*|\s+)", re.IGNORECASE)
MAX_INCLUDE_DEPTH = 16
# What we (and paramiko, which has no limit) read of each file: far above any real one, far below a runaway read.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_KNOWN_HOSTS_BYTES = 16 * 1024 * 1024
MAX_KEY_BYTES = 1024 * 1024


class SshTargetError(ValueError):
    """The SSH target or its ssh config entry cannot be used as given; the message names the host and the fix."""


def _default_ssh_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh"


def _check_name(value: str, what: str, host: str) -> str:
    """A host or user name that is safe as one argv word for OpenSSH (no blanks, no option look-alike)."""
    if not value or value.startswith("-") or any(c.isspace() or ord(c) < 32 or c in "%'\"`$;&|<>\\" for c in value):
        raise SshTargetError(
            f"{host}: {what} {value!r} is not a usable host or user name; fix it in the settings or ssh config"
        )
    return value


class SshTarget(BaseModel):
    """How to reach a host over SSH. Fields left None come from the ssh config (``~/.ssh/config`` or ``ssh_config``)."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)  # a passphrase given as its variable's name

    host: str = Field(description="address, or an alias from the ssh config")
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key_file: Path | None = None
    key_passphrase_env: str = Field(
        default=DEFAULT_PASSPHRASE_ENV, description="NAME of the environment variable holding the key's passphrase"
    )
    known_hosts: Path | None = Field(default=None, description="default ~/.ssh/known_hosts")
    ssh_config: Path | None = Field(default=None, description="default ~/.ssh/config if it exists")
    trust_on_first_use: bool = False
    allow_agent: bool = True
    keepalive_s: int = 15
    connect_timeout_s: float = 20.0

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return _check_name(v, "host", v or "ssh target")

    @field_validator("key_passphrase_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not _ENV_NAME.match(v):
            raise ValueError("key_passphrase_env must be the NAME of an environment variable, not a passphrase")
        return v

    def resolve(self) -> ResolvedTarget:
        """Apply the ssh config: explicit fields win; ProxyJump/ProxyCommand resolved, or refused with the reason."""
        return _resolve(self, hops_left=MAX_HOPS)

    def openssh_argv(self, command: Sequence[str] = ()) -> list[str]:
        """The OpenSSH client argv reaching this target exactly as our own connection does (``cosmos-assets ssh``)."""
        return self.resolve().openssh_argv(command)


class ResolvedTarget(BaseModel):
    """Connection parameters after the ssh config was applied. Holds no secret (the passphrase by name only)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the host as given (alias or address)")
    hostname: str
    port: int
    user: str
    key_files: list[Path]
    known_hosts: Path
    trust_on_first_use: bool = False
    key_passphrase_env: str = DEFAULT_PASSPHRASE_ENV
    allow_agent: bool = True
    keepalive_s: int = 15
    connect_timeout_s: float = 20.0
    ssh_config: Path | None = Field(default=None, description="the config file given explicitly (passed as ssh -F)")
    config_read: bool = Field(default=False, description="a config file was read to resolve this target")
    proxy_command: tuple[str, ...] | None = Field(default=None, description="ProxyCommand argv, tokens expanded")
    jump: ResolvedTarget | None = Field(default=None, description="ProxyJump: the hop this target is reached through")

    @property
    def known_hosts_name(self) -> str:
        """The name under which OpenSSH and paramiko file this host in known_hosts."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` as ``ssh -W`` takes it (IPv6 in brackets)."""
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{host}:{self.port}"

    def openssh_proxy_command(self) -> str | None:
        """The ProxyCommand value OpenSSH needs to go the same way ('%' escaped: every value is already expanded)."""
        if self.proxy_command is not None:
            return shlex.join(self.proxy_command).replace("%", "%%")
        if self.jump is not None:
            return shlex.join(self.jump.openssh_argv(forward=self.address)).replace("%", "%%")
        return None

    def openssh_argv(self, command: Sequence[str] = (), forward: str | None = None) -> list[str]:
        """``ssh`` argv with these settings; ``forward`` makes it ``ssh -W host:port`` (a ProxyJump hop)."""
        argv = ["ssh", "-p", str(self.port)]
        if self.ssh_config is not None:
            argv += ["-F", str(self.ssh_config)]
        for key in self.key_files:
            argv += ["-i", str(key)]
        # ssh splits UserKnownHostsFile on spaces; quotes keep one path whole
        known = str(self.known_hosts)
        known = f'"{known}"' if any(c.isspace() for c in known) else known
        strict = "accept-new" if self.trust_on_first_use else "yes"
        argv += ["-o", f"UserKnownHostsFile={known}", "-o", f"StrictHostKeyChecking={strict}"]
        proxy = self.openssh_proxy_command()
        if proxy is not None:
            argv += ["-o", f"ProxyCommand={proxy}"]
        elif self.config_read:
            # We connect to the resolved address, not the alias: keep OpenSSH from matching another Host block's proxy.
            argv += ["-o", "ProxyCommand=none"]
        if forward is not None:
            argv += ["-W", forward]
        argv += ["--", f"{self.user}@{self.hostname}", *command]
        return argv


def _config_lines(path: Path, host: str, depth: int = 0) -> list[str]:
    """The config's lines with ``Include`` files inlined (paramiko does not read them; OpenSSH does), and the
    tokens of ProxyCommand/ProxyJump lines marked so paramiko leaves them for us to expand."""
    if depth > MAX_INCLUDE_DEPTH:
        raise SshTargetError(
            f"{host}: the ssh config includes files more than {MAX_INCLUDE_DEPTH} deep ({path}); is there a loop?"
        )
    lines: list[str] = []
    header = "Host *"  # the block a line belongs to, restored after an included file (as OpenSSH does)
    what = "the ssh config" if depth == 0 else "a file the ssh config includes"
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES, what).decode("utf-8", errors="replace")
    except UnsafeReadError as error:
        raise SshTargetError(f"{host}: {error}") from None
    for line in text.splitlines():
        if _HEADER_LINE.match(line):
            header = line
        include = _INCLUDE_LINE.match(line)
        if include:
            for pattern in shlex.split(include[1]):
                pattern = os.path.expanduser(pattern)
                if not os.path.isabs(pattern):
                    pattern = str(_default_ssh_dir() / pattern)
                for found in sorted(glob.glob(pattern)):
                    lines += _config_lines(Path(found), host, depth + 1)
            lines.append(header)
            continue
        proxy = _PROXY_LINE.match(line)
        if proxy:
            line = proxy[1] + proxy[2].replace("%", _PERCENT).replace("~", _TILDE)
        lines.append(line)
    return lines


def _read_config(path: Path, host: str) -> paramiko.SSHConfigDict:
    """The ssh config entry for ``host``."""
    text = "\n".join(_config_lines(path, host))
    try:
        return paramiko.SSHConfig.from_text(text).lookup(host)
    except (paramiko.ssh_exception.ConfigParseError, ValueError) as error:
        raise SshTargetError(f"{host}: cannot read the ssh config {path} ({error}); fix that file") from error


def _expand_tokens(word: str, tokens: dict[str, str], host: str, setting: str) -> str:
    """``word`` with each ``%x`` (marked by _PERCENT) replaced by ``tokens[x]``; an unknown token is refused."""
    out, i = [], 0
    while i < len(word):
        c = word[i]
        if c != _PERCENT:
            out.append("~" if c == _TILDE else c)
            i += 1
            continue
        key = word[i + 1] if i + 1 < len(word) else ""
        key = "%" if key == _PERCENT else key
        if key not in tokens:
            known = " ".join(f"%{k}" for k in tokens)
            raise SshTargetError(f"{host}: {setting} uses %{key}, which is not supported here (use {known})")
        out.append(tokens[key])
        i += 2
    return "".join(out)


def _shell_syntax(template: str) -> str | None:
    """The first character a shell would treat specially (outside quotes; ``$`` and backquote also in double quotes)."""
    quote = None
    escaped = False
    for c in template:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = None if c == "'" else quote
        elif c == "\\":
            escaped = True
        elif c in "$`":
            return c
        elif quote == '"':
            quote = None if c == '"' else quote
        elif c in "'\"":
            quote = c
        elif c in "|&;<>()*?\n":
            return c
    return None


def _proxy_command_argv(template: str, tokens: dict[str, str], host: str) -> tuple[str, ...]:
    shown = template.replace(_PERCENT, "%").replace(_TILDE, "~")
    special = _shell_syntax(template)
    if special is not None:
        raise SshTargetError(
            f"{host}: ProxyCommand {shown!r} needs a shell ({special!r}), which is not run here; "
            "use ProxyJump or a plain command with arguments"
        )
    try:
        words = shlex.split(template)
    except ValueError as error:
        raise SshTargetError(
            f"{host}: ProxyCommand {shown!r} cannot be split into words ({error}); fix its quoting"
        ) from error
    if not words:
        raise SshTargetError(f"{host}: ProxyCommand is empty; remove it or give a command")
    home = os.path.expanduser("~")
    argv = []
    for word in words:
        if word == _TILDE or word.startswith(_TILDE + "/"):
            word = home + word[1:]
        argv.append(_expand_tokens(word, tokens, host, "ProxyCommand"))
    return tuple(argv)


def _parse_hop(spec: str, host: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` or ``ssh://[user@]host[:port]`` -> (user, host, port)."""
    text = spec.strip().removeprefix("ssh://")
    user, _, hostport = text.rpartition("@")
    if hostport.startswith("["):
        name, _, rest = hostport[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
    elif hostport.count(":") == 1:
        name, port_text = hostport.split(":")
    else:
        name, port_text = hostport, None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SshTargetError(f"{host}: ProxyJump hop {spec!r} has no valid port; write [user@]host[:port]")
        port = int(port_text)
    _check_name(name, "ProxyJump hop", host)
    if user:
        _check_name(user, "ProxyJump user", host)
    return user or None, name, port


def _resolve(target: SshTarget, hops_left: int, jump: ResolvedTarget | None = None) -> ResolvedTarget:
    if hops_left <= 0:
        raise SshTargetError(
            f"{target.host}: ProxyJump goes through more than {MAX_HOPS} hops; is there a loop in the ssh config?"
        )
    config_path = (target.ssh_config or _default_ssh_dir() / "config").expanduser()
    try:
        config_read = config_path.exists()  # a FIFO or a device there is refused by name, not skipped
    except (OSError, ValueError) as error:  # a name too long, a NUL byte
        raise SshTargetError(
            f"{target.host}: the ssh config {printable_path(config_path)} cannot be used ({error}); fix the path"
        ) from None
    entry = _read_config(config_path, target.host) if config_read else paramiko.SSHConfigDict(hostname=target.host)
    hostname = _check_name(str(entry.get("hostname", target.host)), "HostName", target.host)
    try:
        port = target.port or int(entry.get("port", 22))
    except ValueError:
        raise SshTargetError(f"{target.host}: Port {entry.get('port')!r} in {config_path} is not a number") from None
    user = _check_name(target.user or entry.get("user") or getpass.getuser(), "user", target.host)
    if target.key_file is not None:
        keys = [target.key_file.expanduser()]
    else:
        keys = [Path(p).expanduser() for p in entry.get("identityfile", [])]
    known_hosts = (target.known_hosts or _default_ssh_dir() / "known_hosts").expanduser()
    _check_readable(known_hosts, MAX_KNOWN_HOSTS_BYTES, "the known_hosts file", target.host)
    for key in keys:
        _check_readable(key, MAX_KEY_BYTES, "the SSH key file", target.host)
    tokens = {"h": hostname, "p": str(port), "r": user, "n": target.host, "%": "%"}
    command, jumps = entry.get("proxycommand"), entry.get("proxyjump")
    if jump is None and command and jumps and jumps.lower() != "none":
        raise SshTargetError(f"{target.host}: the ssh config sets both ProxyJump and ProxyCommand; keep one of them")
    proxy_argv = None
    if jump is None and jumps and jumps.lower() != "none":
        jump = _resolve_jumps(target, _expand_tokens(jumps, tokens, target.host, "ProxyJump"), hops_left)
    elif jump is None and command:
        proxy_argv = _proxy_command_argv(command, tokens, target.host)
    return ResolvedTarget(
        name=target.host,
        hostname=hostname,
        port=port,
        user=user,
        key_files=keys,
        known_hosts=known_hosts,
        trust_on_first_use=target.trust_on_first_use,
        key_passphrase_env=target.key_passphrase_env,
        allow_agent=target.allow_agent,
        keepalive_s=target.keepalive_s,
        connect_timeout_s=target.connect_timeout_s,
        ssh_config=target.ssh_config.expanduser() if target.ssh_config else None,
        config_read=config_read,
        proxy_command=proxy_argv,
        jump=jump,
    )


def _check_readable(path: Path, limit: int, what: str, host: str) -> None:
    """Refuse a FIFO, a device or an outsized file before paramiko reads it (whole, with no limit, or blocking)."""
    try:
        read_bounded(path, limit, what)
    except UnsafeReadError as error:
        raise SshTargetError(f"{host}: {error}") from None
    except ValueError as error:  # a NUL byte in the name
        raise SshTargetError(f"{host}: {what} {printable_path(path)} cannot be used ({error}); fix the path") from None
    except OSError:
        pass  # missing or unreadable: reported where it is used (trust on first use creates known_hosts)


def _resolve_jumps(target: SshTarget, spec: str, hops_left: int) -> ResolvedTarget:
    """ProxyJump ``a,b``: reach ``b`` through ``a``, then the target through ``b`` (as ``ssh -J`` does)."""
    previous: ResolvedTarget | None = None
    for hop in (part for part in spec.split(",") if part.strip()):
        user, name, port = _parse_hop(hop, target.host)
        # A hop is a target of its own: its own config entry and keys, our known_hosts and host-key policy.
        hop_target = SshTarget(
            host=name,
            port=port,
            user=user,
            known_hosts=target.known_hosts,
            ssh_config=target.ssh_config,
            trust_on_first_use=target.trust_on_first_use,
            key_passphrase_env=target.key_passphrase_env,
            allow_agent=target.allow_agent,
            keepalive_s=target.keepalive_s,
            connect_timeout_s=target.connect_timeout_s,
        )
        previous = _resolve(hop_target, hops_left - 1, previous)
    if previous is None:
        raise SshTargetError(f"{target.host}: ProxyJump {spec!r} names no host; write [user@]host[:port]")
    return previous


ResolvedTarget.model_rebuild()
