"""What changes a Cosmos 3 video's pixels besides the spec, made explicit (issue 20): the diffusion cache, the
checkpoint revision, the multi-control sampling defaults; and the GPU memory a transfer needs, as published.

Sources (docs/upstream/): the diffusion cache flag and its CLI default (NVIDIA/cosmos-framework PR #207, c7e8d76), the
checkpoint's floating ``main`` revision (cosmos3-serve.md §10), the generic video2video defaults (``defaults/
video2video/sample_args.json`` and ``_build_transfer_data`` @ 5eee9ed), the NIM support matrix (cosmos3-nim.md §4).
"""

from __future__ import annotations

from typing import Any

DIFFUSION_CACHE_DEFAULT = False
"""Off unless a prompt turns it on: the cache is lossy ("Generated video will differ from before", PR #207), the
serving app and the library default to off, and a run must give the same pixels one-shot or served."""

# Upstream's generic video2video sampling values, which a transfer with several controls gets where the spec sets none
# (the tuned per-control values apply to one control only): defaults/video2video/sample_args.json (num_steps, guidance,
# shift) and args.py _build_transfer_data (control_guidance 1.0) @ 5eee9ed.
GENERIC_VIDEO2VIDEO = {"guidance": 6.0, "control_guidance": 1.0, "shift": 10.0, "num_steps": 35}
HINTS = ("edge", "blur", "depth", "seg", "wsm")

GIB_IN_GB = 1.073741824
NIM_SOURCE = (
    "NIM support matrix, NVIDIA/cosmos@31ea3dca cookbooks/cosmos3/nim/support-matrix.md:83 "
    "(docs/upstream/cosmos3-nim.md §4)"
)
# Per-GPU floors for transfer (binary GiB per device, whatever the GPU count). The framework runs BF16 without model
# offload, so its row is the one that applies; FP8 (50 GiB) and layer offload (35 GiB) are NIM profiles it lacks.
TRANSFER_FLOOR_GIB = {"nano": 64}


def gpu_memory_floor(size: str, weights_gb: float, num_gpus: int) -> tuple[float, str]:
    """GB per GPU a transfer needs, and the figure as published with its source (named when a host is refused)."""
    floor = TRANSFER_FLOOR_GIB.get(size)
    if floor is not None:
        return floor * GIB_IN_GB, f"{floor} GiB per GPU for {size} transfer at BF16 without offload ({NIM_SOURCE})"
    return weights_gb / num_gpus, (
        f"{weights_gb:g} GB of weights split over {num_gpus} GPU(s) (docs/faq.md; no "
        f"published transfer figure for {size}, peak memory UNVERIFIED)"
    )


def hf_repo(checkpoint: str) -> str:
    return f"nvidia/{checkpoint}"


def refs_main(checkpoint: str) -> str:
    """Where the host's Hugging Face cache (``cache/huggingface`` under the checkpoint folder, HF_HOME in the
    container) names the commit ``main`` resolved to for ``checkpoint``."""
    return f"cache/huggingface/hub/models--nvidia--{checkpoint}/refs/main"


# docs/faq.md weights (Edge by the code's params x 2 bytes x 2 towers formula, undocumented); peak memory UNVERIFIED.
WEIGHTS_GB = {"nano": 32, "super": 128, "edge": 8}


def checkpoint_fields(size: str, checkpoint: str, pinned: str | None, num_gpus: int) -> dict[str, Any]:
    """The Invocation's memory floor (and its source), where the revision is read after the run, and the pin."""
    memory_gb, source = gpu_memory_floor(size, WEIGHTS_GB[size], num_gpus)
    repo = hf_repo(checkpoint)
    return {
        "gpu_memory_gb": memory_gb,
        "gpu_memory_source": source,
        "revision_files": {repo: refs_main(checkpoint)},
        "pinned_revisions": {repo: pinned} if pinned else {},
    }


def pin_env(pinned: str | None) -> dict[str, str]:
    """Pinned: offline, so neither the weights nor the processor can move from the commit the host was checked at."""
    return {"HF_HUB_OFFLINE": "1"} if pinned else {}


def with_generic_defaults(spec: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """``spec`` with the generic values it gets written in (several controls), said in ``warnings``."""
    applied = generic_defaults(spec)
    if applied:
        warnings.append(defaults_warning(applied))
    return {**spec, **applied}


def generic_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """The generic video2video values a spec with several controls gets where it sets none (empty for one control)."""
    if sum(1 for hint in HINTS if spec.get(hint) is not None) < 2:
        return {}
    return {key: value for key, value in GENERIC_VIDEO2VIDEO.items() if spec.get(key) is None}


def defaults_warning(applied: dict[str, Any]) -> str:
    values = ", ".join(f"{key} {value:g}" for key, value in applied.items())
    return (
        f"several controls: upstream's generic video2video defaults apply where the prompt sets none, written into "
        f"the spec: {values} (one control gets tuned values instead, e.g. guidance 3.0, control_guidance 1.5, "
        "shift 10.0; the cookbook's multi_control.json uses those: set them in cosmos_assets.cosmos3)"
    )
