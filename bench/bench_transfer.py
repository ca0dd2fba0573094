"""Transfer: ours (cosmos_assets.machines.sftp_transfer) vs OpenSSH ``scp``, 200 MB up and down, to a throwaway
sshd on 127.0.0.1, directly and through the latency proxy (about 20 ms each way).

Both sides pay their own connection set-up in every timed run (scp starts a new ssh each time; ours
connects through ``SshLink``). Ours also does what scp does not: sha256 verification at both ends, a
remote ``sync`` and an atomic rename; that work is inside its time. The file is random bytes, so
no compression could help either side. Runs are interleaved (ours, scp, ours, scp, ...).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.latency_proxy import latency_proxy
from cosmos_assets.files import HASH_BLOCK, hash_file
from cosmos_assets.machines import remote_hash, sftp_parallel, sftp_wire
from cosmos_assets.machines.sftp_download import download_tree
from cosmos_assets.machines.sftp_transfer import upload_files
from cosmos_assets.machines.ssh_connect import connect as connect_ssh
from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.machines.ssh_target import SshTarget

try:  # the repo's own throwaway-sshd helper (tests/infra/sshd.py), when run from the repo root
    from tests.infra.sshd import SshServer, start_sshd
except ImportError as exc:  # pragma: no cover - a fresh clone always has tests/
    raise ImportError(f"bench_transfer needs tests/infra/sshd.py (run from the repo root): {exc}") from exc

FILE_MB = 200
ONE_WAY_DELAY_S = 0.020
PARALLEL_CHANNELS = sftp_parallel.PARALLEL_CHANNELS  # what a fresh large upload uses


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
    phases: dict[str, dict[str, float]] = field(default_factory=dict)  # link -> phase -> seconds (diagnosis)

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


def _settings(server: SshServer, link: Link) -> SshTarget:
    return SshTarget(
        host="127.0.0.1",
        port=link.port,
        user=server.user,
        key_file=server.key_path,
        known_hosts=link.known_hosts,
        ssh_config=Path("/nonexistent"),
        allow_agent=False,
    )


def _scp_base(server: SshServer, link: Link) -> list[str]:
    return [
        "scp",
        "-q",
        "-o",
        f"UserKnownHostsFile={link.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-F",
        "/dev/null",
        "-P",
        str(link.port),
        "-i",
        str(server.key_path),
    ]


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ours_upload(server: SshServer, link: Link, local: Path, remote: str) -> float:
    def run() -> None:
        ssh = SshLink(_settings(server, link), "bench")
        try:
            report = upload_files(ssh, [(local, remote)])
            assert report.bytes_sent == local.stat().st_size, report
        finally:
            ssh.close()

    return _timed(run)


def scp_upload(server: SshServer, link: Link, local: Path, remote: str) -> float:
    cmd = _scp_base(server, link) + [str(local), f"{server.user}@127.0.0.1:{remote}"]
    return _timed(lambda: subprocess.run(cmd, check=True, capture_output=True))


def ours_download(server: SshServer, link: Link, remote_dir: str, local_dir: Path) -> float:
    def run() -> None:
        ssh = SshLink(_settings(server, link), "bench")
        try:
            download_tree(ssh, remote_dir, local_dir)
        finally:
            ssh.close()

    return _timed(run)


def scp_download(server: SshServer, link: Link, remote: str, local: Path) -> float:
    cmd = _scp_base(server, link) + [f"{server.user}@127.0.0.1:{remote}", str(local)]
    return _timed(lambda: subprocess.run(cmd, check=True, capture_output=True))


def _one_round(
    server: SshServer, link: Link, big: Path, remote_root: Path, work: Path, figures: TransferFigures
) -> None:
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


UNCHANGED_REPEATS = 3


def unchanged_upload(server: SshServer, link: Link, files: list[Path], remote_root: Path) -> dict:
    """Upload the inputs once, then again unchanged (``UNCHANGED_REPEATS`` times): median bytes and time.

    Also times, as a reference, one bare remote ``sha256sum`` over all the files in a single command.
    """
    items = [(f, str(remote_root / "inputs" / f.parent.name / f.name)) for f in files]
    settings = _settings(server, link)
    ssh = SshLink(settings, "bench")
    try:
        upload_files(ssh, items)
    finally:
        ssh.close()
    runs = []
    for _ in range(UNCHANGED_REPEATS):
        started = time.perf_counter()
        ssh = SshLink(settings, "bench")
        try:
            ssh.client()
            connected = time.perf_counter()
            report = upload_files(ssh, items)
            ended = time.perf_counter()
            batched = _timed(lambda ssh=ssh: ssh.exec(["sha256sum", "--", *[r for _, r in items]], timeout=600))
        finally:
            ssh.close()
        runs.append((ended - started, ended - connected, report.bytes_sent, report.files_skipped, batched))
    runs.sort()
    seconds, after_connect, sent, skipped, batched = runs[len(runs) // 2]
    return {
        "seconds": seconds,
        "seconds_after_connect": after_connect,
        "bytes_sent": max(r[2] for r in runs),
        "files_skipped": skipped,
        "files": len(items),
        "runs": [r[0] for r in runs],
        "one_batched_remote_sha256sum": batched,
    }


def _cipher(server: SshServer, link: Link) -> str:
    ssh = connect_ssh(_settings(server, link))
    try:
        return ssh.get_transport().remote_cipher
    finally:
        ssh.close()


def bench_transfer(
    work: Path, unchanged_files: list[Path], reps: int = 3, megabytes: int = FILE_MB, log: Callable[[str], None] = print
) -> TransferFigures:
    work.mkdir(parents=True, exist_ok=True)
    big = make_random_file(work / f"random_{megabytes}MB.bin", megabytes)
    figures = TransferFigures(file_bytes=big.stat().st_size, reps=reps)
    infra = Path(tempfile.mkdtemp(prefix="cosmos-bench-sshd-", dir="/tmp"))
    server = start_sshd(infra / "sshd")
    remote_root = infra / "remote"
    (remote_root / "down").mkdir(parents=True)
    os.link(big, remote_root / "down" / big.name) if _same_fs(big, remote_root) else shutil.copy(
        big, remote_root / "down" / big.name
    )
    try:
        direct = Link("direct", server.port, _known_hosts_for(server, server.port, infra / "kh_direct"))
        with latency_proxy("127.0.0.1", server.port, ONE_WAY_DELAY_S) as proxy:
            delayed = Link("20ms", proxy.port, _known_hosts_for(server, proxy.port, infra / "kh_proxy"))
            figures.cipher = _cipher(server, direct)
            for rep in range(reps):
                for link in (direct, delayed):
                    _one_round(server, link, big, remote_root, work, figures)
                    log(
                        f"transfer rep {rep + 1}/{reps} {link.name}: "
                        + ", ".join(
                            f"{k.split('/', 1)[1]} {v[-1]:.2f}s"
                            for k, v in figures.seconds.items()
                            if k.startswith(link.name)
                        )
                    )
            for link in (direct, delayed):
                figures.unchanged[link.name] = unchanged_upload(server, link, unchanged_files, remote_root)
                figures.phases[link.name] = phase_breakdown(server, link, big, remote_root, work)
                log(
                    f"transfer phases {link.name}: "
                    + ", ".join(f"{k} {v:.2f}s" for k, v in figures.phases[link.name].items())
                )
    finally:
        server.stop()
        shutil.rmtree(infra, ignore_errors=True)
    return figures


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


# ------------------------------------------------------------------------------------------ diagnosis


def _range_chunks(path: Path, lo: int, hi: int, step: int):
    with open(path, "rb") as f:
        f.seek(lo)
        left = hi - lo
        while left > 0:
            chunk = f.read(min(step, left))
            left -= len(chunk)
            yield chunk


def raw_parallel_put(ssh, local: Path, remote: str, channels: int) -> None:
    """Only the data phase of an upload: ``channels`` SFTP channels on one connection, each writing
    its own byte range of ``remote`` with sftp_wire's pipelined writer (each channel has its own
    server-side receive window). No hashing, no verification: the transfer phase alone."""
    size = local.stat().st_size
    clients = [ssh.open_sftp() for _ in range(channels)]
    with clients[0].open(remote, "wb"):
        pass
    bounds = [(size * i // channels, size * (i + 1) // channels) for i in range(channels)]
    errors: list[BaseException] = []

    def write_range(client, lo: int, hi: int) -> None:
        try:
            with client.open(remote, "r+b") as f:
                chunks = _range_chunks(local, lo, hi, sftp_wire.request_size(client))
                sftp_wire.pipelined_write(client, f, chunks, lo, sftp_parallel.Counter())
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=write_range, args=(c, lo, hi)) for c, (lo, hi) in zip(clients, bounds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    if errors:
        raise errors[0]


def raw_read(ssh, remote: str, size: int) -> None:
    """Only the data phase of a download: sftp_wire's pipelined reader, bytes dropped (no hash, no disk)."""
    client = ssh.open_sftp()
    with client.open(remote, "rb") as f:
        for _ in sftp_wire.pipelined_read(client, f, size):
            pass
    client.close()


def _ssh_true(server: SshServer, link: Link) -> None:
    """OpenSSH connecting and running ``true``: the connection set-up every scp run pays."""
    cmd = [
        "ssh",
        "-o",
        f"UserKnownHostsFile={link.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-F",
        "/dev/null",
        "-p",
        str(link.port),
        "-i",
        str(server.key_path),
        f"{server.user}@127.0.0.1",
        "true",
    ]
    subprocess.run(cmd, check=True, capture_output=True)


def _local_write_then_fsync(big: Path, target: Path) -> tuple[float, float]:
    """(seconds to write the file's bytes to a new local file, seconds to fsync it): the disk part of a
    download. The source is read into memory first, so only the writing is timed."""
    data = big.read_bytes()
    step = HASH_BLOCK
    with open(target, "wb") as dst:
        started = time.perf_counter()
        for at in range(0, len(data), step):
            dst.write(data[at : at + step])
        dst.flush()
        written = time.perf_counter()
        os.fsync(dst.fileno())
        return written - started, time.perf_counter() - written


def phase_breakdown(server: SshServer, link: Link, big: Path, remote_root: Path, work: Path) -> dict[str, float]:
    """Where ours spends its time: each part of an upload/download timed alone (one run each).

    Keys: ``connect`` (ours, connect_ssh), ``ssh connect`` (OpenSSH running ``true``: scp's set-up),
    ``put data, N channel(s)`` (data phase only), ``remote sync+sha256`` (the one verify command of an
    upload), ``get data`` (data phase only: no hash, no disk), ``remote sha256`` (what a download
    runs remotely beside the data), ``local sha256``, ``local write`` and ``local fsync`` (the download's
    writer-thread work and final fsync; the upload's local hash).
    """
    phases: dict[str, float] = {}
    target = remote_root / "phases" / big.name
    target.parent.mkdir(parents=True, exist_ok=True)
    phases["connect"] = _timed(lambda: connect_ssh(_settings(server, link)).close())
    phases["ssh connect"] = _timed(lambda: _ssh_true(server, link))
    ssh = connect_ssh(_settings(server, link))
    local_copy = work / "phases-local.bin"
    try:
        over = SshLink(_settings(server, link), "bench", connect_fn=lambda _target: ssh)  # commands on this connection
        for channels in (1, PARALLEL_CHANNELS):
            target.unlink(missing_ok=True)
            phases[f"put data, {channels} channel(s)"] = _timed(
                lambda channels=channels: raw_parallel_put(ssh, big, str(target), channels)
            )
            _check_same_size(target, big)
        phases["remote sync+sha256"] = _timed(lambda: remote_hash.sync_and_sha256(over, str(target)))
        phases["get data"] = _timed(lambda: raw_read(ssh, str(target), big.stat().st_size))
        phases["remote sha256"] = _timed(lambda: remote_hash.remote_sha256(over, str(target)))
        phases["local sha256"] = _timed(lambda: hash_file(big))
        phases["local write"], phases["local fsync"] = _local_write_then_fsync(big, local_copy)
    finally:
        ssh.close()
        target.unlink(missing_ok=True)
        local_copy.unlink(missing_ok=True)
    return phases
