"""The host pool without daemons: the pool file, Dagster's concurrency slots per host (a real SQLite instance), and
a GPU step placed on a pool whose first host does not answer (a closed port) and whose second is this machine."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.defs.assets import generated_videos
from cosmos_assets.defs.assets.prompts import prompt_specs
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.resources import GpuHost, LocalPreviewHost, SshGpuHost, gpu_host_from_settings
from cosmos_assets.defs.resources.host_pool import GpuHostPool
from cosmos_assets.defs.resources.project import ProjectResource
from cosmos_assets.defs.resources.slots import ANY_GPU_POOL, HostClaims, ensure_limits, host_pool, runs_on
from cosmos_assets.machines.pool_file import HostEntry, PoolFileError, load_host_pool
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.priority import parse_priority, priority_tags
from cosmos_assets.settings import Settings
from tests.project_factory import make_project

GOOD_YAML = """
hosts:
  - name: gpu-a
    ssh: ubuntu@10.1.2.3:2222
    remote_dir: /data/cosmos-transfer1
    image: cosmos-transfer1:v1
    gpus: "0,1"
    models: [transfer1, cosmos3]
    price_per_gpu_hour: 2.5
  - name: cpu
    ssh: local
    remote_dir: /tmp/preview-root
    models: [preview]
"""


def write(tmp_path: Path, text: str, name: str = "hosts.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_yaml_pool_file_gives_one_resource_per_host_with_its_models_price_and_target(tmp_path: Path) -> None:
    pool = GpuHostPool.from_file(write(tmp_path, GOOD_YAML))
    a, cpu = pool.members()
    assert isinstance(a, SshGpuHost) and isinstance(cpu, LocalPreviewHost)
    assert (a.user, a.host, a.port, a.label) == ("ubuntu", "10.1.2.3", 2222, "gpu-a")
    assert a.models == ["cosmos-transfer1", "cosmos3"] and a.price_per_gpu_hour == 2.5 and a.docker_gpus == "0,1"
    assert a.has_model("cosmos3") and not a.has_model("preview") and cpu.has_model("preview")
    assert pool.model == "cosmos-transfer1"  # the first host's first model when COSMOS_MODEL is unset
    assert pool.queue_tags() == {"cosmos/gpu_pool": "hosts"}  # no gpu_host tag: it would queue one run at a time
    assert a.priced({"gpu_price_per_hour": 9.0, "force": True}) == {"gpu_price_per_hour": 2.5, "force": True}
    assert cpu.priced({"gpu_price_per_hour": 9.0}) == {"gpu_price_per_hour": 9.0}


def test_a_toml_pool_file_reads_the_same(tmp_path: Path) -> None:
    text = (
        '[[hosts]]\nname = "gpu-a"\nssh = "gpu-alias"\nmodels = ["cosmos-transfer2.5"]\nhf_token_env = "HF_TOKEN_A"\n'
    )
    pool = load_host_pool(write(tmp_path, text, "hosts.toml"))
    assert pool.hosts[0].ssh_parts() == (None, "gpu-alias", None) and pool.hosts[0].models == ["cosmos-transfer2.5"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hosts:\n  - {name: a, ssh: 'x y'}\n", "host a, field ssh: Value error, is not '[user@]host[:port]'"),
        (
            "hosts:\n  - {name: a, ssh: h, models: [dall-e]}\n",
            "host a, field models: Value error, model 'dall-e' is not a backend",
        ),
        ("hosts:\n  - {name: a, ssh: h}\n  - {name: a, ssh: g}\n", "two hosts are named 'a'"),
        ("hosts:\n  - {name: a, ssh: h, container_env: {HF_TOKEN: hf_x}}\n", "HF_TOKEN looks like a secret"),
        ("hosts:\n  - {name: a, ssh: h, gpu: all}\n", "host a, field gpu: Extra inputs are not permitted"),
        ("hosts:\n  - {name: a, ssh: local}\n", "ssh: local runs only the preview backend"),
        ("hosts: [\n", "not valid YAML"),
        ("- a\n", "expected a mapping with a 'hosts' list"),
    ],
)
def test_a_bad_pool_file_is_one_line_naming_file_host_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PoolFileError) as caught:
        load_host_pool(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and expected.replace("Value error, ", "") in message


def test_a_missing_pool_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(PoolFileError, match="COSMOS_HOSTS_FILE .*nope.yaml: cannot read it"):
        load_host_pool(tmp_path / "nope.yaml")


def test_the_setting_picks_the_pool_and_without_it_the_single_host_settings_are_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_YAML)
    pooled = gpu_host_from_settings(
        Settings.from_env({"COSMOS_HOSTS_FILE": str(path), "COSMOS_PROJECT_ROOT": str(tmp_path)})
    )
    assert isinstance(pooled, GpuHostPool) and [m.label for m in pooled.members()] == ["gpu-a", "preview@cpu"]
    single = gpu_host_from_settings(Settings.from_env({"COSMOS_PROJECT_ROOT": str(tmp_path)}))
    assert isinstance(single, LocalPreviewHost) and single.members() == [single]
    assert single.queue_tags() == {"gpu_host": "preview@local"}


def test_priority_names_and_numbers() -> None:
    assert [parse_priority(v) for v in ("urgent", "normal", "backfill", "wedge", "-3", 7)] == [100, 0, -50, -50, -3, 7]
    assert (
        priority_tags("urgent") == {"dagster/priority": "100"}
        and priority_tags("normal") == {}
        and priority_tags(None) == {}
    )
    with pytest.raises(ValueError, match="priority 'soon' is not one of urgent"):
        parse_priority("soon")


# --------------------------------------------------------------------------- Dagster's slots, one per host


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """One instance for these tests (a new one costs seconds); each test uses host names of its own."""
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as inst:
        assert inst.event_log_storage.supports_global_concurrency_limits
        yield inst


def fake_run(priority: int = 0) -> dg.DagsterRun:
    tags = {"dagster/priority": str(priority)} if priority else {}
    return dg.DagsterRun(job_name="generate_job", run_id=str(uuid.uuid4()), tags=tags)


def test_limits_are_one_per_host_and_the_any_gpu_pool_is_the_host_count(instance: dg.DagsterInstance) -> None:
    said: list[str] = []
    ensure_limits(instance, ["l1", "l2", "l3"], 3, said.append)
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    assert {k: v for k, v in limits.items() if k.startswith("gpu_host/l") or k == ANY_GPU_POOL} == {
        host_pool("l1"): 1,
        host_pool("l2"): 1,
        host_pool("l3"): 1,
        ANY_GPU_POOL: 3,
    }
    assert said == ["Dagster pool gpu_host set to 3 slot(s): one per host in the pool file"]
    instance.event_log_storage.set_concurrency_slots(host_pool("l2"), 0)  # drained on the concurrency page
    ensure_limits(instance, ["l1", "l2", "l3"], 3, said.append)
    assert instance.event_log_storage.get_concurrency_info(host_pool("l2")).slot_count == 0 and len(said) == 1


def test_a_busy_host_goes_to_the_next_waiter_by_priority_and_a_dead_runs_slots_are_freed(
    instance: dg.DagsterInstance,
) -> None:
    holder, low, urgent = fake_run(), fake_run(), fake_run(100)
    log: list[str] = []
    first = HostClaims(instance, holder, "generated_videos")
    assert first.claim_first(["a"], log.append) == "a" and runs_on(instance, "a") == ([holder.run_id], 0)
    got: list[str] = []
    waiters = [
        threading.Thread(
            target=lambda r=r: got.append(
                HostClaims(instance, r, "generated_videos").claim_first(["a"], log.append) and r.run_id
            )
        )
        for r in (low, urgent)
    ]
    waiters[0].start()
    _until(lambda: runs_on(instance, "a")[1] == 1)
    waiters[1].start()
    _until(lambda: runs_on(instance, "a")[1] == 2)
    assert any("all hosts that can take generated_videos are busy (a)" in line for line in log)
    instance.event_log_storage.free_concurrency_slots_for_run(
        holder.run_id
    )  # what defs/sensors/dead_runs.py does for a dead run
    _until(lambda: len(got) == 1)
    assert got == [urgent.run_id] and runs_on(instance, "a") == ([urgent.run_id], 1)  # the urgent run jumped the queue
    HostClaims(instance, urgent, "generated_videos").release("a")
    _until(lambda: len(got) == 2)
    assert got[1] == low.run_id
    for thread in waiters:
        thread.join(timeout=10)


def test_a_step_waiting_on_two_hosts_takes_the_first_free_and_leaves_the_other_queue(
    instance: dg.DagsterInstance,
) -> None:
    busy_a, busy_b, waiter = fake_run(), fake_run(), fake_run()
    HostClaims(instance, busy_a, "s").claim_first(["c"], print)
    HostClaims(instance, busy_b, "s").claim_first(["d"], print)
    result: list[str] = []
    thread = threading.Thread(
        target=lambda: result.append(HostClaims(instance, waiter, "s").claim_first(["c", "d"], print))
    )
    thread.start()
    _until(lambda: runs_on(instance, "c")[1] == 1 and runs_on(instance, "d")[1] == 1)
    HostClaims(instance, busy_b, "s").release("d")
    thread.join(timeout=20)
    assert result == ["d"]
    assert runs_on(instance, "c") == ([busy_a.run_id], 0)  # its place in a's queue was given back
    assert runs_on(instance, "d") == ([waiter.run_id], 0)


def _until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# --------------------------------------------------------------------------- a GPU step on a pool


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_an_unreachable_host_is_skipped_with_a_log_line_and_the_run_goes_to_the_next(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    layout = make_project(tmp_path / "project")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    pool_file = write(
        tmp_path,
        f"""
hosts:
  - name: gone
    ssh: root@127.0.0.1:{closed_port()}
    known_hosts: {known_hosts}
    ssh_config: {tmp_path / "no-ssh-config"}
    models: [preview]
    reconnect_attempts: 0
  - name: cpu
    ssh: local
    remote_dir: {tmp_path / "preview-root"}
    models: [preview]
    price_per_gpu_hour: 0
""",
    )
    pool = GpuHostPool.from_file(pool_file)
    instance.add_dynamic_partitions(PROMPTS.name, ["tiny_prompt"])
    result = dg.materialize(
        [prompt_specs, generated_videos],
        selection=[generated_videos],
        partition_key="tiny_prompt",
        instance=instance,
        resources={"project": ProjectResource(root=str(layout.root)), "gpu_host": pool},
    )
    assert result.success
    messages = [e.message or "" for e in instance.all_logs(result.run_id)]
    run = instance.get_run_by_id(result.run_id)
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    assert any(m.startswith("host gone skipped for this run: cannot connect to gone") for m in messages), messages
    assert any("host preview@cpu chosen for preview" in m for m in messages)
    assert result.asset_materializations_for_node("generated_videos")[0].metadata["host"].value == "preview@cpu"
    assert run is not None and run.tags["cosmos/host"] == "preview@cpu"
    assert [h.host for h in read_history(layout.history_log) if h.status == "success"] == ["preview@cpu"]
    assert limits[ANY_GPU_POOL] == 2 and limits[host_pool("gone")] == 1 and limits[host_pool("preview@cpu")] == 1


def test_a_model_no_host_has_is_refused_naming_the_hosts(tmp_path: Path) -> None:
    pool = GpuHostPool.from_file(write(tmp_path, "hosts:\n  - {name: cpu, ssh: local, models: [preview]}\n"))
    with pytest.raises(Exception, match="no host in the pool has the model cosmos3 .hosts: preview@cpu .preview.."):
        pool.on_free_host(None, "cosmos3", lambda host: host)  # type: ignore[arg-type]
    assert isinstance(pool, GpuHost)


def test_a_host_holding_an_unfinished_run_of_the_same_work_is_tried_first(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    from cosmos_assets.runs.record import RunRecord
    from cosmos_assets.runs.record_store import RunStore

    layout = make_project(tmp_path / "project", prompt="left_prompt")
    RunStore(layout.runs_dir).save(
        RunRecord(
            run_id="20260101_000000_deadbeef",
            stage="generate",
            prompt="left_prompt",
            host="preview@second",
            state="running",
            runtime="process",
            model="preview",
            model_label="preview",
            preview=True,
            remote_output_folder="outputs/left_prompt/20260101_000000_deadbeef",
            spec={},
            spec_remote_path="inputs/prompts/left_prompt.json",
            spec_sha256="",
        )
    )  # fmt: skip: its orchestrator died mid-run on the second host
    pool_file = write(
        tmp_path,
        "hosts:\n"
        + "".join(
            f"  - {{name: {name}, ssh: local, remote_dir: {tmp_path / name}, models: [preview]}}\n"
            for name in ("first", "second")
        ),
    )
    instance.add_dynamic_partitions(PROMPTS.name, ["left_prompt"])
    result = dg.materialize(
        [prompt_specs, generated_videos],
        selection=[generated_videos],
        partition_key="left_prompt",
        instance=instance,
        resources={"project": ProjectResource(root=str(layout.root)), "gpu_host": GpuHostPool.from_file(pool_file)},
    )
    assert result.success
    messages = [e.message or "" for e in instance.all_logs(result.run_id)]
    assert any(
        "host preview@second chosen for preview (an earlier run of this work was left on it)" in m for m in messages
    )
    assert result.asset_materializations_for_node("generated_videos")[0].metadata["host"].value == "preview@second"


# ---------------------------------------------------------------------------------------------------------
# every numeric field of a host: finite numbers only; what the host's resource refuses names file, host and field


def _numeric_fields(kind: type) -> list[str]:
    fields = []
    for name, field in HostEntry.model_fields.items():
        kinds = set(getattr(field.annotation, "__args__", ())) | {field.annotation}
        if kind in kinds and bool not in kinds:
            fields.append(name)
    return fields


def test_the_numeric_fields_are_found() -> None:
    assert set(_numeric_fields(float)) >= {"price_per_gpu_hour", "min_free_gb"}
    assert "reconnect_attempts" in _numeric_fields(int)


@pytest.mark.parametrize("field", _numeric_fields(float) + _numeric_fields(int))
@pytest.mark.parametrize(
    ("suffix", "value"),
    [
        (".yaml", ".inf"),
        (".yaml", "-.inf"),
        (".yaml", ".nan"),
        (".yaml", "1e400"),
        (".toml", "inf"),
        (".toml", "-inf"),
        (".toml", "nan"),
    ],
)
def test_a_number_that_is_not_finite_is_refused_naming_file_host_and_field(
    tmp_path: Path, field: str, suffix: str, value: str
) -> None:
    if suffix == ".yaml":
        text = f"hosts:\n  - {{name: gpu-a, ssh: 'u@h', {field}: {value}}}\n"
    else:
        text = f'[[hosts]]\nname = "gpu-a"\nssh = "u@h"\n{field} = {value}\n'
    path = write(tmp_path, text, "hosts" + suffix)
    with pytest.raises(PoolFileError) as caught:
        GpuHostPool.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: host gpu-a, field {field}: ") and "\n" not in message
    assert "fix the file (docs/hosts.md)" in message


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        ("ssh: '-oquiet'", "ssh", "is not a usable host or user name"),
        ("ssh: 'u@h:99999'", "ssh", "port 99999 is not a TCP port"),
        ("ssh: 'u@h', container_user: 'root;id'", "container_user", "must be numeric uid:gid"),
        ("ssh: 'u@h', reconnect_attempts: 1000000", "reconnect_attempts", "less than or equal to 100"),
    ],
)
def test_what_a_hosts_resource_refuses_is_one_line_naming_file_host_and_field(
    tmp_path: Path, entry: str, field: str, says: str
) -> None:
    path = write(tmp_path, f"hosts:\n  - {{name: gpu-a, {entry}}}\n")
    with pytest.raises(PoolFileError) as caught:
        gpu_host_from_settings(
            Settings.from_env({"COSMOS_HOSTS_FILE": str(path), "COSMOS_PROJECT_ROOT": str(tmp_path)})
        )
    message = str(caught.value)
    assert message.startswith(f"{path}: host gpu-a, field {field}: ") and says in message and "\n" not in message
    assert "GpuHostPool" not in message and "validation error" not in message


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: os.mkfifo(path), "is a FIFO (named pipe), not a regular file"),
        (lambda path: path.write_bytes(b"hosts: []\n" + b"#" * (1024 * 1024)), "is larger than 1048576 bytes"),
        (lambda path: path.write_bytes(b"hosts:\n  - {name: \xff}\n"), "not UTF-8 text"),
    ],
)
def test_a_pool_file_that_cannot_be_one_is_refused_before_it_is_parsed(tmp_path: Path, make, says: str) -> None:
    path = tmp_path / "hosts.yaml"
    make(path)
    with pytest.raises(PoolFileError) as caught:
        load_host_pool(path)
    message = str(caught.value)
    assert message.startswith(f"COSMOS_HOSTS_FILE {path}") and says in message and "\n" not in message


@pytest.mark.parametrize("value", ["1000001", "-99999999999999999999", 10**12])
def test_a_priority_beyond_what_dagster_stores_is_refused(value: str | int) -> None:
    with pytest.raises(ValueError, match="is outside -1000000 to 1000000"):
        parse_priority(value)
    assert parse_priority("1000000") == 1000000 and parse_priority(-1000000) == -1000000


@pytest.mark.parametrize("field", ["remote_dir", "checkpoints", "ssh_key", "known_hosts", "ssh_config"])
@pytest.mark.parametrize("value", ["a\\u0000b", "a\\nb", ""])
def test_a_path_field_with_a_control_character_or_nothing_is_refused_at_load(
    tmp_path: Path, field: str, value: str
) -> None:
    path = write(tmp_path, f'hosts:\n  - {{name: gpu-a, ssh: "u@h", {field}: "{value}"}}\n')
    with pytest.raises(PoolFileError) as caught:
        load_host_pool(path)
    assert str(caught.value).startswith(f"{path}: host gpu-a, field {field}: is empty or holds a control character")
    assert "\n" not in str(caught.value)


def test_a_pool_file_named_with_a_line_break_is_named_on_one_line(tmp_path: Path) -> None:
    with pytest.raises(PoolFileError) as caught:
        load_host_pool(tmp_path / "a\nb.yaml")
    assert "\n" not in str(caught.value) and "a\\nb.yaml: cannot read it" in str(caught.value)
