"""cosmos_assets.hosts.sftp against the real test sshd (the "remote" is this machine's disk)."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from cosmos_assets.hosts import sftp as sftp_mod
from cosmos_assets.hosts.sftp import (
    HostKeyChangedError,
    HostKeyUnknownError,
    SshSettings,
    TransferVerificationError,
    connect_ssh,
    download_tree,
    move_aside,
    resolve_target,
    run_remote,
    upload_files,
)
from tests.infra.sshd import SshServer, keygen

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def _settings(sshd: SshServer, tmp_path: Path, **changes: object) -> SshSettings:
    base = dict(host=sshd.host, port=sshd.port, user=sshd.user, key_file=sshd.key_path,
                known_hosts=sshd.known_hosts, ssh_config=tmp_path / "no-ssh-config", allow_agent=False)
    base.update(changes)
    return SshSettings(**base)


@pytest.fixture
def ssh(sshd: SshServer, tmp_path: Path) -> Iterator[paramiko.SSHClient]:
    client = connect_ssh(_settings(sshd, tmp_path))
    yield client
    client.close()


@pytest.fixture
def sftp(ssh: paramiko.SSHClient) -> Iterator[paramiko.SFTPClient]:
    client = ssh.open_sftp()
    yield client
    client.close()


def _file(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest() * (64 * 1024 // 32)
    path.write_bytes((block * (size // len(block) + 1))[:size])
    return path


def _fingerprint(pubkey_line: str) -> str:
    blob = base64.b64decode(pubkey_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# --------------------------------------------------------------------------- upload


def test_second_upload_sends_nothing_and_leaves_remote_untouched(sftp, tmp_path: Path) -> None:
    local = tmp_path / "local"
    a, b = _file(local / "a.bin", 3 * MB + 17, 1), _file(local / "sub" / "b.txt", 1000, 2)
    remote = tmp_path / "remote"
    items = [(a, str(remote / "videos" / "a.bin")), (b, str(remote / "prompts" / "b.txt"))]

    first = upload_files(sftp, items)
    assert (first.files_sent, first.files_skipped, first.bytes_sent) == (2, 0, a.stat().st_size + 1000)
    assert (remote / "videos" / "a.bin").read_bytes() == a.read_bytes()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in remote.rglob("*") if p.is_file()}

    second = upload_files(sftp, items)
    assert (second.files_sent, second.files_skipped, second.bytes_sent) == (0, 2, 0)
    assert all(f.skipped and f.rate_mb_s is None for f in second.files)
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in remote.rglob("*") if p.is_file()}
    assert after == before
    assert not list(remote.rglob("*.part"))


def test_changed_file_is_sent_again(sftp, tmp_path: Path) -> None:
    local = _file(tmp_path / "a.bin", 2 * MB, 1)
    remote = tmp_path / "remote" / "a.bin"
    upload_files(sftp, [(local, str(remote))])
    _file(local, 2 * MB, 99)  # same size, other content
    report = upload_files(sftp, [(local, str(remote))])
    assert (report.files_sent, report.bytes_sent) == (1, 2 * MB)
    assert remote.read_bytes() == local.read_bytes()


def test_interrupted_upload_resumes_from_a_matching_part(sftp, tmp_path: Path) -> None:
    local = _file(tmp_path / "big.bin", 5 * MB + 123, 3)
    remote = tmp_path / "remote" / "big.bin"
    remote.parent.mkdir()
    Path(str(remote) + ".part").write_bytes(local.read_bytes()[: 2 * MB])
    report = upload_files(sftp, [(local, str(remote))])
    item = report.files[0]
    assert (item.resumed_from, item.bytes_sent) == (2 * MB, 3 * MB + 123)
    assert remote.read_bytes() == local.read_bytes()
    assert not Path(str(remote) + ".part").exists()


def test_part_with_wrong_prefix_restarts(sftp, tmp_path: Path) -> None:
    local = _file(tmp_path / "big.bin", 4 * MB, 4)
    remote = tmp_path / "remote" / "big.bin"
    remote.parent.mkdir()
    Path(str(remote) + ".part").write_bytes(b"\0" * MB)
    item = upload_files(sftp, [(local, str(remote))]).files[0]
    assert (item.resumed_from, item.bytes_sent) == (0, 4 * MB)
    assert remote.read_bytes() == local.read_bytes()


def test_part_longer_than_local_file_restarts(sftp, tmp_path: Path) -> None:
    local = _file(tmp_path / "small.bin", MB, 5)
    remote = tmp_path / "remote" / "small.bin"
    remote.parent.mkdir()
    Path(str(remote) + ".part").write_bytes(local.read_bytes() + b"tail")
    item = upload_files(sftp, [(local, str(remote))]).files[0]
    assert (item.resumed_from, item.bytes_sent) == (0, MB)
    assert remote.read_bytes() == local.read_bytes()


def test_remote_corruption_between_write_and_verify_is_detected(sftp, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    local = _file(tmp_path / "shot_color.mp4", 2 * MB, 6)
    remote = tmp_path / "remote" / "shot_color.mp4"
    real_sync = sftp_mod._remote_sync

    def corrupting_sync(transport: paramiko.Transport, path: str) -> None:
        with open(path, "r+b") as f:  # the "remote" is this machine: flip a byte in the .part
            f.seek(MB)
            byte = f.read(1)
            f.seek(MB)
            f.write(bytes([byte[0] ^ 0xFF]))
        real_sync(transport, path)

    monkeypatch.setattr(sftp_mod, "_remote_sync", corrupting_sync)
    with pytest.raises(TransferVerificationError, match="shot_color.mp4"):
        upload_files(sftp, [(local, str(remote))])
    assert not remote.exists()
    assert not Path(str(remote) + ".part").exists()


def test_progress_reports_bytes_done_of_total(sftp, tmp_path: Path) -> None:
    a, b = _file(tmp_path / "a.bin", 3 * MB, 7), _file(tmp_path / "b.bin", MB, 8)
    calls: list[tuple[int, int]] = []
    upload_files(sftp, [(a, str(tmp_path / "r" / "a.bin")), (b, str(tmp_path / "r" / "b.bin"))],
                 progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (4 * MB, 4 * MB)
    assert all(total == 4 * MB for _, total in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_hostile_remote_path_is_quoted(sftp, ssh, tmp_path: Path) -> None:
    marker = Path("/tmp/pwned")
    if marker.exists():
        marker.unlink()
    local = _file(tmp_path / "x.bin", 1000, 9)
    hostile_dir = tmp_path / "remote" / "with space $(touch /tmp/pwned)" / "`touch /tmp/pwned`; touch /tmp/pwned"
    remote = hostile_dir / "it's a file $(touch /tmp/pwned).bin"
    assert upload_files(sftp, [(local, str(remote))]).files_sent == 1
    assert upload_files(sftp, [(local, str(remote))]).files_skipped == 1  # sha256sum ran on that path
    Path(str(remote) + ".part").write_bytes(local.read_bytes()[:10])
    remote.unlink()
    assert upload_files(sftp, [(local, str(remote))]).files[0].resumed_from == 10
    down = download_tree(ssh, str(hostile_dir), tmp_path / "down")
    assert down.files_sent == 1
    assert (tmp_path / "down" / remote.relative_to(hostile_dir)).read_bytes() == local.read_bytes()
    assert not marker.exists()


# --------------------------------------------------------------------------- download


def _remote_tree(root: Path) -> dict[str, bytes]:
    _file(root / "output.mp4", 3 * MB + 5, 10)
    _file(root / "output.txt", 50, 11)
    _file(root / "side files" / "depth_input_control_0.mp4", MB, 12)
    (root / "empty_file").write_bytes(b"")
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_download_into_fresh_dir_is_verified_and_complete(ssh, tmp_path: Path) -> None:
    remote = tmp_path / "remote" / "outputs" / "run-1"
    expected = _remote_tree(remote)
    local = tmp_path / "local" / "outputs" / "prompt_a"
    local.parent.mkdir(parents=True)
    report = download_tree(ssh, str(remote), local)
    got = {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    assert got == expected
    assert report.files_sent == 4
    assert report.bytes_sent == sum(len(v) for v in expected.values())
    assert all(f.sha256 == hashlib.sha256(expected[Path(f.local).relative_to(local).as_posix()]).hexdigest()
               for f in report.files)
    assert sorted(p.name for p in local.parent.iterdir()) == ["prompt_a"]  # no .partial left


def test_download_mismatch_leaves_nothing_behind(ssh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "remote"
    _remote_tree(remote)
    local = tmp_path / "local" / "prompt_a"
    local.parent.mkdir()
    monkeypatch.setattr(sftp_mod, "_sha256_result", lambda path, result: "0" * 64)
    with pytest.raises(TransferVerificationError, match="failed verification"):
        download_tree(ssh, str(remote), local)
    assert list(local.parent.iterdir()) == []


def test_existing_local_dir_is_not_overwritten(ssh, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    _remote_tree(remote)
    local = tmp_path / "local" / "prompt_a"
    local.mkdir(parents=True)
    (local / "output.mp4").write_bytes(b"earlier run")
    with pytest.raises(FileExistsError, match="move it aside"):
        download_tree(ssh, str(remote), local)
    assert (local / "output.mp4").read_bytes() == b"earlier run"
    assert sorted(p.name for p in local.parent.iterdir()) == ["prompt_a"]


def test_move_aside_then_download(ssh, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    expected = _remote_tree(remote)
    outputs = tmp_path / "outputs"
    local = outputs / "prompt_a"
    local.mkdir(parents=True)
    (local / "output.mp4").write_bytes(b"earlier run")
    moved = move_aside(local, outputs / ".previous", "20240101-000000-abcd")
    assert moved == outputs / ".previous" / "prompt_a" / "20240101-000000-abcd"
    assert (moved / "output.mp4").read_bytes() == b"earlier run"
    download_tree(ssh, str(remote), local)
    assert (local / "output.mp4").read_bytes() == expected["output.mp4"]
    same_name = tmp_path / "again" / "prompt_a"
    same_name.mkdir(parents=True)
    with pytest.raises(FileExistsError):  # that run_id was already moved aside: never overwritten
        move_aside(same_name, outputs / ".previous", "20240101-000000-abcd")
    assert (moved / "output.mp4").read_bytes() == b"earlier run"
    with pytest.raises(ValueError):
        move_aside(same_name, outputs / ".previous", "../escape")


# --------------------------------------------------------------------------- host keys and config


def test_unknown_host_is_refused_with_how_to_trust_it(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with pytest.raises(HostKeyUnknownError) as info:
        connect_ssh(_settings(sshd, tmp_path, known_hosts=known))
    message = str(info.value)
    assert f"ssh-keyscan -p {sshd.port} -t ssh-ed25519 127.0.0.1 >> {known}" in message
    assert _fingerprint(sshd.host_pubkey) in message
    assert "trust_on_first_use=True" in message
    assert known.read_text() == ""


def test_trust_on_first_use_records_the_key(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "fresh" / ".ssh" / "known_hosts"
    client = connect_ssh(_settings(sshd, tmp_path, known_hosts=known, trust_on_first_use=True))
    client.close()
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_pubkey}\n"
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    client = connect_ssh(_settings(sshd, tmp_path, known_hosts=known))  # now known without TOFU
    client.close()


def test_changed_host_key_is_refused_even_with_tofu(sshd: SshServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "otherkey", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other.split()[:2])}\n")
    before = known.read_text()
    with pytest.raises(HostKeyChangedError, match="HOST KEY CHANGED") as info:
        connect_ssh(_settings(sshd, tmp_path, known_hosts=known, trust_on_first_use=True))
    assert _fingerprint(sshd.host_pubkey) in str(info.value)
    assert known.read_text() == before


def test_ssh_config_alias_is_honoured(sshd: SshServer, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host gpu-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
                      f"  IdentityFile {sshd.key_path}\n")
    settings = SshSettings(host="gpu-box", ssh_config=config, known_hosts=sshd.known_hosts, allow_agent=False)
    target = resolve_target(settings)
    assert (target.hostname, target.port, target.user, target.key_files) == \
        ("127.0.0.1", sshd.port, "root", [sshd.key_path])
    client = connect_ssh(settings)
    try:
        assert run_remote(client.get_transport(), ["echo", "via alias"])[1] == "via alias\n"
    finally:
        client.close()


def test_default_ssh_config_and_known_hosts_come_from_home(sshd: SshServer, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(f"Host gpu-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                                          f"  User root\n  IdentityFile {sshd.key_path}\n")
    (home / ".ssh" / "known_hosts").write_text(sshd.known_hosts.read_text())
    monkeypatch.setenv("HOME", str(home))
    client = connect_ssh(SshSettings(host="gpu-box", allow_agent=False))
    try:
        assert run_remote(client.get_transport(), ["true"])[0] == 0
    finally:
        client.close()


def test_passphrase_protected_key_reads_passphrase_from_env(sshd: SshServer, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    secret = "correct horse battery staple"
    protected = tmp_path / "protected_key"
    protected.write_bytes(sshd.key_path.read_bytes())
    protected.chmod(0o600)
    os.system(f"ssh-keygen -q -p -N '{secret}' -P '' -f {protected} >/dev/null")
    monkeypatch.setenv("COSMOS_SSH_KEY_PASSPHRASE", secret)
    caplog.set_level("DEBUG")
    client = connect_ssh(_settings(sshd, tmp_path, key_file=protected))
    client.close()
    assert secret not in caplog.text
    monkeypatch.delenv("COSMOS_SSH_KEY_PASSPHRASE")
    with pytest.raises(paramiko.SSHException):
        connect_ssh(_settings(sshd, tmp_path, key_file=protected))
