"""The GPU steps' RetryPolicy, through Dagster: a host that is unreachable once is retried and the run succeeds;
a host that is not ready (a cause no retry can fix) fails at once with its cause in the metadata."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.assets.generation import generated_videos, upscaled_videos
from cosmos_assets.defs.assets.gpu_step import GPU_RETRY
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.resources import LocalPreviewHost
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.machines.job import HostNotReadyError
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.machines.ssh_link import HostUnreachableError
from tests.project_factory import make_project

FAILURES: list[BaseException] = []


class _FlakyMachine(LocalMachine):
    def preflight(self, job, log) -> None:
        if FAILURES:
            raise FAILURES.pop(0)
        super().preflight(job, log)


class _FlakyHost(LocalPreviewHost):
    def build_machine(self) -> LocalMachine:
        return _FlakyMachine(Path(self.remote_dir), label=self.label)


def _materialize(tmp_path: Path) -> dg.ExecuteInProcessResult:
    layout = make_project(tmp_path / "project")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, ["tiny_prompt"])
        return dg.materialize(
            ALL_ASSETS,
            selection=["generated_videos"],
            partition_key="tiny_prompt",
            instance=instance,
            raise_on_error=False,
            resources={
                "project": ProjectResource(root=str(layout.root)),
                "gpu_host": _FlakyHost(remote_dir=str(tmp_path / "host")),
            },
        )


def test_the_gpu_steps_have_the_retry_policy() -> None:
    for asset in (generated_videos, upscaled_videos):
        assert asset.op.retry_policy == GPU_RETRY and GPU_RETRY.max_retries == 2


@pytest.mark.parametrize(
    "error, retried",
    [
        (HostUnreachableError("cannot connect to gpu1 (test)"), True),
        (HostNotReadyError("no GPUs on gpu1 (test)"), False),
    ],
)
def test_only_retryable_causes_are_retried(tmp_path: Path, error: BaseException, retried: bool) -> None:
    FAILURES[:] = [error]
    result = _materialize(tmp_path)
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == (1 if retried else 0)
    assert result.success is retried
    if not retried:
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        data = failure.step_failure_data
        assert data.user_failure_data.metadata["cause"].value == "host_not_ready"
        assert "no GPUs on gpu1" in data.error.message
