"""Session fixtures of real infrastructure: a private dockerd, a throwaway sshd, the test image.

Nothing is skipped silently: if a daemon cannot start, every test using it fails with the
reason. Set COSMOS_SKIP_INTEGRATION=1 to skip tests marked `integration` explicitly.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.infra.dockerd import DockerDaemon, start_dockerd
from tests.infra.image import IMAGE_TAG, ensure_test_image
from tests.infra.nvidia import write_fake_nvidia_smi
from tests.infra.sshd import InfraError, SshServer, start_sshd

log = logging.getLogger(__name__)

SKIP_ENV = "COSMOS_SKIP_INTEGRATION"
FAKE_GPU_COUNT = 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SKIP_ENV) != "1":
        return
    skip = pytest.mark.skip(reason=f"{SKIP_ENV}=1: integration tests skipped on request")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def _fail(what: str, exc: BaseException) -> None:
    pytest.fail(f"{what} could not be started: {exc}\n(set {SKIP_ENV}=1 to skip integration tests)", pytrace=False)


@pytest.fixture(scope="session")
def infra_root() -> Iterator[Path]:
    """A short path under /tmp (unix socket paths must stay under ~108 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="cosmos-infra-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class FakeGpuBin:
    """A directory on the test host's session PATH with a stand-in `nvidia-smi`."""

    bin_dir: Path
    gpus: int


@pytest.fixture(scope="session")
def fake_gpu_bin(infra_root: Path) -> FakeGpuBin:
    bin_dir = infra_root / "gpu-bin"
    write_fake_nvidia_smi(bin_dir, FAKE_GPU_COUNT)
    return FakeGpuBin(bin_dir=bin_dir, gpus=FAKE_GPU_COUNT)


@pytest.fixture(scope="session")
def dockerd(infra_root: Path) -> Iterator[DockerDaemon]:
    try:
        daemon = start_dockerd(infra_root / "dk")
    except (InfraError, OSError) as exc:
        _fail("the private dockerd", exc)
    log.info("private dockerd ready in %.2fs at %s", daemon.start_seconds, daemon.docker_host)
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def docker_client(dockerd: DockerDaemon) -> Iterator[docker.DockerClient]:
    """A local (unix socket) client of the private engine, for setup and assertions."""
    client = dockerd.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sshd(infra_root: Path, dockerd: DockerDaemon, fake_gpu_bin: FakeGpuBin) -> Iterator[SshServer]:
    """The fake GPU host: sshd whose sessions see DOCKER_HOST=<private engine> and the fake nvidia-smi."""
    try:
        server = start_sshd(infra_root / "ssh", docker_host=dockerd.docker_host, path_prepend=[fake_gpu_bin.bin_dir])
    except (InfraError, OSError) as exc:
        _fail("the test sshd", exc)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def test_image(docker_client: docker.DockerClient) -> str:
    """`cosmos-test-base:latest` in the private engine (rootfs tarball cached across runs)."""
    t0 = time.monotonic()
    try:
        timings = ensure_test_image(docker_client, IMAGE_TAG)
    except (RuntimeError, OSError, docker.errors.DockerException) as exc:
        _fail(f"the test image {IMAGE_TAG}", exc)
    log.info("test image ready in %.1fs %s", time.monotonic() - t0, timings)
    return IMAGE_TAG
