"""The test infrastructure itself: sshd with host-key checks, the private engine over SSH, GPUs."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import docker
import paramiko
import pytest

from cosmos_assets.machines.ssh_connect import connect as connect_ssh
from cosmos_assets.machines.ssh_link import SshLink
from cosmos_assets.machines.ssh_target import SshTarget
from tests.infra.docker_ssh import docker_client_over_ssh
from tests.infra.dockerd import DockerDaemon
from tests.infra.nvidia import set_fake_gpu_count
from tests.infra.sshd import SshServer

pytestmark = pytest.mark.integration


def _paramiko_client(sshd: SshServer, known_hosts: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd.host,
        port=sshd.port,
        username=sshd.user,
        key_filename=str(sshd.key_path),
        look_for_keys=False,
        allow_agent=False,
        timeout=20,
    )
    return client


def _exec(client: paramiko.SSHClient, command: str) -> str:
    _stdin, stdout, _stderr = client.exec_command(command)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, out
    return out


def _settings(sshd: SshServer, tmp_path: Path) -> SshTarget:
    return SshTarget(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.key_path,
        known_hosts=sshd.known_hosts,
        ssh_config=tmp_path / "no-ssh-config",
        allow_agent=False,
    )


def test_sshd_accepts_user_key_with_host_key_verification(sshd: SshServer) -> None:
    assert sshd.known_hosts.read_text().strip() == f"[127.0.0.1]:{sshd.port} {sshd.host_pubkey}"
    client = _paramiko_client(sshd, sshd.known_hosts)
    try:
        assert _exec(client, "echo hello; id -u").split() == ["hello", "0"]
    finally:
        client.close()


def test_sshd_refused_when_known_hosts_lacks_its_key(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _paramiko_client(sshd, empty)


def test_sessions_see_private_engine_and_fake_gpus(
    sshd: SshServer, dockerd: DockerDaemon, fake_gpu_bin, tmp_path: Path
) -> None:
    link = SshLink(_settings(sshd, tmp_path), "test sshd")
    try:
        code, out, _ = link.exec(["sh", "-c", "echo $DOCKER_HOST"])
        assert (code, out.strip()) == (0, dockerd.docker_host)
        code, out, _ = link.exec(["nvidia-smi", "-L"])
        assert code == 0
        assert [line.split(":")[0] for line in out.splitlines()] == [f"GPU {i}" for i in range(fake_gpu_bin.gpus)]
        set_fake_gpu_count(fake_gpu_bin.bin_dir, 4)
        try:
            _, out, _ = link.exec(["nvidia-smi", "-L"])
            assert len(out.splitlines()) == 4
        finally:
            set_fake_gpu_count(fake_gpu_bin.bin_dir, fake_gpu_bin.gpus)
    finally:
        link.close()


def test_kill_sessions_drops_links_but_daemon_survives(sshd: SshServer, tmp_path: Path) -> None:
    client = connect_ssh(_settings(sshd, tmp_path))
    try:
        assert _exec(client, "true") == ""
        assert sshd.kill_sessions() >= 1
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            stdin, stdout, _ = client.exec_command("true", timeout=10)  # the old connection: no reconnect
            stdout.channel.recv_exit_status()
            stdout.read()
    finally:
        client.close()
    again = SshLink(_settings(sshd, tmp_path), "test sshd")
    try:
        assert again.exec(["echo", "back"])[1].strip() == "back"
    finally:
        again.close()


def _write_ssh_home(home: Path, sshd: SshServer, known_hosts_text: str) -> None:
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    (ssh_dir / "config").write_text(f"Host {sshd.host}\n  IdentityFile {sshd.key_path}\n")
    (ssh_dir / "known_hosts").write_text(known_hosts_text)


def test_docker_sdk_over_ssh_with_temp_home(
    sshd: SshServer, dockerd: DockerDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker-py reads ~/.ssh/config and ~/.ssh/known_hosts: a test HOME supplies both."""
    home = tmp_path / "home"
    _write_ssh_home(home, sshd, sshd.known_hosts.read_text())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    client = docker.DockerClient(base_url=f"ssh://root@{sshd.host}:{sshd.port}", use_ssh_client=False)
    try:
        assert client.info()["DockerRootDir"] == str(dockerd.root / "data")
    finally:
        client.close()


def test_docker_sdk_over_ssh_refuses_unknown_host(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    _write_ssh_home(home, sshd, "")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        docker.DockerClient(base_url=f"ssh://root@{sshd.host}:{sshd.port}", use_ssh_client=False)


def test_container_as_user_with_bind_mount_and_gpu_request(
    sshd: SshServer, dockerd: DockerDaemon, test_image: str, tmp_path: Path
) -> None:
    """Through our own verified SSH link: the product's way of reaching a GPU host's engine."""
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    (work / "in.txt").write_text("from the host\n")
    uid, gid = 12345, 23456
    client = docker_client_over_ssh(lambda: connect_ssh(_settings(sshd, tmp_path)))
    name = f"cosmos-infra-{uuid.uuid4().hex[:8]}"
    try:
        assert client.info()["DockerRootDir"] == str(dockerd.root / "data")
        script = (
            "import av, numpy, os; "
            "data = open('/workspace/in.txt').read(); "
            "open('/workspace/out.txt', 'w').write(f'{os.getuid()}:{os.getgid()} {av.__version__} ' + data)"
        )
        container = client.containers.run(
            test_image,
            ["python3", "-c", script],
            name=name,
            user=f"{uid}:{gid}",
            volumes={str(work): {"bind": "/workspace", "mode": "rw"}},
            working_dir="/workspace",
            device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])],
            detach=True,
        )
        result = container.wait(timeout=120)
        logs = container.logs().decode()
        assert result["StatusCode"] == 0, logs
        inspect = client.api.inspect_container(container.id)
        assert inspect["HostConfig"]["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
        out = work / "out.txt"
        ids, _version, text = out.read_text().split(" ", 2)
        assert ids == f"{uid}:{gid}"
        assert text == "from the host\n"
        assert (out.stat().st_uid, out.stat().st_gid) == (uid, gid)
    finally:
        try:
            client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        client.close()


def test_docker_client_over_ssh_reconnects_after_link_drop(
    sshd: SshServer, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    connects: list[int] = []

    def connect() -> paramiko.SSHClient:
        connects.append(1)
        return connect_ssh(_settings(sshd, tmp_path))

    client = docker_client_over_ssh(connect)
    try:
        assert client.ping()
        assert sshd.kill_sessions() >= 1
        adapter = client.api._custom_adapter
        transport = adapter.ssh_client.get_transport()
        transport.join(timeout=10)  # the transport thread notices the dropped link
        assert not transport.is_active()
        assert client.ping()
        assert len(connects) == 2
    finally:
        client.close()


def test_gpu_request_needs_the_runtime_hook_stand_in(dockerd: DockerDaemon) -> None:
    """The engine registered the nvidia driver because the stand-in hook is on its PATH."""
    hook = dockerd.bin_dir / "nvidia-container-runtime-hook"
    assert os.access(hook, os.X_OK)
    env = Path(f"/proc/{dockerd.pid}/environ").read_bytes().split(b"\0")
    path = next(e for e in env if e.startswith(b"PATH=")).decode()[5:]
    assert path.split(":")[0] == str(dockerd.bin_dir)
