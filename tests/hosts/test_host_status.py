"""`cosmos-assets hosts`: a host whose SSH answers but whose docker does not is reachable, its image unknown, and the
problem says docker, not the link (issue 17 review)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cosmos_assets.defs.resources.hosts import SshGpuHost
from cosmos_assets.defs.resources.status import probe, table
from cosmos_assets.machines.docker_engine import DockerUnreachableError
from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.machines.ssh_host import SshHost


class _Link:
    def exec(self, argv: list[str], **_: object) -> tuple[int, str, str]:
        if argv[0] == "nvidia-smi":
            return 0, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)\n", ""
        return 0, "Filesystem 1024-blocks Used Available Capacity Mounted\n/dev/x 100 1 2000000 1% /\n", ""


class _DockerDown:
    def image_present(self, image: str) -> bool:
        raise DockerUnreachableError("docker on gpu-a is not answering (Cannot connect to the Docker daemon)")


def test_a_host_whose_docker_is_down_is_reachable_with_the_problem_named(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = SimpleNamespace(
        facts=lambda: SimpleNamespace(remote_dir="/srv/cosmos"),
        link=_Link(),
        docker=_DockerDown(),
        settings=SimpleNamespace(docker_image="cosmos:1"),
        image="cosmos:1",
    )
    machine.describe = lambda: SshHost.describe(machine)  # the SSH machine's own probe, over the fake link
    monkeypatch.setattr(SshGpuHost, "machine", lambda self: machine)
    monkeypatch.setattr(SshGpuHost, "close", lambda self: None)
    status = probe(SshGpuHost(host="gpu-a.example", docker_image="cosmos:1", name="gpu-a"))
    assert status.reachable and status.gpus == 1 and status.image_present is None
    assert status.problem is not None and status.problem.startswith("docker is not answering")
    shown = table([status])
    assert "reachable" in shown and "UNREACHABLE" not in shown and "gpu-a: docker is not answering" in shown


class _DockerRefusing:
    def image_present(self, image: str) -> bool:
        raise HostNotReadyError(
            "`docker image inspect cosmos:1` failed on gpu-a (permission denied while trying to "
            "connect to the Docker daemon socket), so whether the image is there is unknown"
        )


def test_a_host_whose_docker_refuses_the_user_is_reachable_its_image_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = SimpleNamespace(
        facts=lambda: SimpleNamespace(remote_dir="/srv/cosmos"),
        link=_Link(),
        docker=_DockerRefusing(),
        settings=SimpleNamespace(docker_image="cosmos:1"),
        image="cosmos:1",
    )
    machine.describe = lambda: SshHost.describe(machine)
    monkeypatch.setattr(SshGpuHost, "machine", lambda self: machine)
    monkeypatch.setattr(SshGpuHost, "close", lambda self: None)
    status = probe(SshGpuHost(host="gpu-a.example", docker_image="cosmos:1", name="gpu-a"))
    assert status.reachable and status.image_present is None and "permission denied" in (status.problem or "")
