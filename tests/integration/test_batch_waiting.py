"""One model load for the prompts waiting on a host, however they were started (issue 19, items 1 and 2), on the real
sshd + private dockerd: a pool file of one host (gpu-a), the Transfer1 stand-in, the repo's dagster.yaml.

"Waiting" is made exact, never timed: the test holds the host's Dagster pool slot (as a run on it would) until every
run it launched waits for that host, then frees it. What ran is counted from the engine's own container start
events (labels), never from our logs. Each prompt's output must be its own (its prompt.txt holds its own text).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import docker
import pytest

from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.resources import slots
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.docker_run import LABEL_PREFIX
from cosmos_assets.media import probe_video
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs.spec_used import SpecUsed
from tests.infra.docker_events import attributes, container_events
from tests.integration.test_daemon import _running_daemon
from tests.integration.test_host_pool import BIN, Pool, env_of, make_pool

pytestmark = pytest.mark.integration

SHOT = "tiny_shot"
HOST = "gpu-a"
DEADLINE_S = 300  # a guard against a hang only: no assertion is about time


@pytest.fixture(scope="module")
def one_host(sshd, test_image: str, docker_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    base = Path(tempfile.mkdtemp(prefix="cosmos-waiting-", dir="/tmp"))
    yield make_pool({HOST: sshd}, docker_client, tmp_path_factory, base)
    shutil.rmtree(base, ignore_errors=True)


def add_prompts(pool: Pool, texts: dict[str, str]) -> None:
    for prompt, text in texts.items():
        write_spec(new_prompt_spec(SHOT, text), pool.project.prompt_file(prompt))
    with instance_of(pool) as instance:
        instance.add_dynamic_partitions(PROMPTS.name, list(texts))


@contextlib.contextmanager
def instance_of(pool: Pool) -> Iterator[dg.DagsterInstance]:
    instance = dg.DagsterInstance.from_config(str(pool.home))
    try:
        yield instance
    finally:
        instance.dispose()


def env(pool: Pool, window: float = 120) -> dict[str, str]:
    return env_of(pool) | {"COSMOS_BATCH_WINDOW": str(window)}


def launch(pool: Pool, argv: list[str], name: str, window: float = 120) -> tuple[subprocess.Popen, Path]:
    out = pool.project.root / f"{name}-{uuid.uuid4().hex[:6]}.log"
    with out.open("w") as sink:
        process = subprocess.Popen(
            argv, env=env(pool, window), cwd=pool.project.root, stdout=sink, stderr=subprocess.STDOUT
        )
    return process, out


def materialize(pool: Pool, asset: str, prompt: str, window: float = 120) -> tuple[subprocess.Popen, Path]:
    return launch(
        pool,
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "cosmos_assets.definitions",
            "--select",
            asset,
            "--partition",
            prompt,
        ],
        f"{asset}-{prompt}",
        window,
    )


def finish(processes: list[tuple[subprocess.Popen, Path]]) -> list[str]:
    outputs = []
    for process, out in processes:
        code = process.wait(timeout=DEADLINE_S)
        text = out.read_text(errors="replace")
        assert code == 0, text[-4000:]
        outputs.append(text)
    return outputs


def until(condition, what: str, processes: list[tuple[subprocess.Popen, Path]] = ()) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        dead = [out for p, out in processes if p.poll() is not None]
        assert not dead, f"a process ended before {what}:\n" + "\n".join(
            o.read_text(errors="replace")[-3000:] for o in dead
        )
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.5)


@contextlib.contextmanager
def host_held(pool: Pool) -> Iterator[dg.DagsterInstance]:
    """The host busy, as a run holding its Dagster pool slot keeps it; freed when the block ends."""
    with instance_of(pool) as instance:
        holder = instance.add_run(dg.DagsterRun(job_name="held_by_the_test", status=dg.DagsterRunStatus.STARTED))
        storage, key = instance.event_log_storage, slots.host_pool(HOST)
        slots.ensure_limits(instance, [HOST], 1, lambda line: None)
        assert storage.claim_concurrency_slot(key, holder.run_id, f"held@{HOST}", 0).is_claimed
        try:
            yield instance
        finally:
            storage.free_concurrency_slot_for_step(holder.run_id, f"held@{HOST}")
            instance.delete_run(holder.run_id)


def waiting(instance: dg.DagsterInstance, step: str) -> int:
    """Steps waiting for the host: in its own pool, or before it in the asset pool ``gpu_host`` (one place per host)."""
    storage = instance.event_log_storage
    mine = storage.get_concurrency_info(slots.host_pool(HOST)).pending_steps
    before = storage.get_concurrency_info(slots.ANY_GPU_POOL).pending_steps  # a place there stays listed once assigned
    return len(
        {p.run_id for p in mine if p.step_key == f"{step}@{HOST}"} | {p.run_id for p in before if p.step_key == step}
    )


def containers(client: docker.DockerClient, since: float, stage: str) -> list[str]:
    """The prompts label of every container of ``stage`` the engine started since ``since``."""
    return [
        attributes(e)[f"{LABEL_PREFIX}.prompt"]
        for e in container_events(client, since)
        if attributes(e).get(f"{LABEL_PREFIX}.stage") == stage
    ]


def own_output(layout: ProjectLayout, prompt: str, text: str, stage: str = "generate") -> SpecUsed:
    folder = layout.output_dir(prompt) if stage == "generate" else layout.upscaled_dir(prompt)
    used = SpecUsed.read(folder / "spec_used.json")
    assert used.prompt == prompt and used.stage == stage
    if stage == "generate":
        assert (folder / "prompt.txt").read_text() == text, f"{prompt} holds another prompt's video"
    return used


def materializations(pool: Pool, asset: str, prompts: list[str]) -> dict[str, dg.EventLogRecord]:
    with instance_of(pool) as instance:
        found = {}
        for prompt in prompts:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[prompt]), limit=1
            ).records
            if records:
                found[prompt] = records[0]
        return found


def test_three_single_prompt_runs_waiting_for_the_host_run_as_one_container_and_so_do_their_upscales(
    one_host: Pool, docker_client
) -> None:
    texts = {"t_one": "a quiet lane at dusk", "t_two": "a dry lane at noon", "t_three": "a wet lane at night"}
    add_prompts(one_host, texts)
    started = time.time()
    with host_held(one_host) as instance:
        processes = [materialize(one_host, "generated_videos", prompt) for prompt in texts]
        until(lambda: waiting(instance, "generated_videos") == 3, "three runs wait for the host", processes)
    outputs = finish(processes)

    [label] = containers(docker_client, started, "generate")  # one container, one model load, for all three
    assert sorted(label.split("+")) == sorted(texts)
    used = {prompt: own_output(one_host.project, prompt, text) for prompt, text in texts.items()}
    assert len({u.batch.batch_id for u in used.values() if u.batch}) == 1 and all(u.batch for u in used.values())
    assert "--batch_input_path" in next(iter(used.values())).command
    taken = [u for u in used.values() if u.batch and u.batch.taken_for]
    assert len(taken) == 2  # two prompts were taken by the run that got the host, each for its own Dagster run
    events = materializations(one_host, "generated_videos", list(texts))
    assert set(events) == set(texts)
    for prompt, event in events.items():  # each materialized by its own run, standing on its own record, not a skip
        metadata = event.asset_materialization.metadata
        assert metadata["run_id"].value == used[prompt].run_id and metadata["skipped"].value is False
        if used[prompt].batch.taken_for:
            assert event.run_id == used[prompt].batch.taken_for
    assert sum("takes 2 waiting prompt(s)" in out for out in outputs) == 1

    # their three upscales, each its own run, waiting for the host together: one container too (item 2)
    started = time.time()
    with host_held(one_host) as instance:
        processes = [materialize(one_host, "upscaled_videos", prompt) for prompt in texts]
        until(lambda: waiting(instance, "upscaled_videos") == 3, "three upscales wait for the host", processes)
    finish(processes)

    [label] = containers(docker_client, started, "upscale")
    assert sorted(label.split("+")) == sorted(texts)
    for prompt in texts:
        upscale = own_output(one_host.project, prompt, texts[prompt], stage="upscale")
        assert upscale.batch is not None and upscale.batch.items == 3 and "--batch_input_path" in upscale.command
        generated = probe_video(one_host.project.output_dir(prompt) / "output.mp4")
        upscaled = probe_video(one_host.project.upscaled_dir(prompt) / "output.mp4")
        assert (upscaled.width, upscaled.height) == (generated.width * 3, generated.height * 3)
        staged = f"inputs/generated/{prompt}/{used[prompt].run_id}/output.mp4"  # its own generation, not another's
        assert any(i.path.endswith(staged) for i in upscale.inputs), [i.path for i in upscale.inputs]
    assert set(materializations(one_host, "upscaled_videos", list(texts))) == set(texts)


def test_an_urgent_prompt_is_not_held_back_by_the_window(one_host: Pool, docker_client) -> None:
    """The run on the host waits (window 600 s) for a run still on its way; an urgent run arriving ends that wait:
    it is taken at once, into the same invocation."""
    texts = {"w_normal": "a quiet quay at dusk", "w_urgent": "a busy quay at noon"}
    add_prompts(one_host, texts)
    with instance_of(one_host) as instance:  # a run on its way to the same step that never arrives
        late = instance.add_run(
            dg.DagsterRun(
                job_name="__ASSET_JOB",
                status=dg.DagsterRunStatus.STARTED,
                asset_selection=frozenset({dg.AssetKey("generated_videos")}),
                tags={"dagster/partition": "w_late"},
            )
        )
    started = time.time()
    try:
        normal = materialize(one_host, "generated_videos", "w_normal", window=600)

        def normal_holds_the_host() -> bool:
            with instance_of(one_host) as instance:
                info = instance.event_log_storage.get_concurrency_info(slots.host_pool(HOST))
                return any(s.step_key == f"generated_videos@{HOST}" for s in info.claimed_slots)

        until(normal_holds_the_host, "the normal run holds the host", [normal])
        urgent = launch(
            one_host, [str(BIN / "cosmos-assets"), "generate", "--priority", "urgent", "w_urgent"], "urgent", window=600
        )
        normal_out, urgent_out = finish([normal, urgent])
    finally:
        with instance_of(one_host) as instance:
            instance.delete_run(late.run_id)
    assert "an urgent prompt is waiting: no more waiting" in normal_out
    assert containers(docker_client, started, "generate") == ["w_normal+w_urgent"]
    for prompt, text in texts.items():
        own_output(one_host.project, prompt, text)
    assert "w_urgent: succeeded" in urgent_out


def test_the_daemon_with_auto_generate_on_makes_one_container_for_three_prompts_saved_at_once(
    sshd, test_image: str, docker_client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = Path(tempfile.mkdtemp(prefix="cosmos-auto-", dir="/tmp"))
    try:
        pool = make_pool({HOST: sshd}, docker_client, tmp_path_factory, base)
        for prompt in ("p1", "p2", "p3", "p4"):  # make_pool's own prompts: this project starts with none
            pool.project.prompt_file(prompt).unlink()
        texts = {"a_one": "a quiet yard at dusk", "a_two": "a dry yard at noon", "a_three": "a wet yard at night"}
        for prompt, text in texts.items():  # saved at once, before the daemon's first tick
            write_spec(new_prompt_spec(SHOT, text), pool.project.prompt_file(prompt))
        daemon_env = env(pool) | {
            "COSMOS_SENSORS": "on",
            "COSMOS_AUTO_GENERATE": "on",
            "COSMOS_SENSOR_INTERVAL": "2",
            "COSMOS_RENDER_SETTLE_SECONDS": "3600",
        }
        started = time.time()
        with _running_daemon(pool.project, daemon_env) as daemon:
            deadline = time.monotonic() + DEADLINE_S
            while not all((pool.project.upscaled_dir(p) / "output.mp4").is_file() for p in texts):
                assert time.monotonic() < deadline, daemon.log_tail()
                time.sleep(1)
            with instance_of(pool) as instance:
                until(
                    lambda: (
                        not instance.get_runs(
                            filters=dg.RunsFilter(
                                statuses=[
                                    dg.DagsterRunStatus.QUEUED,
                                    dg.DagsterRunStatus.STARTING,
                                    dg.DagsterRunStatus.STARTED,
                                ]
                            )
                        )
                    ),
                    "every run of the sensor ended",
                )
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "prompt_sensor"}))
                assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), daemon.log_tail()
        [label] = containers(docker_client, started, "generate")  # one generation container, one model load
        assert sorted(label.split("+")) == sorted(texts)
        for prompt, text in texts.items():
            own_output(pool.project, prompt, text)
            assert probe_video(pool.project.output_dir(prompt) / "output.mp4").frames > 0
        upscales = containers(docker_client, started, "upscale")
        assert sorted(p for label in upscales for p in label.split("+")) == sorted(texts)
        print(f"upscale containers for three prompts: {len(upscales)} ({upscales})")
        taken = [
            json.loads((pool.project.output_dir(p) / "spec_used.json").read_text())["batch"]["taken_for"] for p in texts
        ]
        assert sum(t is not None for t in taken) == 2  # the run that got the host took the other two runs' prompts
    finally:
        shutil.rmtree(base, ignore_errors=True)
