"""Batched generation on the real sshd + private dockerd, through Dagster (issue 11, item 1).

The checkout is test_ssh_host's: the stand-in transfer.py (a copy of the preview program, which honours
``--batch_input_path`` with upstream's layout and guardrail behaviour), a Dockerfile the preflight builds, stand-in
checkpoints. Several prompts are materialized in one Dagster run (a partition range, as a backfill's single run is).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import docker
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.docker_run import LABEL_PREFIX
from cosmos_assets.media import probe_video
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs.record_store import RunStore
from tests.infra.docker_events import attributes, container_events
from tests.integration.test_ssh_host import (
    OWNER_GID,
    OWNER_UID,
    SECRET,
    FakeRemote,
    _chown_tree,
    _write_checkout,
    _write_checkpoints,
    make_host,
)
from tests.project_factory import make_project
from tests.standins.install import install_checkout

pytestmark = pytest.mark.integration

SHOT = "batch_shot"
COMPATIBLE = {"b_one": "a quiet street at dusk", "b_two": "a dry street at noon", "b_three": "a wet street at night"}
WITH_BLOCK = {"c_one": "a harbour at dawn", "c_two": "GUARDRAIL_TEST_BLOCK a harbour", "c_three": "a harbour at night"}
ON_T25 = {"d_one": "a field at dawn", "d_two": "GUARDRAIL_TEST_BLOCK a field", "d_three": "a field at night"}
T25, C3 = "cosmos-transfer2.5", "cosmos3"
ON_C3 = {"e_one": "a road at dawn", "e_two": "a road at noon", "e_three": "a road at night"}


@pytest.fixture(autouse=True)
def hf_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)


@pytest.fixture(scope="module")
def remote(test_image: str) -> Iterator[FakeRemote]:
    base = Path(tempfile.mkdtemp(prefix="cosmos-batch-", dir="/tmp"))
    base.chmod(0o755)
    remote_dir = base / "cosmos-transfer1"
    _write_checkout(remote_dir)
    _write_checkpoints(base / "checkpoints")
    _chown_tree(remote_dir, OWNER_UID, OWNER_GID)
    _chown_tree(install_checkout(T25, base / "cosmos-transfer2.5"), OWNER_UID, OWNER_GID)
    _chown_tree(install_checkout(C3, base / "cosmos-framework"), OWNER_UID, OWNER_GID)
    cache = base / "checkpoints" / "cache"
    (cache / "huggingface" / "hub").mkdir(parents=True)  # a warm cache: Cosmos 3's first-download disk check passes
    _chown_tree(cache, OWNER_UID, OWNER_GID)
    yield FakeRemote(
        base=base,
        remote_dir=remote_dir,
        checkpoints=base / "checkpoints",
        image=f"cosmos-transfer1-batch:{uuid.uuid4().hex[:8]}",
        no_ssh_config=base / "no-ssh-config",
    )
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ProjectLayout:
    layout = make_project(tmp_path_factory.mktemp("batch-project"), shot=SHOT, prompt="unused")
    for prompt, text in {**COMPATIBLE, **WITH_BLOCK, **ON_T25}.items():
        write_spec(new_prompt_spec(SHOT, text), layout.prompt_file(prompt))
    for prompt, text in ON_C3.items():
        data = new_prompt_spec(SHOT, text).to_json_dict() | {"cosmos_assets": {"model": C3, C3: {"size": "nano"}}}
        layout.prompt_file(prompt).write_text(json.dumps(data))
    return layout


def generate_range(
    project: ProjectLayout, host, prompts: list[str], model: str | None = None
) -> tuple[dg.ExecuteInProcessResult, set[str]]:
    """One Dagster run over the range of ``prompts``; its result and the partitions the instance then has materialized."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PROMPTS.name, prompts)
        result = dg.materialize(
            ALL_ASSETS,
            selection=["generated_videos"],
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"generated_videos": {"config": {"model": model}}}} if model else None,
            tags={ASSET_PARTITION_RANGE_START_TAG: prompts[0], ASSET_PARTITION_RANGE_END_TAG: prompts[-1]},
            resources={"project": ProjectResource(root=str(project.root)), "gpu_host": host},
        )
        return result, set(instance.get_materialized_partitions(dg.AssetKey("generated_videos")))


def generate_containers(client: docker.DockerClient, since: float) -> list[dict[str, str]]:
    """The labels of every generation container started since ``since``."""
    return [
        attributes(e)
        for e in container_events(client, since)
        if attributes(e).get(f"{LABEL_PREFIX}.stage") == "generate"
    ]


def check_own_output(project: ProjectLayout, prompt: str, text: str) -> dict:
    folder = project.output_dir(prompt)
    assert (folder / "prompt.txt").read_text() == text, f"{prompt} holds another prompt's video"
    assert probe_video(folder / "output.mp4").frames == 8
    used = json.loads((folder / "spec_used.json").read_text())
    assert used["prompt"] == prompt and used["spec"]["prompt"] == text and used["batch"] is not None
    assert ["-u", f"{OWNER_UID}:{OWNER_GID}"] == used["command"][used["command"].index("-u") :][:2]
    for path in (folder / "spec_used.json", folder / "run.log"):
        assert SECRET not in path.read_text()
    return used


def test_three_compatible_prompts_run_as_one_container_with_each_output_under_its_prompt(
    sshd, remote: FakeRemote, project: ProjectLayout, docker_client
) -> None:
    host = make_host(sshd, remote)
    started = time.time()
    try:
        result, materialized_keys = generate_range(project, host, list(COMPATIBLE))
    finally:
        host.close()
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    containers = generate_containers(docker_client, started)
    assert len(containers) == 1 and containers[0][f"{LABEL_PREFIX}.prompt"] == "b_one+b_two+b_three"
    used = [check_own_output(project, prompt, text) for prompt, text in COMPATIBLE.items()]
    assert [u["batch"]["index"] for u in used] == [0, 1, 2] and len({u["batch"]["batch_id"] for u in used}) == 1
    assert "--batch_input_path" in used[0]["command"]
    materialized = {e.partition: e for e in result.asset_materializations_for_node("generated_videos")}
    assert set(materialized) == set(COMPATIBLE) == materialized_keys
    assert len({e.metadata["run_id"].value for e in materialized.values()}) == 3


def test_a_blocked_middle_item_leaves_the_first_and_third_under_their_prompts_and_is_reported_blocked(
    sshd, remote: FakeRemote, project: ProjectLayout, docker_client
) -> None:
    host = make_host(sshd, remote)
    started = time.time()
    try:
        result, materialized_keys = generate_range(project, host, list(WITH_BLOCK))
    finally:
        host.close()
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data.user_failure_data
    assert data.metadata["guardrail_blocked"].value == ["c_two"] and "c_two (guardrail_blocked)" in data.description
    assert materialized_keys == {"c_one", "c_three"}  # materialized by the step that then failed for c_two
    check_own_output(project, "c_one", WITH_BLOCK["c_one"])
    third = check_own_output(project, "c_three", WITH_BLOCK["c_three"])
    assert third["batch"]["follow_up_of"] is not None  # the block ended the first invocation before the third item
    assert not project.output_dir("c_two").exists()
    states = {r.prompt: r.state for r in RunStore(project.runs_dir).all() if r.prompt in WITH_BLOCK}
    assert states == {"c_one": "succeeded", "c_two": "guardrail_blocked", "c_three": "succeeded"}
    assert [c[f"{LABEL_PREFIX}.prompt"] for c in generate_containers(docker_client, started)] == [
        "c_one+c_two+c_three",
        "c_three",
    ]


def test_transfer2_5_batches_natively_and_keeps_going_past_a_blocked_sample(
    sshd, remote: FakeRemote, project: ProjectLayout, docker_client
) -> None:
    host = make_host(sshd, remote, model_images={T25: f"cosmos-transfer2.5-batch:{uuid.uuid4().hex[:8]}"})
    started = time.time()
    try:
        result, materialized_keys = generate_range(project, host, list(ON_T25), model="transfer2.5")
    finally:
        host.close()
    assert not result.success and materialized_keys == {"d_one", "d_three"}
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_failure_data.user_failure_data.metadata["guardrail_blocked"].value == ["d_two"]
    containers = generate_containers(docker_client, started)
    assert [c[f"{LABEL_PREFIX}.prompt"] for c in containers] == ["d_one+d_two+d_three"]  # it keeps going: no follow-up
    for prompt in ("d_one", "d_three"):
        folder = project.output_dir(prompt)
        assert (folder / f"{prompt}.txt").read_text() == ON_T25[prompt]
        assert probe_video(folder / "output.mp4").frames == probe_video(folder / f"{prompt}.mp4").frames == 8
        assert not list(folder.glob("d_t*.*" if prompt == "d_one" else "d_o*.*"))  # no other sample's files
        used = json.loads((folder / "spec_used.json").read_text())
        assert used["backend"] == T25 and used["batch"]["items"] == 3
        command = used["command"]
        at = command.index("-i")
        assert command[at + 1 : at + 4] == [f"inputs/prompts/{p}.json" for p in ON_T25]
    assert not project.output_dir("d_two").exists()


def test_cosmos3_batches_natively_each_sample_folder_under_its_prompt(
    sshd, remote: FakeRemote, project: ProjectLayout, docker_client
) -> None:
    host = make_host(sshd, remote, model_images={C3: f"cosmos-framework-batch:{uuid.uuid4().hex[:8]}"})
    started = time.time()
    try:
        result, materialized_keys = generate_range(project, host, list(ON_C3))  # the prompt files choose cosmos3
    finally:
        host.close()
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert materialized_keys == set(ON_C3)
    assert [c[f"{LABEL_PREFIX}.prompt"] for c in generate_containers(docker_client, started)] == ["e_one+e_two+e_three"]
    for prompt, text in ON_C3.items():
        folder = project.output_dir(prompt)
        outputs = json.loads((folder / prompt / "sample_outputs.json").read_text())
        assert outputs["status"] == "success" and outputs["args"]["prompt"] == text
        assert probe_video(folder / "output.mp4").frames == probe_video(folder / prompt / "vision.mp4").frames == 8
        assert [p.name for p in folder.iterdir() if p.is_dir()] == [prompt]  # no other sample's folder
        assert json.loads((folder / "spec_used.json").read_text())["batch"]["items"] == 3


def test_a_wedge_runs_on_the_host_and_its_comparison_tiles_every_variant_with_gpu_seconds_and_cost(
    sshd, remote: FakeRemote, project: ProjectLayout, docker_client
) -> None:
    """`--vary seed=...` on the real host: the seed is a per-invocation flag of transfer.py, so each variant is its
    own invocation (never batched with another seed); the comparison has one tile per variant; each run records
    its GPU seconds and, with a price per GPU hour, its cost."""
    from cosmos_assets.prompts.wedge_vary import parse_vary
    from cosmos_assets.prompts.wedges import plan_wedge, write_wedge
    from cosmos_assets.runs.wedge_comparison import build_comparison

    write_spec(new_prompt_spec(SHOT, "a lane at dusk"), project.prompt_file("w_base"))
    plan = plan_wedge(project, project.prompt_file("w_base"), [parse_vary("seed=1,2,3")], name="lane")
    write_wedge(project, plan)
    variants = [v.prompt for v in plan.manifest.variants]
    host = make_host(sshd, remote)
    started = time.time()
    try:
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(PROMPTS.name, variants)
            result = dg.materialize(
                ALL_ASSETS,
                selection=["generated_videos"],
                instance=instance,
                raise_on_error=False,
                tags={ASSET_PARTITION_RANGE_START_TAG: variants[0], ASSET_PARTITION_RANGE_END_TAG: variants[-1]},
                resources={
                    "project": ProjectResource(root=str(project.root), gpu_price_per_hour=2.5),
                    "gpu_host": host,
                },
            )
    finally:
        host.close()
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert sorted(c[f"{LABEL_PREFIX}.prompt"] for c in generate_containers(docker_client, started)) == sorted(variants)
    records = {r.prompt: r for r in RunStore(project.runs_dir).all() if r.prompt in variants and r.state == "succeeded"}
    assert set(records) == set(variants)
    for record in records.values():
        assert record.gpu_seconds > 0 and record.num_gpus >= 1
        assert record.cost == pytest.approx(record.gpu_seconds / 3600 * 2.5)
    seeds = {json.loads((project.output_dir(v) / "spec_used.json").read_text())["spec"]["seed"] for v in variants}
    assert seeds == {1, 2, 3}

    comparison = build_comparison(project, "lane")
    assert [t.prompt for t in comparison.record.tiles] == variants
    assert [t.run_id for t in comparison.record.tiles] == [records[v].run_id for v in variants]
    assert probe_video(comparison.grid_video).frames == 8 and comparison.preview.sheet_path.exists()


PREFIXED_T25 = {"city": "a city street at dusk", "city_mask_v2": "a city street at dawn"}


def test_transfer2_5_prompts_whose_names_share_a_prefix_each_get_their_own_video(
    sshd, remote: FakeRemote, project: ProjectLayout, docker_client
) -> None:
    """Issue 17: ``city_mask_v2.*`` starts with ``city_mask_``; ``city`` took those files by prefix and both failed
    after the GPU time. ``city`` has a mask on edge, so upstream also writes ``city_mask_edge.mp4`` for it."""
    for prompt, text in PREFIXED_T25.items():
        data = new_prompt_spec(SHOT, text).to_json_dict()
        if prompt == "city":
            data["cosmos_assets"] = {T25: {"edge": {"mask_prompt": "the cars"}}}
        project.prompt_file(prompt).write_text(json.dumps(data))
    host = make_host(sshd, remote, model_images={T25: f"cosmos-transfer2.5-prefix:{uuid.uuid4().hex[:8]}"})
    started = time.time()
    try:
        result, materialized_keys = generate_range(project, host, list(PREFIXED_T25), model="transfer2.5")
    finally:
        host.close()
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert materialized_keys == set(PREFIXED_T25)
    assert [c[f"{LABEL_PREFIX}.prompt"] for c in generate_containers(docker_client, started)] == ["city+city_mask_v2"]
    controls = {f"_control_{key}.mp4" for key in ("vis", "edge", "depth", "seg")}
    for prompt, text in PREFIXED_T25.items():
        folder = project.output_dir(prompt)
        names = {p.name for p in folder.iterdir() if p.is_file()}
        model_files = {n for n in names if n.startswith("city")}
        expected = {f"{prompt}{suffix}" for suffix in {".json", ".mp4", ".txt", *controls}}
        assert model_files == expected | ({"city_mask_edge.mp4"} if prompt == "city" else set()), prompt
        assert (folder / f"{prompt}.txt").read_text() == text
        assert json.loads((folder / f"{prompt}.json").read_text())["name"] == prompt
        assert probe_video(folder / "output.mp4").frames == probe_video(folder / f"{prompt}.mp4").frames == 8
        used = json.loads((folder / "spec_used.json").read_text())
        assert used["prompt"] == prompt and used["spec"]["name"] == prompt and used["batch"]["items"] == 2
    batch = json.loads((project.outputs_dir / ".batches" / used["batch"]["batch_id"] / "batch.json").read_text())
    assert [(i["prompt"], i["status"], i["folder"]) for i in batch["items"]] == [
        ("city", "succeeded", "city"),
        ("city_mask_v2", "succeeded", "city_mask_v2"),
    ]
    assert batch["unclaimed_folders"] == []
    own_lines = (project.output_dir("city") / "run.log").read_text().split("the invocation's last lines:")[0]
    own_lines = own_lines.split("about this prompt:")[1]
    assert "item 0: city (run" in own_lines and "/city.mp4" in own_lines  # its lines, by whole name
    assert "item 1: city_mask_v2" not in own_lines and "city_mask_v2.mp4" not in own_lines  # not its neighbour's
