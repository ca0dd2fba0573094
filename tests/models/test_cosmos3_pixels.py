"""Cosmos 3: every setting that changes the pixels is explicit (issue 20): the diffusion cache, the checkpoint pin, the
multi-control defaults, and the transfer memory floor with its source."""

from __future__ import annotations

import pytest

from cosmos_assets.models import cosmos3_pixels as pixels
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.prompts.spec import SpecError, TransferSpec, parse_spec

C3 = "cosmos3"
PIN = "0123456789abcdef0123456789abcdef01234567"


def spec_with(**extra: object) -> TransferSpec:
    data = new_prompt_spec("shot_a", "a street").to_json_dict()
    data.update(extra)
    return parse_spec(data, "p1.json")


def one_control(**extra: object) -> TransferSpec:
    data = {
        "prompt": "a street",
        "input_video_path": "inputs/videos/shot_a/color.mp4",
        "edge": {"control_weight": 1.0},
        **extra,
    }
    return parse_spec(data, "p1.json")


@pytest.mark.parametrize(
    ("block", "flag"),
    [
        ({}, "--no-diffusion-cache"),
        ({"diffusion_cache": False}, "--no-diffusion-cache"),
        ({"diffusion_cache": True}, "--diffusion-cache"),
    ],
)
def test_the_diffusion_cache_is_always_passed_and_recorded(block: dict, flag: str) -> None:
    inv = backend_named(C3).generation("p1", spec_with(cosmos_assets={C3: block}), "r1", 1).invocation
    assert inv.argv[-1] == flag
    assert inv.settings["diffusion_cache"] is (flag == "--diffusion-cache")
    other = "--diffusion-cache" if flag == "--no-diffusion-cache" else "--no-diffusion-cache"
    assert other not in inv.argv


def test_the_diffusion_cache_takes_only_a_boolean() -> None:
    with pytest.raises(SpecError, match="diffusion_cache"):
        backend_named(C3).generation("p1", spec_with(cosmos_assets={C3: {"diffusion_cache": "yes"}}), "r1", 1)


def test_a_pinned_revision_goes_offline_and_is_checked_on_the_host() -> None:
    pinned = backend_named(C3).generation("p1", spec_with(cosmos_assets={C3: {"checkpoint_revision": PIN}}), "r1", 1)
    inv = pinned.invocation
    assert inv.pinned_revisions == {"nvidia/Cosmos3-Nano": PIN} and inv.env["HF_HUB_OFFLINE"] == "1"
    assert inv.revision_files == {"nvidia/Cosmos3-Nano": "cache/huggingface/hub/models--nvidia--Cosmos3-Nano/refs/main"}
    assert inv.settings["checkpoint_revision"] == PIN
    free = backend_named(C3).generation("p1", spec_with(), "r1", 1).invocation
    assert (
        free.pinned_revisions == {} and "HF_HUB_OFFLINE" not in free.env and free.revision_files == inv.revision_files
    )
    with pytest.raises(SpecError, match="checkpoint_revision"):
        backend_named(C3).generation("p1", spec_with(cosmos_assets={C3: {"checkpoint_revision": "main"}}), "r1", 1)


def test_several_controls_get_the_generic_defaults_written_and_said() -> None:
    request = backend_named(C3).generation("p1", spec_with(guidance=3), "r1", 1)
    spec = request.spec
    assert spec["guidance"] == 3  # the prompt's own value stays
    assert (spec["control_guidance"], spec["shift"], spec["num_steps"]) == (1.0, 10.0, 35)
    warning = next(w for w in request.invocation.settings["warnings"] if w.startswith("several controls"))
    assert "control_guidance 1, shift 10, num_steps 35" in warning and "guidance 6" not in warning


def test_the_block_overrides_the_generic_defaults() -> None:
    spec = backend_named(C3).generation("p1", spec_with(cosmos_assets={C3: {"shift": 5.0}}), "r1", 1).spec
    assert spec["shift"] == 5.0 and spec["guidance"] == 6.0


def test_one_control_keeps_upstreams_tuned_defaults() -> None:
    request = backend_named(C3).generation("p1", one_control(), "r1", 1)
    assert not {"guidance", "control_guidance", "shift", "num_steps"} & set(request.spec)
    assert not any(w.startswith("several controls") for w in request.invocation.settings["warnings"])


def test_the_nano_transfer_floor_is_the_nims_figure_per_gpu_whatever_the_count() -> None:
    for gpus in (1, 2, 4):
        inv = backend_named(C3).generation("p1", spec_with(), "r1", gpus).invocation
        assert inv.gpu_memory_gb == pytest.approx(64 * 1.073741824)
        assert "64 GiB per GPU" in inv.gpu_memory_source and "support-matrix.md:83" in inv.gpu_memory_source
    gb, source = pixels.gpu_memory_floor("super", 128, 4)
    assert gb == 32 and "UNVERIFIED" in source


def test_a_host_under_the_transfer_floor_is_refused_naming_the_figure_and_its_source() -> None:
    from cosmos_assets.machines.job import HostNotReadyError, InferenceJob
    from cosmos_assets.machines.preflight import check_gpu_memory
    from tests.machines.test_cache_mounts import FakeLink

    inv = backend_named(C3).generation("p1", spec_with(), "r1", 2).invocation
    job = InferenceJob(run_id="r1", stage="generate", prompt="p1", invocation=inv, inputs=[])
    a100_80 = "0, NVIDIA A100-SXM4-80GB, 81920 MiB, 81000 MiB\n1, NVIDIA A100-SXM4-80GB, 81920 MiB, 81000 MiB\n"
    check_gpu_memory(FakeLink(a100_80), job, "all", print)  # type: ignore[arg-type]
    l40s = "0, NVIDIA L40S, 46068 MiB, 46000 MiB\n1, NVIDIA L40S, 46068 MiB, 46000 MiB\n"  # 96 GB together: no matter
    with pytest.raises(HostNotReadyError) as refused:
        check_gpu_memory(FakeLink(l40s), job, "all", print)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "cosmos3 needs 64 GiB per GPU for nano transfer at BF16 without offload" in message
    assert "NVIDIA/cosmos@31ea3dca cookbooks/cosmos3/nim/support-matrix.md:83" in message
    assert "GPU 0 48 GB (45.0 GiB), GPU 1 48 GB (45.0 GiB)" in message
