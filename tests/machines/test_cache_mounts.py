"""The newer models' download caches: mounted writable from under the checkpoint folder, paths checked."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import ValidationError

from cosmos_assets.machines.docker_run import docker_run_argv
from cosmos_assets.machines.host_facts import HostFacts
from cosmos_assets.machines.job import InferenceJob, Invocation
from cosmos_assets.machines.preflight import _cache_check_script, cache_mounts
from tests.machines.test_docker import settings

CACHES = {"cache/huggingface": "/cache/huggingface", "cache/uv": "/cache/uv"}


def job(cache_dirs: dict[str, str]) -> InferenceJob:
    invocation = Invocation(
        model="m", argv=("python", "x.py"), entry_point="x.py", output_folder="outputs/p/r", cache_dirs=cache_dirs
    )
    return InferenceJob(run_id="r", stage="generate", prompt="p", invocation=invocation, inputs=[])


def test_cache_folders_are_mounted_from_under_the_checkpoint_folder() -> None:
    facts = HostFacts(
        home="/home/u",
        remote_dir="/home/u/cosmos-transfer2.5",
        checkpoint_dir="/home/u/checkpoints",
        uid=1000,
        gid=1000,
        user_source="test",
    )
    mounts = cache_mounts(facts, job(CACHES))
    assert mounts == {
        "/home/u/checkpoints/cache/huggingface": "/cache/huggingface",
        "/home/u/checkpoints/cache/uv": "/cache/uv",
    }
    argv = docker_run_argv(settings(cache_mounts=mounts), ["python", "x.py"])
    assert "/home/u/checkpoints/cache/huggingface:/cache/huggingface" in argv
    assert argv[argv.index("/home/u/checkpoints/cache/uv:/cache/uv") - 1] == "-v"


@pytest.mark.parametrize("bad", [{"../cache": "/cache"}, {"/abs": "/cache"}, {"cache": "relative"}, {"cache": "/a:b"}])
def test_cache_folders_stay_inside_and_mount_cleanly(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        job(bad)


def test_the_cache_check_creates_the_folders_and_reports_unwritable_ones(tmp_path) -> None:
    folder = tmp_path / "cache" / "huggingface"
    done = subprocess.run(
        ["sh", "-c", _cache_check_script(), "sh", "0", "0", str(folder)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout == "" and folder.is_dir()


class FakeLink:
    label = "ssh@gpu"

    def __init__(self, out: str) -> None:
        self.out = out

    def exec(self, argv: list[str]) -> tuple[int, str, str]:
        return 0, self.out, ""


def test_gpu_memory_is_checked_against_the_models_documented_need() -> None:
    from cosmos_assets.machines.job import HostNotReadyError
    from cosmos_assets.machines.preflight import check_gpu_memory

    big = "0, NVIDIA H100 80GB HBM3, 81559 MiB, 81000 MiB\n1, NVIDIA H100 80GB HBM3, 81559 MiB, 81000 MiB\n"
    small = "0, NVIDIA L40S, 46068 MiB, 46000 MiB\n"
    needs = job({}).model_copy(update={"invocation": job({}).invocation.model_copy(update={"gpu_memory_gb": 65.4})})
    check_gpu_memory(FakeLink(big), needs, "all", print)  # type: ignore[arg-type]
    with pytest.raises(HostNotReadyError, match=r"m needs about 65.4 GB on each GPU but ssh@gpu has GPU 0 48 GB"):
        check_gpu_memory(FakeLink(small), needs, "all", print)  # type: ignore[arg-type]
    check_gpu_memory(FakeLink(small), needs, "none", print)  # type: ignore[arg-type]  # no GPUs requested: no check
