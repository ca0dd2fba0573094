"""SshGpuHost and SshHost without daemons: settings, argv building, secret handling, log re-attach bookkeeping."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.cli import main as cli_main
from cosmos_assets.defs.resources import SshGpuHost
from cosmos_assets.machines.docker_logs import LogFollower, since_arg, timestamp_ns
from cosmos_assets.machines.docker_run import docker_run_argv, parse_gpus, secrets_from_stdin
from cosmos_assets.machines.host_facts import HostFacts, absolute_remote_path, remote_child
from cosmos_assets.machines.job import InferenceJob, Invocation, StagedFile
from cosmos_assets.machines.ssh_host import SshHost
from cosmos_assets.models.transfer1 import required_checkpoints, upscale_spec
from cosmos_assets.progress import TransferProgress
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.prompts.spec import ControlSpec, TransferSpec
from cosmos_assets.redaction import redacted
from cosmos_assets.settings import Settings

SECRET = "hf_unit_secret_value"
CONFIG_VARS = (
    "REMOTE_HOST", "REMOTE_USER", "REMOTE_PORT", "SSH_KEY", "REMOTE_DIR", "CHECKPOINT_DIR_REMOTE", "DOCKER_IMAGE",
    "NUM_GPU", "COSMOS_DOCKER_GPUS", "COSMOS_KNOWN_HOSTS", "COSMOS_SSH_TRUST_ON_FIRST_USE", "COSMOS_CONTAINER_USER",
    "COSMOS_MIN_FREE_GB", "HF_TOKEN",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONFIG_VARS:
        monkeypatch.delenv(name, raising=False)


def facts(uid: int = 1000, gid: int = 1000) -> HostFacts:
    return HostFacts(
        home="/home/ubuntu",
        remote_dir="/home/ubuntu/cosmos-transfer1",
        checkpoint_dir="/home/ubuntu/checkpoints",
        uid=uid,
        gid=gid,
        user_source="remote user",
    )


def host(**fields: object) -> SshHost:
    machine = SshGpuHost(**{"host": "gpu1", "docker_image": "nvcr.io/me/cosmos-transfer1:latest", **fields}).machine()
    assert isinstance(machine, SshHost)
    machine._facts = facts()  # what the host would report; no connection needed for argv building
    return machine


ENTRY = "cosmos_transfer1/diffusion/inference/transfer.py"


def transfer_argv(num_gpus: int) -> tuple[str, ...]:
    """What the Cosmos-Transfer1 backend asks for (written out: the machine only passes it on)."""
    launcher = (
        ("python3",) if num_gpus == 1 else ("torchrun", f"--nproc_per_node={num_gpus}", "--nnodes=1", "--node_rank=0")
    )
    return (
        *launcher,
        ENTRY,
        "--checkpoint_dir",
        "./checkpoints",
        "--video_save_folder",
        "outputs/p1/20250101_120000_abcd1234",
        "--video_save_name",
        "output",
        "--controlnet_specs",
        "inputs/prompts/p1.json",
        "--offload_text_encoder_model",
        "--offload_guardrail_models",
        "--num_gpus",
        str(num_gpus),
    )


def job(num_gpus: int = 1) -> InferenceJob:
    invocation = Invocation(
        model="cosmos-transfer1",
        argv=transfer_argv(num_gpus),
        entry_point=ENTRY,
        output_folder="outputs/p1/20250101_120000_abcd1234",
        num_gpus=num_gpus,
        checkpoints=("nvidia/Cosmos-Transfer1-7B/base_model.pt",),
        guardrail_marker="GUARDRAIL BLOCKED",
    )
    return InferenceJob(
        run_id="20250101_120000_abcd1234",
        dagster_run_id="abcd1234-0000",
        stage="generate",
        prompt="p1",
        invocation=invocation,
        inputs=[StagedFile(local=Path("/x/p1.json"), remote="inputs/prompts/p1.json")],
    )


# --------------------------------------------------------------------------- settings


def test_remote_settings_read_the_seed_variables_and_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "REMOTE_HOST": "lambda-1",
        "REMOTE_USER": "ubuntu",
        "REMOTE_PORT": "2200",
        "SSH_KEY": "~/.ssh/l.pem",
        "REMOTE_DIR": "/data/cosmos-transfer1",
        "DOCKER_IMAGE": "nvcr.io/me/c:1",
        "NUM_GPU": "4",
        "COSMOS_DOCKER_GPUS": "none",
        "COSMOS_KNOWN_HOSTS": "/k",
        "COSMOS_SSH_TRUST_ON_FIRST_USE": "yes",
        "COSMOS_CONTAINER_USER": "1000:1000",
        "COSMOS_MIN_FREE_GB": "50",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings.from_env()
    assert (s.remote_host, s.remote_user, s.remote_port, s.ssh_key, s.num_gpus) == (
        "lambda-1",
        "ubuntu",
        2200,
        "~/.ssh/l.pem",
        4,
    )
    assert s.checkpoint_dir_or_default == "/data/cosmos-transfer1/../checkpoints"
    assert (s.docker_gpus, s.known_hosts, s.trust_on_first_use, s.container_user, s.min_free_gb) == (
        "none",
        "/k",
        True,
        "1000:1000",
        50.0,
    )
    host = SshGpuHost.from_settings(s)
    assert (host.host, host.user, host.port, host.docker_image, host.docker_gpus) == (
        "lambda-1",
        "ubuntu",
        2200,
        "nvcr.io/me/c:1",
        "none",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("COSMOS_SSH_TRUST_ON_FIRST_USE", "maybe"), ("COSMOS_MIN_FREE_GB", "lots"), ("REMOTE_PORT", "twenty-two")],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Settings.from_env()


def test_from_env_needs_remote_host_and_keeps_the_token_an_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="REMOTE_HOST"):
        SshGpuHost.from_settings(Settings.from_env())
    monkeypatch.setenv("REMOTE_HOST", "gpu1")
    assert SshGpuHost.from_settings(Settings.from_env()).hf_token is None
    monkeypatch.setenv("HF_TOKEN", SECRET)
    h = SshGpuHost.from_settings(Settings.from_env())
    assert isinstance(h.hf_token, dg.EnvVar) and h.hf_token.env_var_name == "HF_TOKEN"
    assert SECRET not in repr(h) and SECRET not in h.model_dump_json()


def test_settings_refuse_bad_gpus_users_and_secret_container_env() -> None:
    with pytest.raises(ValueError, match="docker_gpus"):
        SshGpuHost(host="h", docker_image="i", docker_gpus="0;rm -rf /")
    with pytest.raises(ValueError, match="uid:gid"):
        SshGpuHost(host="h", docker_image="i", container_user="ubuntu")
    with pytest.raises(ValueError, match="secrets do not go in config"):
        SshGpuHost(host="h", docker_image="i", container_env={"HF_TOKEN": "x"})
    assert parse_gpus("all") == "all" and parse_gpus("none") is None and parse_gpus("0, 1") == ("0", "1")


def test_remote_paths_expand_home_and_stay_inside_the_checkout() -> None:
    assert absolute_remote_path("~/cosmos-transfer1", "/home/u") == "/home/u/cosmos-transfer1"
    assert absolute_remote_path("NatsFS/cosmos-transfer1", "/home/u") == "/home/u/NatsFS/cosmos-transfer1"
    assert absolute_remote_path("/data/c/../checkpoints", "/home/u") == "/data/checkpoints"
    with pytest.raises(ValueError, match="~user"):
        absolute_remote_path("~bob/x", "/home/u")
    assert remote_child("/r", "inputs/videos/a/color.mp4") == "/r/inputs/videos/a/color.mp4"
    for bad in ("/etc/passwd", "../outside", "inputs/../../x"):
        with pytest.raises(ValueError):
            remote_child("/r", bad)


def test_required_checkpoints_follow_the_controls() -> None:
    seed = required_checkpoints(new_prompt_spec("s", "t"))  # vis, edge, depth and seg with depth+seg videos
    assert "nvidia/Cosmos-Transfer1-7B/base_model.pt" in seed
    assert {f"nvidia/Cosmos-Transfer1-7B/{c}_control.pt" for c in ("vis", "edge", "depth", "seg")} <= set(seed)
    assert "facebook/sam2-hiera-large" not in seed  # seg has its own video: no SAM2 needed
    derived = required_checkpoints(TransferSpec(input_video_path="v.mp4", seg=ControlSpec(control_weight=0.5)))
    assert {"facebook/sam2-hiera-large", "IDEA-Research/grounding-dino-tiny"} <= set(derived)
    up = required_checkpoints(upscale_spec("outputs/p/r/output.mp4"))
    assert (
        "nvidia/Cosmos-Transfer1-7B/4kupscaler_control.pt" in up
        and "nvidia/Cosmos-Transfer1-7B/vis_control.pt" not in up
    )
    assert "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer" in required_checkpoints(up_spec := upscale_spec("v.mp4"), True)
    assert up_spec.upscale is not None


# --------------------------------------------------------------------------- argv


def test_command_is_the_docker_run_of_the_seed_with_secrets_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    h = host(hf_token=dg.EnvVar("HF_TOKEN"), container_env={"COSMOS_PREVIEW_STEP_SECONDS": "0.5"})
    j = job()
    argv = h.command_for(j)
    assert argv[:5] == ["docker", "run", "-d", "--name", h.docker_settings(j).container_name]
    assert argv[argv.index("--gpus") + 1] == "all" and "--ipc=host" in argv
    assert argv[argv.index("-u") + 1] == "1000:1000"
    assert (
        "/home/ubuntu/cosmos-transfer1:/workspace" in argv and "/home/ubuntu/checkpoints:/workspace/checkpoints" in argv
    )
    assert argv[argv.index("-w") + 1] == "/workspace"
    assert "HF_TOKEN" in argv and "COSMOS_PREVIEW_STEP_SECONDS=0.5" in argv and "PYTHONUNBUFFERED=1" in argv
    assert "cosmos-assets.prompt=p1" in argv and "cosmos-assets.stage=generate" in argv
    assert argv[argv.index("nvcr.io/me/cosmos-transfer1:latest") + 1 :] == list(j.invocation.argv)
    assert not any(SECRET in a for a in argv)
    settings = h.docker_settings(j)
    assert redacted({"PYTHONPATH": "/workspace", **settings.env})["HF_TOKEN"] == "***"
    assert SECRET not in repr(settings) and SECRET not in repr(h)
    wrapped = secrets_from_stdin(["HF_TOKEN"], argv)
    assert wrapped[:2] == ["sh", "-c"] and "read -r HF_TOKEN" in wrapped[2] and wrapped[4:] == argv
    assert not any(SECRET in a for a in wrapped)


def test_torchrun_for_several_gpus_and_gpu_settings() -> None:
    argv = host(docker_gpus="0,1").command_for(job(num_gpus=2))
    assert argv[argv.index("--gpus") + 1] == '"device=0,1"'
    assert argv[argv.index("nvcr.io/me/cosmos-transfer1:latest") + 1] == "torchrun"
    assert "--gpus" not in host(docker_gpus="none").command_for(job())
    assert docker_run_argv(host().docker_settings(job()), ["true"])[-1] == "true"


def test_openssh_argv_uses_the_resolved_settings(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host lambda\n  HostName 203.0.113.7\n  User ubuntu\n  Port 2222\n  IdentityFile ~/.ssh/l.pem\n")
    known = tmp_path / "my known_hosts"
    h = SshGpuHost(host="lambda", docker_image="i", ssh_config=str(config), known_hosts=str(known))
    argv = h.openssh_argv()
    assert argv[:3] == ["ssh", "-p", "2222"]
    assert argv[argv.index("-F") + 1] == str(config)
    assert argv[argv.index("-i") + 1] == str(Path("~/.ssh/l.pem").expanduser())
    assert f'UserKnownHostsFile="{known}"' in argv and "StrictHostKeyChecking=yes" in argv
    assert argv[-2:] == ["--", "ubuntu@203.0.113.7"]
    tofu = SshGpuHost(
        host="lambda",
        docker_image="i",
        ssh_config=str(config),
        trust_on_first_use=True,
        user="root",
        port=22,
        ssh_key="/k",
    )
    assert tofu.machine().openssh_argv(["x"]) == tofu.openssh_argv(["x"])
    targv = tofu.openssh_argv(["nvidia-smi", "-L"])
    assert "StrictHostKeyChecking=accept-new" in targv and targv[-4:] == ["--", "root@203.0.113.7", "nvidia-smi", "-L"]
    assert targv[targv.index("-i") + 1] == "/k" and targv[:3] == ["ssh", "-p", "22"]


def test_cli_ssh_execs_the_openssh_client_without_a_shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr("os.execvp", lambda file, args: calls.append((file, list(args))))
    for k, v in {
        "REMOTE_HOST": "198.51.100.4",
        "REMOTE_USER": "ubuntu",
        "REMOTE_PORT": "22",
        "SSH_KEY": "/keys/lambda key.pem",
        "COSMOS_KNOWN_HOSTS": str(tmp_path / "kh"),
    }.items():
        monkeypatch.setenv(k, v)
    assert cli_main(["ssh"]) == 0
    assert calls == [
        (
            "ssh",
            [
                "ssh",
                "-p",
                "22",
                "-i",
                "/keys/lambda key.pem",
                "-o",
                f"UserKnownHostsFile={tmp_path / 'kh'}",
                "-o",
                "StrictHostKeyChecking=yes",
                "--",
                "ubuntu@198.51.100.4",
            ],
        )
    ]
    cli_main(["ssh", "docker", "ps", "-a"])
    assert calls[-1][1][-4:] == ["ubuntu@198.51.100.4", "docker", "ps", "-a"]


# --------------------------------------------------------------------------- logs across re-attach


def test_timestamps_parse_to_nanoseconds() -> None:
    ns = timestamp_ns("2025-01-02T03:04:05.123456789Z")
    assert ns == 1735787045123456789 and since_arg(ns) == "1735787045.123456789"
    assert timestamp_ns("2025-01-02T04:04:05.5+01:00") == 1735787045500000000
    assert timestamp_ns("not-a-time") is None


def test_follower_delivers_each_line_once_across_a_reattach() -> None:
    got: list[str] = []
    f = LogFollower(got.append, deque(maxlen=3), guardrail_marker="GUARDRAIL BLOCKED")
    t = "2025-01-02T03:04:05.00000000{}Z"
    for i, text in enumerate(["a", "b", "c"]):
        f.feed(f"{t.format(i)} {text}")
    f.feed(f"{t.format(2)} c2")  # same timestamp as "c"
    assert f.since() == "1735787045.000000002"
    f.resume()  # re-read from --since: "c" and "c2" come again, then new lines
    for raw in (f"{t.format(2)} c", f"{t.format(2)} c2", f"{t.format(3)} d", f"{t.format(3)} GUARDRAIL BLOCKED: x"):
        f.feed(raw)
    f.feed("Error response from daemon: something")  # docker's own message: passed on as is
    assert got == ["a", "b", "c", "c2", "d", "GUARDRAIL BLOCKED: x", "Error response from daemon: something"]
    assert f.guardrail and list(f.tail) == got[-3:]


def test_progress_lines_use_the_shared_format_and_count_files_from_bytes() -> None:
    """What SshHost.upload/download do with the transfer's (done, total) callback."""
    lines: list[str] = []
    progress = TransferProgress.for_files("upload", [100, 0, 300], lines.append, every=3600)
    progress.callback(50, 400)  # throttled: not the end, too soon
    progress.callback(100, 400)
    progress.callback(400, 400)
    progress.finish()  # the end always logs
    assert len(lines) == 1 and lines[0].startswith("[transfer] upload 400 B / 400 B (100%), 3/3 files")
