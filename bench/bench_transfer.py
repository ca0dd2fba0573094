"""Transfer: ours (cosmos_assets.hosts.sftp) vs OpenSSH ``scp``, 200 MB up and down, to a throwaway
sshd on 127.0.0.1, directly and through the latency proxy (about 20 ms each way).

Both sides pay their own connection set-up in every timed run (scp starts a new ssh each time; ours
calls ``connect_ssh``). Ours also does what scp does not: sha256 verification at both ends, a
remote ``sync`` and an atomic rename; that work is inside its time. The file is random bytes, so
no compression could help either side. Runs are interleaved (ours, scp, ours, scp, ...).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.latency_proxy import latency_proxy
from cosmos_assets.hosts.sftp import SshSettings, connect_ssh, download_tree, upload_files

try:  # the repo's own throwaway-sshd helper (tests/infra/sshd.py), when run from the repo root
    from tests.infra.sshd import SshServer, start_sshd
except ImportError as exc:  # pragma: no cover - a fresh clone always has tests/
    raise ImportError(f"bench_transfer needs tests/infra/sshd.py (run from the repo root): {exc}") from exc

FILE_MB = 200
ONE_WAY_DELAY_S = 0.020


@dataclass
class Link:
    """Where a client connects: the sshd itself, or the proxy in front of it."""

    name: str
    port: int
    known_hosts: Path


@dataclass
class TransferFigures:
    file_bytes: int
    reps: int
    seconds: dict[str, list[float]] = field(default_factory=dict)  # "<link>/<way>/<tool>" -> runs
    unchanged: dict[str, dict] = field(default_factory=dict)  # link -> {seconds, bytes_sent, files_skipped}
    cipher: str = ""

    def median(self, key: str) -> float:
        return statistics.median(self.seconds[key])

    def rate_mb_s(self, key: str) -> float:
        return self.file_bytes / self.median(key) / 1e6

    def ratio(self, link: str, way: str) -> float:
        """Our throughput / scp's throughput (> 1: ours faster)."""
        return self.median(f"{link}/{way}/scp") / self.median(f"{link}/{way}/ours")


def make_random_file(path: Path, megabytes: int) -> Path:
    if path.exists() and path.stat().st_size == megabytes * 1_000_000:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(1_000_000))
    return path


def _known_hosts_for(server: SshServer, port: int, path: Path) -> Path:
    path.write_text(f"[127.0.0.1]:{port} {server.host_pubkey}\n")
    return path


def _settings(server: SshServer, link: Link) -> SshSettings:
    return SshSettings(host="127.0.0.1", port=link.port, user=server.user, key_file=server.key_path,
                       known_hosts=link.known_hosts, ssh_config=Path("/nonexistent"), allow_agent=False)


def _scp_base(server: SshServer, link: Link) -> list[str]:
    return ["scp", "-q", "-o", f"UserKnownHostsFile={link.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-F", "/dev/null", "-P", str(link.port), "-i", str(server.key_path)]


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ours_upload(server: SshServer, link: Link, local: Path, remote: str) -> float:
    def run() -> None:
        ssh = connect_ssh(_settings(server, link))
        try:
            sftp = ssh.open_sftp()
            report = upload_files(sftp, [(local, remote)])
            assert report.bytes_sent == local.stat().st_size, report
        finally:
            ssh.close()
    return _timed(run)


def scp_upload(server: SshServer, link: Link, local: Path, remote: str) -> float:
    cmd = _scp_base(server, link) + [str(local), f"{server.user}@127.0.0.1:{remote}"]
    return _timed(lambda: subprocess.run(cmd, check=True, capture_output=True))


def ours_download(server: SshServer, link: Link, remote_dir: str, local_dir: Path) -> float:
    def run() -> None:
        ssh = connect_ssh(_settings(server, link))
        try:
            download_tree(ssh, remote_dir, local_dir)
        finally:
            ssh.close()
    return _timed(run)


def scp_download(server: SshServer, link: Link, remote: str, local: Path) -> float:
    cmd = _scp_base(server, link) + [f"{server.user}@127.0.0.1:{remote}", str(local)]
    return _timed(lambda: subprocess.run(cmd, check=True, capture_output=True))


def _one_round(server: SshServer, link: Link, big: Path, remote_root: Path, work: Path,
               figures: TransferFigures) -> None:
    """One interleaved round at one latency: up ours/scp, down ours/scp; every copy is fresh."""
    up_target = remote_root / "up" / big.name
    down_source_dir = remote_root / "down"
    for tool, fn in (("ours", ours_upload), ("scp", scp_upload)):
        up_target.unlink(missing_ok=True)
        up_target.parent.mkdir(parents=True, exist_ok=True)
        figures.seconds.setdefault(f"{link.name}/upload/{tool}", []).append(fn(server, link, big, str(up_target)))
        _check_same_size(up_target, big)
    for tool in ("ours", "scp"):
        target = work / f"down-{tool}"
        shutil.rmtree(target, ignore_errors=True)
        if tool == "ours":
            seconds = ours_download(server, link, str(down_source_dir), target)
        else:
            target.mkdir(parents=True)
            seconds = scp_download(server, link, str(down_source_dir / big.name), target / big.name)
        figures.seconds.setdefault(f"{link.name}/download/{tool}", []).append(seconds)
        _check_same_size(target / big.name, big)
        shutil.rmtree(target, ignore_errors=True)


def _check_same_size(path: Path, reference: Path) -> None:
    if path.stat().st_size != reference.stat().st_size:
        raise RuntimeError(f"{path} has {path.stat().st_size} bytes, expected {reference.stat().st_size}")


def unchanged_upload(server: SshServer, link: Link, files: list[Path], remote_root: Path) -> dict:
    """Upload the inputs once, then again unchanged: the second upload's bytes and time."""
    items = [(f, str(remote_root / "inputs" / f.parent.name / f.name)) for f in files]
    settings = _settings(server, link)
    ssh = connect_ssh(settings)
    try:
        upload_files(ssh.open_sftp(), items)
    finally:
        ssh.close()
    started = time.perf_counter()
    ssh = connect_ssh(settings)
    try:
        connected = time.perf_counter()
        report = upload_files(ssh.open_sftp(), items)
    finally:
        ssh.close()
    ended = time.perf_counter()
    return {"seconds": ended - started, "seconds_after_connect": ended - connected,
            "bytes_sent": report.bytes_sent, "files_skipped": report.files_skipped, "files": len(items)}


def _cipher(server: SshServer, link: Link) -> str:
    ssh = connect_ssh(_settings(server, link))
    try:
        return ssh.get_transport().remote_cipher
    finally:
        ssh.close()


def bench_transfer(work: Path, unchanged_files: list[Path], reps: int = 3, megabytes: int = FILE_MB,
                   log: Callable[[str], None] = print) -> TransferFigures:
    work.mkdir(parents=True, exist_ok=True)
    big = make_random_file(work / f"random_{megabytes}MB.bin", megabytes)
    figures = TransferFigures(file_bytes=big.stat().st_size, reps=reps)
    infra = Path(tempfile.mkdtemp(prefix="cosmos-bench-sshd-", dir="/tmp"))
    server = start_sshd(infra / "sshd")
    remote_root = infra / "remote"
    (remote_root / "down").mkdir(parents=True)
    os.link(big, remote_root / "down" / big.name) if _same_fs(big, remote_root) else shutil.copy(big, remote_root / "down" / big.name)
    try:
        direct = Link("direct", server.port, _known_hosts_for(server, server.port, infra / "kh_direct"))
        with latency_proxy("127.0.0.1", server.port, ONE_WAY_DELAY_S) as proxy:
            delayed = Link("20ms", proxy.port, _known_hosts_for(server, proxy.port, infra / "kh_proxy"))
            figures.cipher = _cipher(server, direct)
            for rep in range(reps):
                for link in (direct, delayed):
                    _one_round(server, link, big, remote_root, work, figures)
                    log(f"transfer rep {rep + 1}/{reps} {link.name}: " + ", ".join(
                        f"{k.split('/', 1)[1]} {v[-1]:.2f}s" for k, v in figures.seconds.items() if k.startswith(link.name)))
            for link in (direct, delayed):
                figures.unchanged[link.name] = unchanged_upload(server, link, unchanged_files, remote_root)
    finally:
        server.stop()
        shutil.rmtree(infra, ignore_errors=True)
    return figures


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev
