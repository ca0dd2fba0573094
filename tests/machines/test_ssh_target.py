"""SshTarget.resolve and openssh_argv: the ssh config applied like OpenSSH, ProxyJump/ProxyCommand honoured or refused."""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cosmos_assets.machines.ssh_target import SshTarget, SshTargetError

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ssh config"
    path.write_text(text)
    return path


def target(tmp_path: Path, host: str, text: str, **fields: object) -> SshTarget:
    return SshTarget(host=host, ssh_config=_config(tmp_path, text), known_hosts=tmp_path / "kh", **fields)


def test_explicit_fields_win_over_the_config(tmp_path: Path) -> None:
    t = target(
        tmp_path,
        "gpu",
        "Host gpu\n  HostName 10.0.0.5\n  Port 2200\n  User ubuntu\n  IdentityFile /k/config.pem\n",
        port=2222,
        user="root",
        key_file=Path("/k/mine.pem"),
    )
    r = t.resolve()
    assert (r.hostname, r.port, r.user, r.key_files) == ("10.0.0.5", 2222, "root", [Path("/k/mine.pem")])
    assert r.known_hosts_name == "[10.0.0.5]:2222" and r.proxy_command is None and r.jump is None


def test_proxy_command_tokens_are_expanded_inside_words_with_the_resolved_values(tmp_path: Path) -> None:
    text = "Host gpu\n  HostName 10.0.0.5\n  Port 2200\n  User ubuntu\n  ProxyCommand /usr/bin/nc -X connect -x 'proxy:8080' %h %p\n"
    r = target(tmp_path, "gpu", text, port=2300).resolve()  # the explicit port is the one %p names, as with ssh -p
    assert r.proxy_command == ("/usr/bin/nc", "-X", "connect", "-x", "proxy:8080", "10.0.0.5", "2300")
    other = target(
        tmp_path, "gpu", "Host gpu\n  User me\n  ProxyCommand ssh -W '%h:%p' -l %r jump%%1 ~/x %n\n"
    ).resolve()
    assert other.proxy_command == ("ssh", "-W", "gpu:22", "-l", "me", "jump%1", str(Path("~/x").expanduser()), "gpu")


def test_openssh_gets_the_same_proxy_command_escaped_for_its_own_tokens(tmp_path: Path) -> None:
    r = target(tmp_path, "gpu", "Host gpu\n  ProxyCommand relay --name 'a b' %h %p 100%%\n").resolve()
    argv = r.openssh_argv(["true"])
    value = argv[argv.index("-o", argv.index("StrictHostKeyChecking=yes")) + 1].removeprefix("ProxyCommand=")
    assert (
        tuple(shlex.split(value.replace("%%", "%")))
        == r.proxy_command
        == ("relay", "--name", "a b", "gpu", "22", "100%")
    )
    assert argv[-3:] == ["--", f"{r.user}@gpu", "true"]


@pytest.mark.parametrize(
    ("command", "why"),
    [("nc %h %p | tee log", "'|'"), ("nc $PROXY %p", "'$'"), ("nc %h %p > /dev/null", "'>'"), ("nc %C", "%C")],
)
def test_proxy_commands_we_cannot_run_the_same_way_are_refused_naming_host_and_setting(
    tmp_path: Path, command: str, why: str
) -> None:
    t = target(tmp_path, "gpu", f"Host gpu\n  ProxyCommand {command}\n")
    with pytest.raises(SshTargetError) as refused:
        t.resolve()
    message = str(refused.value)
    assert message.startswith("gpu: ") and "ProxyCommand" in message and why in message and "\n" not in message


def test_both_proxy_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SshTargetError, match="gpu: the ssh config sets both ProxyJump and ProxyCommand"):
        target(tmp_path, "gpu", "Host gpu\n  ProxyJump bastion\n  ProxyCommand nc %h %p\n").resolve()


def test_proxy_jump_hops_are_targets_of_their_own(tmp_path: Path) -> None:
    text = (
        "Host gpu\n  HostName 10.0.0.5\n  User ubuntu\n  ProxyJump bob@bastion:2222\n"
        "Host bastion\n  HostName 203.0.113.1\n  IdentityFile /k/bastion.pem\n"
    )
    r = target(tmp_path, "gpu", text, key_file=Path("/k/gpu.pem"), trust_on_first_use=True).resolve()
    jump = r.jump
    assert jump is not None and jump.jump is None
    assert (jump.name, jump.hostname, jump.port, jump.user, jump.key_files) == (
        "bastion",
        "203.0.113.1",
        2222,
        "bob",
        [Path("/k/bastion.pem")],
    )
    assert jump.known_hosts == r.known_hosts and jump.trust_on_first_use  # same known_hosts, same policy
    argv = r.openssh_argv()
    proxy = shlex.split(
        argv[argv.index("-o", argv.index("StrictHostKeyChecking=accept-new")) + 1].removeprefix("ProxyCommand=")
    )
    assert (
        proxy[0] == "ssh" and proxy[proxy.index("-W") + 1] == "10.0.0.5:22" and proxy[-2:] == ["--", "bob@203.0.113.1"]
    )
    assert proxy[proxy.index("-i") + 1] == "/k/bastion.pem" and f"UserKnownHostsFile={r.known_hosts}" in proxy
    assert argv[argv.index("-i") + 1] == "/k/gpu.pem" and argv[-1] == "ubuntu@10.0.0.5"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ssh://me@[2001:db8::1]:2022", ("me", "2001:db8::1", 2022)),
        ("jump", (None, "jump", 22)),
        ("10.0.0.9:23", (None, "10.0.0.9", 23)),
    ],
)
def test_proxy_jump_forms(tmp_path: Path, spec: str, expected: tuple) -> None:
    jump = target(tmp_path, "gpu", f"Host gpu\n  ProxyJump {spec}\n", user="x").resolve().jump
    assert jump is not None
    user, host, port = expected
    assert (jump.hostname, jump.port) == (host, port) and (user is None or jump.user == user)
    if ":" in host:
        assert jump.known_hosts_name == f"[{host}]:{port}"


def test_a_chain_of_hops_goes_through_each_in_order(tmp_path: Path) -> None:
    r = target(tmp_path, "gpu", "Host gpu\n  ProxyJump first,second:2200\nHost second\n  ProxyJump ignored\n").resolve()
    assert (
        r.jump is not None and r.jump.name == "second" and r.jump.port == 2200
    )  # its own ProxyJump gives way to the chain
    assert r.jump.jump is not None and r.jump.jump.name == "first" and r.jump.jump.jump is None


def test_a_proxy_jump_loop_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SshTargetError, match="a: ProxyJump goes through more than 8 hops"):
        target(tmp_path, "a", "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n").resolve()


@pytest.mark.parametrize("spec", ["-oProxyCommand=x", "bad host", "u@h:port"])
def test_hostile_or_broken_hops_are_refused(tmp_path: Path, spec: str) -> None:
    with pytest.raises(SshTargetError, match="^gpu: "):
        target(tmp_path, "gpu", f"Host gpu\n  ProxyJump {spec}\n").resolve()


def test_no_proxy_in_the_config_is_said_to_openssh_too(tmp_path: Path) -> None:
    """We connect to the resolved address; OpenSSH must not pick up a proxy from another Host block for it."""
    argv = target(tmp_path, "gpu", "Host gpu\n  HostName 10.0.0.5\nHost 10.*\n  ProxyJump elsewhere\n").openssh_argv()
    assert "ProxyCommand=none" in argv
    plain = SshTarget(host="10.0.0.5", ssh_config=tmp_path / "missing", known_hosts=tmp_path / "kh").openssh_argv()
    assert not any(a.startswith("ProxyCommand") for a in plain)


def test_the_passphrase_is_named_never_given() -> None:
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        SshTarget(host="gpu", key_passphrase_env="correct horse battery staple")
    with pytest.raises(ValueError):
        SshTarget(host="-oProxyCommand=touch /tmp/x")


def test_a_passphrase_given_as_its_variables_name_is_in_no_error() -> None:
    with pytest.raises(ValueError) as caught:
        SshTarget(host="gpu", key_passphrase_env="correct horse battery staple")
    assert "cor" not in str(caught.value) and "horse" not in str(caught.value)


def test_included_files_are_read_like_openssh_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """paramiko ignores Include; a ProxyJump in an included file must not be silently dropped."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh" / "conf.d").mkdir(parents=True)
    (tmp_path / ".ssh" / "conf.d" / "gpu.conf").write_text("Host gpu\n  HostName 10.0.0.5\n  ProxyJump bastion\n")
    (tmp_path / "bastion.conf").write_text("  HostName 203.0.113.1\n  IdentityFile /k/bastion.pem\n")
    text = f"Include conf.d/*.conf\nUser everyone\nHost bastion\n  Include {tmp_path / 'bastion.conf'}\n  Port 2201\n"
    r = target(tmp_path, "gpu", text).resolve()
    assert r.hostname == "10.0.0.5" and r.user == "everyone" and r.key_files == []  # after an Include: global again
    assert r.jump is not None and (r.jump.hostname, r.jump.port, r.jump.key_files) == (
        "203.0.113.1",
        2201,
        [Path("/k/bastion.pem")],
    )


def test_an_include_loop_is_refused(tmp_path: Path) -> None:
    loop = tmp_path / "loop.conf"
    loop.write_text(f"Include {loop}\n")
    with pytest.raises(SshTargetError, match="^gpu: the ssh config includes files more than 16 deep"):
        SshTarget(host="gpu", ssh_config=loop).resolve()


# ---------------------------------------------------------------------------------------------------------
# every file the target names is a bounded read: a FIFO or a device is refused by name, never read or waited on.
# /dev/zero is resolved in a child limited to 2 GiB of address space, so a regression fails instead of filling the
# machine's memory; /dev/null reads as the empty file (`ssh -F /dev/null`).

CHILD_MEMORY = 2 * 1024**3


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def resolve_in_child(**fields: str) -> str:
    """``SshTarget(**fields).resolve()`` in a child process: "ok", or the SshTargetError's message."""
    code = (
        "import sys; from cosmos_assets.machines.ssh_target import SshTarget, SshTargetError\n"
        f"try:\n    SshTarget(**{fields!r}).resolve()\nexcept SshTargetError as e:\n    sys.exit(str(e))\nprint('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=_limit_memory,
    )
    return result.stdout.strip() if result.returncode == 0 else result.stderr.strip()


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)  # no writer: opening it for reading the usual way blocks for ever
    return path


def test_an_ssh_config_that_is_a_fifo_or_a_device_is_refused_naming_it(tmp_path: Path, fifo: Path) -> None:
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        said = resolve_in_child(host="gpu", ssh_config=str(path), known_hosts=str(tmp_path / "kh"))
        assert said.startswith(f"gpu: the ssh config {path} is {kind}"), said


def test_an_included_device_is_refused_naming_it(tmp_path: Path) -> None:
    config = _config(tmp_path, "Include /dev/zero\nHost gpu\n  HostName 10.0.0.5\n")
    said = resolve_in_child(host="gpu", ssh_config=str(config), known_hosts=str(tmp_path / "kh"))
    assert said.startswith("gpu: a file the ssh config includes /dev/zero is a character device"), said


def test_dev_null_is_the_empty_config_as_for_openssh(tmp_path: Path) -> None:
    r = SshTarget(host="gpu", ssh_config=Path("/dev/null"), known_hosts=Path("/dev/null")).resolve()
    assert (r.hostname, r.port, r.proxy_command, r.jump) == ("gpu", 22, None, None)
    assert r.openssh_argv()[:5] == ["ssh", "-p", "22", "-F", "/dev/null"]


def test_an_outsized_ssh_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SshTargetError, match="larger than 1048576 bytes"):
        target(tmp_path, "gpu", "Host gpu\n" + "#\n" * (600 * 1024)).resolve()


@pytest.mark.parametrize("which", ["known_hosts", "key_file"])
def test_a_known_hosts_or_key_file_that_is_not_a_regular_file_is_refused_before_paramiko_reads_it(
    tmp_path: Path, fifo: Path, which: str
) -> None:
    what = {"known_hosts": "the known_hosts file", "key_file": "the SSH key file"}[which]
    for path in (fifo, Path("/dev/zero")):
        fields = {
            "host": "gpu",
            "ssh_config": str(tmp_path / "none"),
            "known_hosts": str(tmp_path / "kh"),
            which: str(path),
        }
        said = resolve_in_child(**fields)
        assert said.startswith(f"gpu: {what} {path} is ") and "not a regular file" in said, said


def test_a_missing_known_hosts_is_still_fine_for_trust_on_first_use(tmp_path: Path) -> None:
    r = SshTarget(
        host="gpu", ssh_config=tmp_path / "none", known_hosts=tmp_path / "kh", trust_on_first_use=True
    ).resolve()
    assert r.known_hosts == tmp_path / "kh"


def test_an_ssh_config_path_the_system_cannot_take_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SshTargetError, match="^gpu: the ssh config .* cannot be used .*; fix the path$"):
        SshTarget(host="gpu", ssh_config=tmp_path / ("x" * 300), known_hosts=tmp_path / "kh").resolve()
