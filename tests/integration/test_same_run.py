"""Exactly the same run on the real sshd/dockerd host (issue 20): the image is known by its ID, so a tag rebuilt under
the same name is new work (not skipped), and a reproduction on it is refused naming the image."""

from __future__ import annotations

import io
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.options import RunOptions
from cosmos_assets.runs.reproduce import ReproduceRefused, from_run_id, reproduce
from cosmos_assets.runs.runner import run_generation
from tests.integration.test_ssh_host import OWNER_GID, OWNER_UID, SECRET, FakeRemote, _chown_tree, machine_of, make_host
from tests.project_factory import make_project

PREVIEW = backend_named("preview")


def dockerfile(version: int) -> str:
    return f'FROM cosmos-test-base:latest\nLABEL org.cosmos-assets.test.version="{version}"\nWORKDIR /workspace\n'


@pytest.fixture
def preview_host(sshd, test_image: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    base = Path(tempfile.mkdtemp(prefix="cosmos-same-run-", dir="/tmp"))
    base.chmod(0o755)
    remote_dir = base / "host"
    remote_dir.mkdir()
    (remote_dir / "Dockerfile").write_text(dockerfile(1))
    _chown_tree(remote_dir, OWNER_UID, OWNER_GID)
    image = f"cosmos-same-run-test:{uuid.uuid4().hex[:8]}"
    host = make_host(
        sshd,
        FakeRemote(
            base=base,
            remote_dir=remote_dir,
            checkpoints=base / "checkpoints",
            image=image,
            no_ssh_config=base / "no-ssh-config",
        ),
        model="preview",
    )
    yield host, image
    host.machine().close()
    shutil.rmtree(base, ignore_errors=True)


def test_a_tag_rebuilt_under_the_same_name_is_new_work_and_refuses_a_reproduction(
    preview_host: tuple, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    host, image = preview_host
    layout: ProjectLayout = make_project(tmp_path / "project")
    machine = machine_of(host)
    lines: list[str] = []
    first = run_generation(layout, machine, PREVIEW, "tiny_prompt", log=lines.append)  # builds the image
    built = docker_client.images.get(image).id
    assert first.skipped is None and first.record.image_id == built and first.record.image == image
    assert first.record.program_sha256 is not None

    again = run_generation(layout, machine, PREVIEW, "tiny_prompt", log=lines.append)
    assert again.skipped is not None and again.record.run_id == first.record.run_id  # same image ID: done

    # someone rebuilds the same tag with a trivial change (a label): a new ID, so new work
    docker_client.images.build(fileobj=io.BytesIO(dockerfile(2).encode()), tag=image, rm=True)
    rebuilt = docker_client.images.get(image).id
    assert rebuilt != built
    with pytest.raises(ReproduceRefused) as refused:
        reproduce(
            layout,
            lambda backend: machine,
            from_run_id(layout, first.record.run_id),
            options=RunOptions(log=lines.append),
        )
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and f"image {image} is {rebuilt[:19]} on {machine.label}" in message
    assert f"the run used {built[:19]}" in message

    third = run_generation(layout, machine, PREVIEW, "tiny_prompt", log=lines.append)
    assert third.skipped is None and third.record.run_id != first.record.run_id
    assert third.record.image_id == rebuilt and third.record.inputs_digest() != first.record.inputs_digest()
    assert any(
        f"the inputs differ from those of its last successful run {first.record.run_id}" in line for line in lines
    )
