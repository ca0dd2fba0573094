"""A disk that fills up under a transfer, on either end, against the real sshd and dockerd.

A small filesystem is a tmpfs mounted for the test (``mount -t tmpfs -o size=...``: the suite runs as root, as
the sshd and dockerd fixtures already require). On the host it is REMOTE_DIR; here it holds the whole project.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cosmos_assets.machines.job import StagedFile
from cosmos_assets.machines.remote_hash import RemoteDiskFullError
from cosmos_assets.machines.sftp_transfer import LocalDiskFullError
from cosmos_assets.machines.ssh_host import SshHost
from cosmos_assets.machines.ssh_host_settings import SshHostSettings
from cosmos_assets.machines.ssh_target import SshTarget
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from tests.faults.test_link_faults import MB, _file
from tests.infra.sshd import SshServer
from tests.project_factory import make_project

pytestmark = pytest.mark.integration

PROMPT = "tiny_prompt"


@pytest.fixture
def small_disk() -> Iterator[Callable[[int], Path]]:
    """Mounts a tmpfs of the given size (bytes) per call; all unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = Path(tempfile.mkdtemp(prefix="cosmos-small-disk-", dir="/tmp"))
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.fail(
                f"cannot mount a {size}-byte tmpfs for the full-disk test: {done.stderr.strip()} "
                "(the integration suite runs as root)",
                pytrace=False,
            )
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        os.rmdir(where)


def test_a_full_remote_disk_stops_the_upload_with_the_fix_and_the_next_attempt_resumes(
    sshd: SshServer, small_disk: Callable[[int], Path], tmp_path: Path
) -> None:
    remote_dir = small_disk(8 * MB)
    local = _file(tmp_path / "color.mp4", 12 * MB, 7)
    target = SshTarget(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.key_path,
        known_hosts=sshd.known_hosts,
        ssh_config=tmp_path / "none",
        allow_agent=False,
    )
    settings = SshHostSettings(remote_dir=str(remote_dir), docker_image="unused:faults", name="ssh@small-disk")
    host = SshHost(target, settings)
    files = [StagedFile(local=local, remote="inputs/videos/shot/color.mp4")]
    try:
        with pytest.raises(RemoteDiskFullError) as caught:
            host.upload(files, lambda _line: None)
    finally:
        host.close()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("upload to ssh@small-disk failed: the disk holding")
    assert "is full" in message and "REMOTE_DIR" in message and "Free space on ssh@small-disk" in message
    final = remote_dir / "inputs" / "videos" / "shot" / "color.mp4"
    part = final.with_name("color.mp4.part")
    assert not final.exists() and 0 < part.stat().st_size <= 8 * MB  # what arrived stays, under the .part name

    subprocess.run(["mount", "-o", "remount,size=32m", str(remote_dir)], check=True)  # space was freed
    again = SshHost(target, settings)
    try:
        item = again.upload(files, lambda _line: None).files[0]
    finally:
        again.close()
    assert final.read_bytes() == local.read_bytes() and not part.exists()
    assert item.resumed_from > 0 and item.resumed_from + item.bytes_sent == 12 * MB


class _DiskFillingHost(SshHost):
    """The real host; just before the download the local disk is filled up to ``room`` bytes free."""

    def __init__(self, *args: object, fill: Path, room: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fill, self.room = fill, room

    def download(self, remote_dir: str, local_dir: Path, log):
        st = os.statvfs(self.fill.parent)
        with open(self.fill, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, max(0, st.f_bavail * st.f_frsize - self.room))
        return super().download(remote_dir, local_dir, log)


def test_a_full_local_disk_during_download_fails_clearly_keeping_earlier_outputs_and_the_history(
    preview_host: dict[str, object], small_disk: Callable[[int], Path]
) -> None:
    from cosmos_assets.defs.resources import SshGpuHost
    from cosmos_assets.models.registry import backend_named
    from cosmos_assets.runs.runner import run_generation

    project = make_project(small_disk(64 * MB) / "project", prompt=PROMPT)
    earlier = project.output_dir(PROMPT)
    earlier.mkdir(parents=True)
    (earlier / "output.mp4").write_bytes(b"an earlier run's video")
    resource = SshGpuHost(**{**preview_host, "container_env": {"COSMOS_PREVIEW_STEP_SECONDS": "0.01"}})
    machine = _DiskFillingHost(
        resource.ssh_target(), resource.host_settings(), fill=project.root / "filler", room=64 * 1024
    )
    try:
        with pytest.raises(LocalDiskFullError) as caught:
            run_generation(project, machine, backend_named("preview"), PROMPT, log=lambda _line: None)
    finally:
        machine.close()
    message = str(caught.value)
    assert "\n" not in message and "the local disk is full" in message and "Free space on the disk" in message
    assert [p.name for p in earlier.iterdir()] == ["output.mp4"]
    assert (earlier / "output.mp4").read_bytes() == b"an earlier run's video"
    leftovers = [p for p in project.outputs_dir.rglob("*") if ".partial-" in p.name or ".parts-" in p.name]
    assert leftovers == []  # the partial download was removed (that is what freed the room for the record)
    (record,) = RunStore(project.runs_dir).all()
    assert (record.state, record.cause) == ("failed", "local_io")
    (line,) = read_history(project.history_log)
    assert (line.run_id, line.status, line.cause) == (record.run_id, "failed", "local_io")
