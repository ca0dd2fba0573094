"""Orchestration overhead: the full cycle (prompt_specs, generated_videos, upscaled_videos) on the
preview backend, through Dagster with a real instance on disk, minus the time inside the model program.

The model program's own time comes from each output's ``spec_used.json`` (``started_at`` ..
``finished_at``, taken around the subprocess by the host). Everything else (Dagster run set-up, spec
validation, staging/upload with hashing, download with verification, records, metadata probing) is
overhead, reported per prompt.

Two ways are measured:
- ``materialize``: ``dagster.materialize`` in this process with a ``DagsterInstance`` on disk (the
  repo's dagster.yaml), one run per prompt: 1 prompt, then 10 prompts of one shot.
- ``cli``: ``dagster asset materialize -m cosmos_assets.definitions ... --partition P`` as a user types
  it (a fresh Python process each time, so Dagster's import and code loading are included), 1 prompt,
  twice; the project's executor (in-process) is what runs. Interleaved with it, for reference, the
  old default: the same code location with Dagster's default executor
  (bench/multiprocess_definitions.py) and the multiprocess executor chosen by run config (one
  Python subprocess per step).

The shot is the sample render at a smaller size (``SHOT_FRAMES`` frames of ``SHOT_SIZE``) to keep the
benchmark short; the overhead is per-run work and barely depends on the frame size.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHOT = "bench_shot"
SHOT_FRAMES = 24
SHOT_SIZE = (640, 352)
SELECTION = "prompt_inputs,prompt_specs,generated_videos,upscaled_videos"


@dataclass
class CycleTiming:
    prompt: str
    wall_s: float
    model_s: float

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.model_s


@dataclass
class OrchestrationFigures:
    shot: str
    runs: dict[str, list[CycleTiming]] = field(default_factory=dict)  # case -> one timing per prompt
    import_s: float | None = None  # python -c "import cosmos_assets.definitions" in a fresh process

    def per_prompt_overhead(self, case: str) -> float:
        timings = self.runs[case]
        return sum(t.overhead_s for t in timings) / len(timings)

    def median_overhead(self, case: str) -> float:
        return statistics.median(t.overhead_s for t in self.runs[case])

    def per_prompt_model(self, case: str) -> float:
        timings = self.runs[case]
        return sum(t.model_s for t in timings) / len(timings)


@contextmanager
def project_env(root: Path) -> Iterator[dict[str, str]]:
    env = {
        "COSMOS_PROJECT_ROOT": str(root),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "COSMOS_HOST": "preview",
        "COSMOS_PREVIEW_DIR": str(root / ".preview_host" / "cosmos-transfer1"),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_shot_and_prompts(
    root: Path, shot: str, prompts: int, frames: int, size: tuple[int, int]
) -> tuple[object, list[str]]:
    """A fresh project at ``root``: the sample shot (``frames`` at ``size``) with its control videos and ``prompts`` prompt files
    (``<shot>_pNN``) reading it; its layout and the prompt names. Shared by the orchestration and batch benchmarks."""
    from cosmos_assets.layout import ProjectLayout
    from cosmos_assets.media import encode_control_videos
    from cosmos_assets.media.sample_render import make_sample_render
    from cosmos_assets.prompts.files import new_prompt_spec, write_spec

    shutil.rmtree(root, ignore_errors=True)
    layout = ProjectLayout(root=root)
    layout.ensure_working_folders()
    seq = make_sample_render(layout.render_dir(shot), frames=frames, width=size[0], height=size[1])
    encode_control_videos(seq, layout.shot_videos_dir(shot))
    names = [f"{shot}_p{i:02d}" for i in range(prompts)]
    for i, name in enumerate(names):
        write_spec(new_prompt_spec(shot, f"a quiet street at dusk, variation {i}"), layout.prompt_file(name))
    return layout, names


def make_project(root: Path, prompts: int) -> list[str]:
    """A project root with the small sample shot, its control videos, ``prompts`` prompt files, partitions."""
    from cosmos_assets.defs.partitions import register_partitions

    layout, names = write_shot_and_prompts(root, SHOT, prompts, SHOT_FRAMES, SHOT_SIZE)
    (root / "dagster_home").mkdir(parents=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    with project_env(root):
        register_partitions(layout)
    return names


def model_seconds(root: Path, prompt: str) -> float:
    """Time inside the model program for the generation and the upscale of ``prompt``."""
    total = 0.0
    for folder in (root / "outputs" / prompt, root / "outputs" / f"{prompt}_upscaled"):
        used = json.loads((folder / "spec_used.json").read_text())
        total += (
            datetime.fromisoformat(used["finished_at"]) - datetime.fromisoformat(used["started_at"])
        ).total_seconds()
    return total


def materialize_in_process(root: Path, prompts: list[str]) -> list[CycleTiming]:
    import dagster as dg

    from cosmos_assets.defs.assets import ALL_ASSETS
    from cosmos_assets.defs.resources import LocalPreviewHost
    from cosmos_assets.defs.resources.project import ProjectResource

    timings = []
    with project_env(root) as env:
        instance = dg.DagsterInstance.get()  # the one in DAGSTER_HOME (set above)
        resources = {
            "project": ProjectResource(root=str(root)),
            "gpu_host": LocalPreviewHost(remote_dir=env["COSMOS_PREVIEW_DIR"]),
        }
        for prompt in prompts:
            started = time.perf_counter()
            result = dg.materialize(
                ALL_ASSETS,
                selection=SELECTION.split(","),
                partition_key=prompt,
                instance=instance,
                resources=resources,
                raise_on_error=True,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            wall = time.perf_counter() - started
            if not result.success:
                raise RuntimeError(f"materialize of {prompt} failed")
            timings.append(CycleTiming(prompt, wall, model_seconds(root, prompt)))
    return timings


MULTIPROCESS_CONFIG = '{"execution": {"config": {"multiprocess": {}}}}'
FORCE = {"ops": {"generated_videos": {"config": {"force": True}}, "upscaled_videos": {"config": {"force": True}}}}
"""Both CLI cases run the same prompts twice: forced, so the second run repeats the work instead of skipping it."""
CLI_CASE = "dagster CLI, 1 prompt"
MULTIPROCESS_CASE = "dagster CLI, multiprocess executor (old default, reference), 1 prompt"


def materialize_cli(root: Path, prompts: list[str], multiprocess: bool = False) -> list[CycleTiming]:
    """The CLI as a user types it (the project's in-process executor); ``multiprocess``: the reference
    code location with Dagster's default executor, multiprocess chosen by run config (one Python
    subprocess per step, each importing Dagster and the code location)."""
    dagster = Path(sys.executable).with_name("dagster")
    module = "bench.multiprocess_definitions" if multiprocess else "cosmos_assets.definitions"
    config = {**FORCE, **json.loads(MULTIPROCESS_CONFIG)} if multiprocess else FORCE
    extra = ["--config-json", json.dumps(config)]
    timings = []
    with project_env(root) as env:
        for prompt in prompts:
            started = time.perf_counter()
            proc = subprocess.run(
                [
                    str(dagster),
                    "asset",
                    "materialize",
                    "-m",
                    module,
                    "--select",
                    SELECTION,
                    "--partition",
                    prompt,
                    *extra,
                ],
                cwd=root,
                env={**os.environ, **env, "PYTHONPATH": _pythonpath()},
                capture_output=True,
                text=True,
                timeout=900,
            )
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"dagster asset materialize {prompt} failed:\n{proc.stderr[-3000:]}")
            timings.append(CycleTiming(prompt, wall, model_seconds(root, prompt)))
    return timings


def bench_orchestration(
    work: Path, many: int = 10, with_cli: bool = True, log: Callable[[str], None] = print
) -> OrchestrationFigures:
    figures = OrchestrationFigures(shot=f"sample render, {SHOT_FRAMES} frames at {SHOT_SIZE[0]}x{SHOT_SIZE[1]}")
    root = (work / "orchestration_project").resolve()
    names = make_project(root, many + 2)
    figures.runs["materialize, 1 prompt"] = materialize_in_process(root, names[:1])
    log(f"orchestration: 1 prompt in-process overhead {figures.per_prompt_overhead('materialize, 1 prompt'):.2f}s")
    figures.runs[f"materialize, {many} prompts"] = materialize_in_process(root, names[1 : 1 + many])
    log(
        f"orchestration: {many} prompts in-process overhead/prompt "
        f"{figures.per_prompt_overhead(f'materialize, {many} prompts'):.2f}s"
    )
    if with_cli:
        for rep in range(2):  # interleaved: as typed (in-process), the old default (multiprocess)
            for case, multiprocess in ((CLI_CASE, False), (MULTIPROCESS_CASE, True)):
                prompt = names[-2 + rep]
                figures.runs.setdefault(case, []).extend(materialize_cli(root, [prompt], multiprocess))
                log(f"orchestration: {case}: overhead {figures.runs[case][-1].overhead_s:.2f}s")
        figures.import_s = definitions_import_seconds(root)
    return figures


def _pythonpath() -> str:
    """The repo root first (so ``bench.multiprocess_definitions`` imports from the project root's cwd)."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def definitions_import_seconds(root: Path) -> float:
    """A fresh interpreter importing ``cosmos_assets.definitions`` (what every CLI run pays first)."""
    with project_env(root) as env:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import cosmos_assets.definitions"],
            cwd=root,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started
