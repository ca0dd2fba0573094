"""defs/resources/waiting.py against a real Dagster instance: which runs wait for a host, which are on their way, which are
not ours to take. Runs and pool places are made directly in the instance's storage (no run executes)."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cosmos_assets.defs.assets.generation import GenerateConfig
from cosmos_assets.defs.resources import slots
from cosmos_assets.defs.resources.waiting import GENERATION, JOBS_WITH, UPSCALE, step_config, waiting_for_host

HOST = "gpu-a"
STEP = "generated_videos"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        if not slots.supported(instance):
            pytest.skip("this instance's storage has no concurrency slots")
        slots.ensure_limits(instance, [HOST], 1, lambda line: None)
        yield instance


def add(
    instance: dg.DagsterInstance,
    prompt: str | None,
    status: dg.DagsterRunStatus,
    *,
    assets=frozenset({GENERATION}),
    job: str = "__ASSET_JOB",
    config: dict | None = None,
    tags: dict | None = None,
) -> dg.DagsterRun:
    part = {"dagster/partition": prompt} if prompt else {}
    return instance.add_run(
        dg.DagsterRun(
            job_name=job, status=status, asset_selection=assets, run_config=config or {}, tags={**part, **(tags or {})}
        )
    )


def same_config(run: dg.DagsterRun) -> bool:
    theirs = GenerateConfig(**step_config(run, STEP)).model_dump()
    return theirs == GenerateConfig().model_dump()


def test_queued_and_pooled_runs_wait_started_ones_are_on_their_way_the_rest_are_not_ours(instance) -> None:
    started, queued = dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.NOT_STARTED  # QUEUED needs a code origin
    storage = instance.event_log_storage
    holder = add(instance, "own", started)
    assert storage.claim_concurrency_slot(slots.ANY_GPU_POOL, holder.run_id, STEP, 0).is_claimed
    # a `cosmos-assets generate` run: execute_in_process of generate_job records an empty selection
    pooled = add(instance, "pooled", started, assets=frozenset(), job="generate_job", tags={"dagster/priority": "100"})
    assert not storage.claim_concurrency_slot(slots.ANY_GPU_POOL, pooled.run_id, STEP, 100).is_claimed
    in_queue = add(instance, "in_queue", queued)
    add(instance, "coming", started)
    add(instance, "forced", queued, config={"ops": {STEP: {"config": {"force": True}}}})
    add(instance, "other_model", queued, config={"ops": {STEP: {"config": {"model": "cosmos3"}}}})
    add(instance, "upscale_only", queued, assets=frozenset({UPSCALE}))
    add(instance, "a_range", queued, tags={ASSET_PARTITION_RANGE_START_TAG: "a", ASSET_PARTITION_RANGE_END_TAG: "b"})
    add(instance, None, queued)  # no partition
    add(instance, "ended", dg.DagsterRunStatus.SUCCESS)
    add(instance, "own", started)  # another attempt of its own prompt is no company, nor on its way

    def accepts(run: dg.DagsterRun) -> bool:
        return same_config(run) and not GenerateConfig(**step_config(run, STEP)).force

    waiting, coming = waiting_for_host(
        instance, holder, HOST, STEP, GENERATION, JOBS_WITH[GENERATION], accepts, lambda run, prompt: "none"
    )
    assert [(w.prompt, w.priority, w.how) for w in waiting] == [
        ("pooled", 100, f"waiting for host {HOST}"),
        ("in_queue", 0, "queued"),
    ]
    assert waiting[1].dagster_run_id == in_queue.run_id
    assert coming == 1  # "coming": started, not waiting, its step not done


def test_an_upscale_waits_only_once_its_generation_was_done_for_it(instance) -> None:
    started, queued = dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.NOT_STARTED  # QUEUED needs a code origin
    holder = add(instance, "own", started, assets=frozenset({GENERATION, UPSCALE}))
    done = add(instance, "gen_done", queued, assets=frozenset({GENERATION, UPSCALE}))
    add(instance, "gen_to_do", queued, assets=frozenset({GENERATION, UPSCALE}))
    only = add(instance, "upscale_only", queued, assets=frozenset({UPSCALE}))

    def earlier(run: dg.DagsterRun, prompt: str) -> str:
        if GENERATION not in (run.asset_selection or ()):
            return "none"
        return "done" if run.run_id == done.run_id else "to do"

    waiting, coming = waiting_for_host(
        instance, holder, HOST, "upscaled_videos", UPSCALE, JOBS_WITH[UPSCALE], lambda run: True, earlier
    )
    assert {w.dagster_run_id for w in waiting} == {done.run_id, only.run_id} and coming == 0
