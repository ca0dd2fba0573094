"""SSH connect, link and SFTP transfers (cosmos_assets.machines) against the real test sshd (the "remote" is this machine's disk)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from cosmos_assets.files import move_aside
from cosmos_assets.machines import remote_hash, sftp_download, sftp_parallel, sftp_wire
from cosmos_assets.machines import sftp_transfer as sftp_mod
from cosmos_assets.machines.sftp_download import download_tree
from cosmos_assets.machines.sftp_transfer import TransferVerificationError, upload_files
from cosmos_assets.machines.ssh_connect import HostKeyChangedError, HostKeyUnknownError, connect
from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.machines.ssh_target import SshTarget
from tests.infra.sshd import SshServer, keygen

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def _settings(sshd: SshServer, tmp_path: Path, **changes: object) -> SshTarget:
    base = dict(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.key_path,
        known_hosts=sshd.known_hosts,
        ssh_config=tmp_path / "no-ssh-config",
        allow_agent=False,
    )
    base.update(changes)
    return SshTarget(**base)


def run_remote(client: paramiko.SSHClient, argv: list[str]) -> tuple[int, str, str]:
    """One command over an already open client (no reconnect), through the link's exec."""
    link = SshLink(SshTarget(host="unused"), "test sshd", connect_fn=lambda _target: client)
    return link.exec(argv)


@pytest.fixture
def link(sshd: SshServer, tmp_path: Path) -> Iterator[SshLink]:
    """One verified link; the transfers open their SFTP channels and hashing commands on it."""
    link = SshLink(_settings(sshd, tmp_path), "test sshd")
    yield link
    link.close()


def _file(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest() * (64 * 1024 // 32)
    path.write_bytes((block * (size // len(block) + 1))[:size])
    return path


def _fingerprint(pubkey_line: str) -> str:
    blob = base64.b64decode(pubkey_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# --------------------------------------------------------------------------- upload


def test_second_upload_sends_nothing_and_leaves_remote_untouched(link, tmp_path: Path) -> None:
    local = tmp_path / "local"
    a, b = _file(local / "a.bin", 3 * MB + 17, 1), _file(local / "sub" / "b.txt", 1000, 2)
    remote = tmp_path / "remote"
    items = [(a, str(remote / "videos" / "a.bin")), (b, str(remote / "prompts" / "b.txt"))]

    first = upload_files(link, items)
    assert (first.files_sent, first.files_skipped, first.bytes_sent) == (2, 0, a.stat().st_size + 1000)
    assert (remote / "videos" / "a.bin").read_bytes() == a.read_bytes()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in remote.rglob("*") if p.is_file()}

    second = upload_files(link, items)
    assert (second.files_sent, second.files_skipped, second.bytes_sent) == (0, 2, 0)
    assert all(f.skipped and f.rate_mb_s is None for f in second.files)
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in remote.rglob("*") if p.is_file()}
    assert after == before
    assert not list(remote.rglob("*.part"))


def test_changed_file_is_sent_again(link, tmp_path: Path) -> None:
    local = _file(tmp_path / "a.bin", 2 * MB, 1)
    remote = tmp_path / "remote" / "a.bin"
    upload_files(link, [(local, str(remote))])
    _file(local, 2 * MB, 99)  # same size, other content
    report = upload_files(link, [(local, str(remote))])
    assert (report.files_sent, report.bytes_sent) == (1, 2 * MB)
    assert remote.read_bytes() == local.read_bytes()


def test_interrupted_upload_resumes_from_a_matching_part(link, tmp_path: Path) -> None:
    local = _file(tmp_path / "big.bin", 5 * MB + 123, 3)
    remote = tmp_path / "remote" / "big.bin"
    remote.parent.mkdir()
    Path(str(remote) + ".part").write_bytes(local.read_bytes()[: 2 * MB])
    report = upload_files(link, [(local, str(remote))])
    item = report.files[0]
    assert (item.resumed_from, item.bytes_sent) == (2 * MB, 3 * MB + 123)
    assert remote.read_bytes() == local.read_bytes()
    assert not Path(str(remote) + ".part").exists()


def test_part_with_wrong_prefix_restarts(link, tmp_path: Path) -> None:
    local = _file(tmp_path / "big.bin", 4 * MB, 4)
    remote = tmp_path / "remote" / "big.bin"
    remote.parent.mkdir()
    Path(str(remote) + ".part").write_bytes(b"\0" * MB)
    item = upload_files(link, [(local, str(remote))]).files[0]
    assert (item.resumed_from, item.bytes_sent) == (0, 4 * MB)
    assert remote.read_bytes() == local.read_bytes()


def test_part_longer_than_local_file_restarts(link, tmp_path: Path) -> None:
    local = _file(tmp_path / "small.bin", MB, 5)
    remote = tmp_path / "remote" / "small.bin"
    remote.parent.mkdir()
    Path(str(remote) + ".part").write_bytes(local.read_bytes() + b"tail")
    item = upload_files(link, [(local, str(remote))]).files[0]
    assert (item.resumed_from, item.bytes_sent) == (0, MB)
    assert remote.read_bytes() == local.read_bytes()


def test_remote_corruption_between_write_and_verify_is_detected(
    link, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _file(tmp_path / "shot_color.mp4", 2 * MB, 6)
    remote = tmp_path / "remote" / "shot_color.mp4"
    real_sync_and_sha256 = sftp_mod.sync_and_sha256

    def corrupting_sync_and_sha256(link: SshLink, path: str, *waiting) -> str:
        with open(path, "r+b") as f:  # the "remote" is this machine: flip a byte in the .part
            f.seek(MB)
            byte = f.read(1)
            f.seek(MB)
            f.write(bytes([byte[0] ^ 0xFF]))
        return real_sync_and_sha256(link, path, *waiting)

    monkeypatch.setattr(sftp_mod, "sync_and_sha256", corrupting_sync_and_sha256)
    with pytest.raises(TransferVerificationError, match="shot_color.mp4"):
        upload_files(link, [(local, str(remote))])
    assert not remote.exists()
    assert not Path(str(remote) + ".part").exists()


def test_progress_reports_bytes_done_of_total(link, tmp_path: Path) -> None:
    a, b = _file(tmp_path / "a.bin", 3 * MB, 7), _file(tmp_path / "b.bin", MB, 8)
    calls: list[tuple[int, int]] = []
    upload_files(
        link,
        [(a, str(tmp_path / "r" / "a.bin")), (b, str(tmp_path / "r" / "b.bin"))],
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (4 * MB, 4 * MB)
    assert all(total == 4 * MB for _, total in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_hostile_remote_path_is_quoted(link, tmp_path: Path) -> None:
    marker = Path("/tmp/pwned")
    if marker.exists():
        marker.unlink()
    local = _file(tmp_path / "x.bin", 1000, 9)
    hostile_dir = tmp_path / "remote" / "with space $(touch /tmp/pwned)" / "`touch /tmp/pwned`; touch /tmp/pwned"
    remote = hostile_dir / "it's a file $(touch /tmp/pwned).bin"
    assert upload_files(link, [(local, str(remote))]).files_sent == 1
    assert upload_files(link, [(local, str(remote))]).files_skipped == 1  # sha256sum ran on that path
    Path(str(remote) + ".part").write_bytes(local.read_bytes()[:10])
    remote.unlink()
    assert upload_files(link, [(local, str(remote))]).files[0].resumed_from == 10
    down = download_tree(link, str(hostile_dir), tmp_path / "down")
    assert down.files_sent == 1
    assert (tmp_path / "down" / remote.relative_to(hostile_dir)).read_bytes() == local.read_bytes()
    assert not marker.exists()


@pytest.fixture
def small_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parallel upload path for files of a few MiB (1 MiB blocks), so tests stay small."""
    monkeypatch.setattr(sftp_mod, "PARALLEL_MIN_BYTES", 4 * MB)
    monkeypatch.setattr(sftp_parallel, "PARALLEL_BLOCK", MB)


def _spy(monkeypatch: pytest.MonkeyPatch, name: str, owner: object = sftp_mod) -> list[tuple]:
    calls: list[tuple] = []
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_large_fresh_upload_goes_over_several_channels_and_is_exact(
    link, tmp_path: Path, small_parallel, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _file(tmp_path / "big.bin", 9 * MB + 123, 13)
    remote = tmp_path / "remote" / "deep" / "big.bin"
    parallel = _spy(monkeypatch, "send_part_parallel")
    writers: set[int] = set()
    real_write = sftp_wire.pipelined_write_at

    def counting_write(client, *args, **kwargs):
        writers.add(id(client))
        return real_write(client, *args, **kwargs)

    monkeypatch.setattr(sftp_wire, "pipelined_write_at", counting_write)
    calls: list[tuple[int, int]] = []
    report = upload_files(link, [(local, str(remote))], progress=lambda d, t: calls.append((d, t)))
    item = report.files[0]
    assert len(parallel) == 1 and len(writers) == sftp_parallel.PARALLEL_CHANNELS
    assert (item.bytes_sent, item.resumed_from, item.skipped) == (local.stat().st_size, 0, False)
    assert item.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert remote.read_bytes() == local.read_bytes()
    assert not Path(str(remote) + ".part").exists()
    assert calls[-1] == (local.stat().st_size, local.stat().st_size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert upload_files(link, [(local, str(remote))]).files_skipped == 1


def test_a_resume_stays_on_one_channel(link, tmp_path: Path, small_parallel, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _file(tmp_path / "big.bin", 6 * MB, 14)
    remote = tmp_path / "remote" / "big.bin"
    remote.parent.mkdir()
    Path(str(remote) + ".part").write_bytes(local.read_bytes()[:MB])
    parallel = _spy(monkeypatch, "send_part_parallel")
    item = upload_files(link, [(local, str(remote))]).files[0]
    assert (item.resumed_from, item.bytes_sent, len(parallel)) == (MB, 5 * MB, 0)
    assert remote.read_bytes() == local.read_bytes()


def test_parallel_upload_corrupted_before_verify_is_detected(
    link, tmp_path: Path, small_parallel, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _file(tmp_path / "big.bin", 5 * MB + 1, 15)
    remote = tmp_path / "remote" / "big.bin"
    real = sftp_mod.sync_and_sha256

    def corrupting(link: SshLink, path: str, *waiting) -> str:
        with open(path, "r+b") as f:  # a byte in the last block
            f.seek(5 * MB - 7)
            byte = f.read(1)
            f.seek(5 * MB - 7)
            f.write(bytes([byte[0] ^ 0x01]))
        return real(link, path, *waiting)

    monkeypatch.setattr(sftp_mod, "sync_and_sha256", corrupting)
    parallel = _spy(monkeypatch, "send_part_parallel")
    with pytest.raises(TransferVerificationError, match="big.bin"):
        upload_files(link, [(local, str(remote))])
    assert len(parallel) == 1
    assert not remote.exists() and not Path(str(remote) + ".part").exists()


def _failing_writes(monkeypatch: pytest.MonkeyPatch, after_pieces: int, fail) -> None:
    """Make the parallel writers call fail() once `after_pieces` pieces were sent over all channels."""
    real = sftp_wire.pipelined_write_at
    lock = threading.Lock()
    sent = [0]

    def wrapped(client, handle, pieces, throttle, acked=None):
        def counted():
            for piece in pieces:
                with lock:
                    sent[0] += 1
                    due = sent[0] == after_pieces
                if due:
                    fail(client)
                yield piece

        return real(client, handle, counted(), throttle, acked)

    monkeypatch.setattr(sftp_wire, "pipelined_write_at", wrapped)


def test_failed_parallel_upload_keeps_the_landed_prefix_and_resumes(
    link, tmp_path: Path, small_parallel, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _file(tmp_path / "big.bin", 12 * MB + 5, 16)
    remote = tmp_path / "remote" / "big.bin"
    part = Path(str(remote) + ".part")

    def local_read_fails(_client) -> None:
        raise OSError("injected: local disk error")

    _failing_writes(monkeypatch, 30, local_read_fails)  # ~7 of 12 MiB handed out by then
    with pytest.raises(OSError, match="injected"):
        upload_files(link, [(local, str(remote))])
    assert not remote.exists()
    kept = part.read_bytes()
    assert 0 < len(kept) < local.stat().st_size
    assert kept == local.read_bytes()[: len(kept)]  # a contiguous prefix: no holes left in the .part

    monkeypatch.undo()
    item = upload_files(link, [(local, str(remote))]).files[0]
    assert (item.resumed_from, item.bytes_sent) == (len(kept), local.stat().st_size - len(kept))
    assert remote.read_bytes() == local.read_bytes()
    assert not part.exists()


def test_connection_lost_mid_parallel_upload_then_next_upload_is_exact(
    sshd: SshServer, tmp_path: Path, small_parallel, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _file(tmp_path / "big.bin", 12 * MB + 5, 17)
    remote = tmp_path / "remote" / "big.bin"
    first = SshLink(_settings(sshd, tmp_path), "test sshd")
    try:
        _failing_writes(monkeypatch, 30, lambda client: client.get_channel().get_transport().close())
        with pytest.raises(Exception):  # noqa: B017 - whichever error paramiko raises for a dropped link
            upload_files(first, [(local, str(remote))])
    finally:
        first.close()
    monkeypatch.undo()
    assert not remote.exists()
    again = SshLink(_settings(sshd, tmp_path), "test sshd")
    try:
        item = upload_files(again, [(local, str(remote))]).files[0]
    finally:
        again.close()
    assert item.resumed_from + item.bytes_sent == local.stat().st_size
    assert remote.read_bytes() == local.read_bytes()
    assert not Path(str(remote) + ".part").exists()


def test_skip_check_is_one_remote_command_for_all_files(link, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "local"
    files = [_file(local / f"f{i}.bin", (i + 1) * 100_000 + i, 20 + i) for i in range(5)]
    files.append(_file(local / "empty.txt", 0, 0))
    remote = tmp_path / "remote"
    items = [(f, str(remote / "in" / f.name)) for f in files]
    upload_files(link, items)

    commands = _spy(monkeypatch, "start", owner=link)
    second = upload_files(link, items)
    assert (second.files_sent, second.files_skipped, second.bytes_sent) == (0, len(files), 0)
    assert len(commands) == 1
    assert [f.sha256 for f in second.files] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]

    _file(files[2], files[2].stat().st_size, 99)  # same size, other content
    (remote / "in" / files[4].name).write_bytes(b"x")  # remote copy of another one differs in size
    third = upload_files(link, items)
    assert [f.skipped for f in third.files] == [True, True, False, True, False, True]
    assert third.bytes_sent == files[2].stat().st_size + files[4].stat().st_size
    for f, r in items:
        assert Path(r).read_bytes() == f.read_bytes()


def test_skip_check_with_missing_or_non_file_remotes(link, tmp_path: Path) -> None:
    a = _file(tmp_path / "a.bin", 1000, 30)
    remote = tmp_path / "remote"
    (remote / "b.bin").mkdir(parents=True)  # a directory where a file would go
    assert remote_hash.same_remote_files(link, [(a, str(remote / "a.bin")), (a, str(remote / "b.bin"))]) == [None, None]
    shutil.copy(a, remote / "a.bin")
    assert remote_hash.same_remote_files(link, [(a, str(remote / "a.bin"))]) == [
        hashlib.sha256(a.read_bytes()).hexdigest()
    ]


@pytest.mark.parametrize("with_openssl", [True, False])
def test_remote_hash_scripts_with_and_without_openssl(tmp_path: Path, with_openssl: bool) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sha256sum", "sync", "wc", "printf", "echo") + (("openssl",) if with_openssl else ()):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_dir)}
    f = _file(tmp_path / "-odd name $(x).bin", 300_000, 31)
    digest = hashlib.sha256(f.read_bytes()).hexdigest()

    def run(script: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", "-c", script, "sh", *args],
            env=env,
            capture_output=True,
            text=True,
            executable=shutil.which("sh"),
            input=stdin,
        )

    assert run(remote_hash.SHA256_SH, str(f)).stdout == digest + "\n"
    assert run(remote_hash.SYNC_SHA256_SH, str(f), stdin="go\n").stdout == digest + "\n"
    never_told = run(remote_hash.SYNC_SHA256_SH, str(f))  # the upload failed before "go": no hash
    assert (never_told.returncode, never_told.stdout) == (3, "")
    assert run(remote_hash.SHA256_SH, str(tmp_path / "missing")).returncode != 0
    out = run(
        remote_hash.SAME_SIZE_SHA256_SH, str(f.stat().st_size), str(f), "5", str(f), "1", str(tmp_path / "missing")
    ).stdout
    assert out.split("\n") == ["=", "-", "-", digest, "-", "-", ""]


# --------------------------------------------------------------------------- download


def _remote_tree(root: Path) -> dict[str, bytes]:
    _file(root / "output.mp4", 3 * MB + 5, 10)
    _file(root / "output.txt", 50, 11)
    _file(root / "side files" / "depth_input_control_0.mp4", MB, 12)
    (root / "empty_file").write_bytes(b"")
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_download_into_fresh_dir_is_verified_and_complete(link, tmp_path: Path) -> None:
    remote = tmp_path / "remote" / "outputs" / "run-1"
    expected = _remote_tree(remote)
    local = tmp_path / "local" / "outputs" / "prompt_a"
    local.parent.mkdir(parents=True)
    report = download_tree(link, str(remote), local)
    got = {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    assert got == expected
    assert report.files_sent == 4
    assert report.bytes_sent == sum(len(v) for v in expected.values())
    assert all(
        f.sha256 == hashlib.sha256(expected[Path(f.local).relative_to(local).as_posix()]).hexdigest()
        for f in report.files
    )
    assert sorted(p.name for p in local.parent.iterdir()) == ["prompt_a"]  # no .partial left


def test_download_mismatch_leaves_nothing_behind(link, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "remote"
    _remote_tree(remote)
    local = tmp_path / "local" / "prompt_a"
    local.parent.mkdir()
    monkeypatch.setattr(sftp_download, "sha256_result", lambda path, result: "0" * 64)
    with pytest.raises(TransferVerificationError, match="failed verification"):
        download_tree(link, str(remote), local)
    assert list(local.parent.iterdir()) == []


def test_existing_local_dir_is_not_overwritten(link, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    _remote_tree(remote)
    local = tmp_path / "local" / "prompt_a"
    local.mkdir(parents=True)
    (local / "output.mp4").write_bytes(b"earlier run")
    with pytest.raises(FileExistsError, match="move it aside"):
        download_tree(link, str(remote), local)
    assert (local / "output.mp4").read_bytes() == b"earlier run"
    assert sorted(p.name for p in local.parent.iterdir()) == ["prompt_a"]


def test_move_aside_then_download(link, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    expected = _remote_tree(remote)
    outputs = tmp_path / "outputs"
    local = outputs / "prompt_a"
    local.mkdir(parents=True)
    (local / "output.mp4").write_bytes(b"earlier run")
    moved = move_aside(local, outputs / ".previous", "20240101-000000-abcd")
    assert moved == outputs / ".previous" / "prompt_a" / "20240101-000000-abcd"
    assert (moved / "output.mp4").read_bytes() == b"earlier run"
    download_tree(link, str(remote), local)
    assert (local / "output.mp4").read_bytes() == expected["output.mp4"]
    same_name = tmp_path / "again" / "prompt_a"
    same_name.mkdir(parents=True)
    # that run_id was already moved aside: never overwritten (files.move_aside, the one move-aside, gives the
    # second folder a suffixed name instead of failing)
    again = move_aside(same_name, outputs / ".previous", "20240101-000000-abcd")
    assert again != moved and again.parent == moved.parent and again.name.startswith("20240101-000000-abcd_")
    assert (moved / "output.mp4").read_bytes() == b"earlier run"
    with pytest.raises(ValueError):
        move_aside(same_name, outputs / ".previous", "../escape")


# --------------------------------------------------------------------------- host keys and config


def test_unknown_host_is_refused_with_how_to_trust_it(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with pytest.raises(HostKeyUnknownError) as info:
        connect(_settings(sshd, tmp_path, known_hosts=known))
    message = str(info.value)
    assert f"ssh-keyscan -p {sshd.port} -t ssh-ed25519 127.0.0.1 >> {known}" in message
    assert _fingerprint(sshd.host_pubkey) in message
    assert "trust_on_first_use=True" in message
    assert known.read_text() == ""


def test_trust_on_first_use_records_the_key(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "fresh" / ".ssh" / "known_hosts"
    client = connect(_settings(sshd, tmp_path, known_hosts=known, trust_on_first_use=True))
    client.close()
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_pubkey}\n"
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    client = connect(_settings(sshd, tmp_path, known_hosts=known))  # now known without TOFU
    client.close()


def test_changed_host_key_is_refused_even_with_tofu(sshd: SshServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "otherkey", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other.split()[:2])}\n")
    before = known.read_text()
    with pytest.raises(HostKeyChangedError, match="HOST KEY CHANGED") as info:
        connect(_settings(sshd, tmp_path, known_hosts=known, trust_on_first_use=True))
    assert _fingerprint(sshd.host_pubkey) in str(info.value)
    assert known.read_text() == before


def test_ssh_config_alias_is_honoured(sshd: SshServer, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host gpu-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n  IdentityFile {sshd.key_path}\n"
    )
    settings = SshTarget(host="gpu-box", ssh_config=config, known_hosts=sshd.known_hosts, allow_agent=False)
    target = settings.resolve()
    assert (target.hostname, target.port, target.user, target.key_files) == (
        "127.0.0.1",
        sshd.port,
        "root",
        [sshd.key_path],
    )
    client = connect(settings)
    try:
        assert run_remote(client, ["echo", "via alias"])[1] == "via alias\n"
    finally:
        client.close()


def test_default_ssh_config_and_known_hosts_come_from_home(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host gpu-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n  IdentityFile {sshd.key_path}\n"
    )
    (home / ".ssh" / "known_hosts").write_text(sshd.known_hosts.read_text())
    monkeypatch.setenv("HOME", str(home))
    client = connect(SshTarget(host="gpu-box", allow_agent=False))
    try:
        assert run_remote(client, ["true"])[0] == 0
    finally:
        client.close()


def test_passphrase_protected_key_reads_passphrase_from_env(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "correct horse battery staple"
    protected = tmp_path / "protected_key"
    protected.write_bytes(sshd.key_path.read_bytes())
    protected.chmod(0o600)
    os.system(f"ssh-keygen -q -p -N '{secret}' -P '' -f {protected} >/dev/null")
    monkeypatch.setenv("COSMOS_SSH_KEY_PASSPHRASE", secret)
    caplog.set_level("DEBUG")
    client = connect(_settings(sshd, tmp_path, key_file=protected))
    client.close()
    assert secret not in caplog.text
    monkeypatch.delenv("COSMOS_SSH_KEY_PASSPHRASE")
    with pytest.raises(paramiko.SSHException):
        connect(_settings(sshd, tmp_path, key_file=protected))
