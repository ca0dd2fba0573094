"""Out of memory (runs/oom.py): recognised from the log and the exit, failed with its fix, never retried by the
step's RetryPolicy, and retried once with the offload flags as a new run when COSMOS_OOM_RETRY_OFFLOAD asks.

The runner tests use the real preview program as a local process: a prompt holding ``OOM_TEST_GPU`` makes it end
like torch out of GPU memory unless ``--offload_diffusion_transformer`` is on its command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosmos_assets.defs.assets.gpu_step import failure_from
from cosmos_assets.machines.job import Invocation
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs import oom
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import OutOfMemory, run_generation
from cosmos_assets.settings import Settings
from tests.project_factory import make_project

TORCH_LINE = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of "
    "79.10 GiB of which 1.20 GiB is free."
)
PREVIEW = backend_named("preview")


def _invocation(model: str, argv: tuple[str, ...], num_gpus: int = 1, settings: dict | None = None) -> Invocation:
    return Invocation(
        model=model,
        argv=argv,
        entry_point="run.py",
        output_folder="outputs/p/r",
        num_gpus=num_gpus,
        settings=settings or {},
    )


@pytest.mark.parametrize(
    "exit_code, lines, oom_killed, kind",
    [
        (1, ["step 3/35", "Traceback (most recent call last):", TORCH_LINE], None, "gpu"),
        (
            1,
            [
                "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:",
                "RuntimeError: CUDA error: out of memory",
            ],
            None,
            "gpu",
        ),
        (137, ["step 3/35"], True, "host"),
        (137, ["step 3/35"], None, "host"),
        (1, ["error: missing input"], False, None),
        (0, [TORCH_LINE], None, None),  # a line that merely mentions it, in a run that succeeded
    ],
)
def test_memory_failures_are_told_apart(
    exit_code: int, lines: list[str], oom_killed: bool | None, kind: str | None
) -> None:
    found = oom.memory_failure(exit_code, lines, oom_killed)
    assert (found.kind if found else None) == kind
    if kind == "host" and oom_killed:
        assert "OOMKilled" in found.evidence
    if kind == "host" and not oom_killed:
        assert "137" in found.evidence and "by hand" in found.evidence


def test_the_fix_names_offload_more_gpus_and_a_shorter_clip_per_model() -> None:
    gpu = oom.MemoryFailure("gpu", TORCH_LINE)
    t1 = backend_named("cosmos-transfer1")
    argv = ("python3", "transfer.py", "--offload_text_encoder_model", "--offload_guardrail_models", "--num_gpus", "2")
    text = oom.fix_text(gpu, t1, _invocation("cosmos-transfer1", argv, 2), retry_on=False)
    assert "\n" not in text
    assert (
        "--offload_diffusion_transformer" in text
        and "--offload_text_encoder_model" not in text.split("Fix:")[1].split(";")[0]
    )
    assert (
        "COSMOS_OOM_RETRY_OFFLOAD=1" in text
        and "num_gpus" in text
        and "this run had 2" in text
        and "shorter clip" in text
    )
    assert '"offload_diffusion_transformer": true' in text

    t25 = backend_named("cosmos-transfer2.5")
    text = oom.fix_text(gpu, t25, _invocation("cosmos-transfer2.5", ("python", "examples/inference.py")), retry_on=True)
    assert "cannot offload its diffusion model" in text and "--offload-guardrail-models" in text
    assert "retried once" in text

    c3 = backend_named("cosmos3")
    off = _invocation("cosmos3", ("python", "-m", "x", "--no-guardrails"))
    assert oom.missing_offload_flags(c3, off) == []  # guardrail offload is moot without guardrails
    assert "FSDP" in oom.fix_text(gpu, c3, off, retry_on=True)

    host = oom.fix_text(
        oom.MemoryFailure("host", "exit code 137, docker reports the container OOMKilled"),
        t1,
        _invocation("cosmos-transfer1", argv),
        retry_on=True,
    )
    assert "RAM" in host and "make it worse" in host and "COSMOS_OOM_RETRY_OFFLOAD" not in host


def test_with_offload_adds_the_flags_and_says_so_in_the_settings() -> None:
    inv = _invocation(
        "cosmos-transfer1",
        ("python3", "t.py", "--num_gpus", "1"),
        settings={"offload_diffusion_transformer": False, "num_gpus": 1},
    )
    out = oom.with_offload(inv, ["--offload_diffusion_transformer"])
    assert out.argv[-1] == "--offload_diffusion_transformer" and out.settings["offload_diffusion_transformer"] is True
    assert inv.argv[-1] == "1"  # the original is unchanged


def test_the_setting_reads_on_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSMOS_OOM_RETRY_OFFLOAD", "on")
    assert Settings().oom_retry_offload is True
    monkeypatch.setenv("COSMOS_OOM_RETRY_OFFLOAD", "maybe")
    with pytest.raises(ValueError, match="on/off"):
        Settings()


# --------------------------------------------------------------------------- through the runner (preview program)


@pytest.fixture
def project(tmp_path: Path):
    layout = make_project(tmp_path / "project")
    host = LocalMachine(tmp_path / "host" / "cosmos-transfer1", label="preview@local")
    first = run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="11111111")  # an earlier good run
    write_spec(new_prompt_spec("tiny_shot", "a quiet street at dusk OOM_TEST_GPU"), layout.prompt_file("tiny_prompt"))
    return layout, host, first.video.read_bytes()


def test_out_of_gpu_memory_fails_with_its_fix_and_is_not_retried_by_default(project) -> None:
    layout, host, earlier = project
    with pytest.raises(OutOfMemory) as caught:
        run_generation(layout, host, PREVIEW, "tiny_prompt", dagster_run_id="22222222")
    first_line = str(caught.value).splitlines()[0]
    assert "out of GPU memory (torch.OutOfMemoryError: CUDA out of memory" in first_line
    assert "--offload_diffusion_transformer" in first_line and "COSMOS_OOM_RETRY_OFFLOAD=1" in first_line
    assert "num_gpus" in first_line and "shorter clip" in first_line
    failure = failure_from(caught.value)
    assert failure.metadata["cause"].value == "out_of_memory" and failure.metadata["retryable"].value is False
    assert failure.allow_retries is False and "\n" not in failure.description

    history = read_history(layout.history_log)
    assert [(h.status, h.cause) for h in history] == [("success", None), ("failed", "out_of_memory")]
    assert (layout.output_dir("tiny_prompt") / "output.mp4").read_bytes() == earlier  # earlier outputs untouched
    assert len(RunStore(layout.runs_dir).all()) == 2  # no retry


def test_the_opt_in_retry_is_a_new_run_with_the_offload_flags(project) -> None:
    layout, host, earlier = project
    lines: list[str] = []
    result = run_generation(
        layout, host, PREVIEW, "tiny_prompt", dagster_run_id="33333333", log=lines.append, oom_retry_offload=True
    )
    failed, retry = RunStore(layout.runs_dir).all()[1:]
    assert failed.state == "failed" and failed.cause == "out_of_memory"
    assert "--offload_diffusion_transformer" not in failed.command
    assert retry.run_id == f"{failed.run_id}_offload" and result.record.run_id == retry.run_id
    assert retry.retry_of == failed.run_id and retry.state == "succeeded" and retry.adopted_by == []
    assert "--offload_diffusion_transformer" in retry.flags_added and "--offload_diffusion_transformer" in retry.command
    assert retry.remote_output_folder != failed.remote_output_folder
    used = json.loads((layout.output_dir("tiny_prompt") / "spec_used.json").read_text())
    assert used["run_id"] == retry.run_id and "--offload_diffusion_transformer" in used["command"]
    assert used["settings"]["offload_diffusion_transformer"] is True
    assert any("retrying once as a new run" in line for line in lines)

    history = read_history(layout.history_log)
    assert [(h.status, h.cause, h.retry_of) for h in history] == [
        ("success", None, None),
        ("failed", "out_of_memory", None),
        ("success", None, failed.run_id),
    ]
    assert "--offload_diffusion_transformer" in history[-1].flags_added
    moved = layout.previous_outputs_dir / "tiny_prompt"
    assert [p.read_bytes() for p in moved.glob("*/output.mp4")] == [earlier]  # the earlier run moved aside, intact
