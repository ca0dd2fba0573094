"""Ten single-prompt Cosmos 3 runs one after another: through the resident model service vs one-shot containers.

The real path on a real host: a private dockerd and a throwaway sshd (tests/infra, as the integration tests use), the
Cosmos 3 checkout made of tests/standins (the CLI stand-in and the serving app's stand-in, both with a fixed simulated
model load of ``LOAD_SECONDS``, counted in ``.standin/loads``), the runner (runs/runner.py) with ``force`` so nothing
is skipped. ``served``: COSMOS_SERVE=always (the service starts at the first run and stays); ``one-shot``:
COSMOS_SERVE=never (a ``docker run`` per prompt). The ways alternate, ``REPS`` times each; the service is stopped
between repetitions so each served repetition pays its first load.

Figures: model loads, total wall time, and GPU-held seconds per video. One-shot: each container's life (the run's
inference seconds). Served: the service container's life from its start to the end of the tenth request, over ten;
after that it holds the GPU until the idle stop (COSMOS_SERVE_IDLE_MINUTES), shown apart. Ratios are served / one-shot.

``python -m bench.bench_served`` runs it alone and replaces only its own section of bench/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.bench_batch import write_section

BENCH_DIR = Path(__file__).resolve().parent
PROMPT, SHOT = "served_bench", "served_bench_shot"
RUNS = 10
LOAD_SECONDS = 5.0
REPS = 2
IDLE_MINUTES = 15.0
WHY_GPU_HELD = (
    "Why served holds the GPU longer per video here: the service holds it between requests too, while the runner "
    "does each run's preflight, upload and download (about 10 s a run on this loaded machine), and the simulated "
    "load is only 5 s. Per video, served holds (load + N x (generation + gap)) / N and one-shot load + generation, "
    "so the service wins once the gap between requests is shorter than the load x (1 - 1/N): a real Cosmos 3 load "
    "is minutes against seconds of gap on a quiet link."
)
SECTION_START = "<!-- bench_served:start -->"
SECTION_END = "<!-- bench_served:end -->"


@dataclass
class Way:
    loads: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    gpu_s_per_video: list[float] = field(default_factory=list)
    succeeded: list[int] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(self, name))


@dataclass
class Figures:
    served: Way = field(default_factory=Way)
    one_shot: Way = field(default_factory=Way)
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])

    def ratio(self, name: str) -> float:
        return self.served.median(name) / self.one_shot.median(name)


def _infra(root: Path):
    from tests.infra.dockerd import start_dockerd
    from tests.infra.image import IMAGE_TAG, ensure_test_image
    from tests.infra.nvidia import write_fake_nvidia_smi
    from tests.infra.sshd import start_sshd

    dockerd = start_dockerd(root / "dk")
    write_fake_nvidia_smi(root / "gpu-bin", 2)
    sshd = start_sshd(root / "ssh", docker_host=dockerd.docker_host, path_prepend=[root / "gpu-bin"])
    client = dockerd.client()
    ensure_test_image(client, IMAGE_TAG)
    return dockerd, sshd, client


def _checkout(base: Path) -> None:
    from tests.integration.test_ssh_host import OWNER_GID, OWNER_UID, _chown_tree, _write_checkpoints
    from tests.standins.install import install_checkout

    install_checkout("cosmos3", base / "cosmos-framework")
    _write_checkpoints(base / "checkpoints")
    (base / "checkpoints" / "cache" / "huggingface" / "hub").mkdir(parents=True)
    _chown_tree(base / "cosmos-framework", OWNER_UID, OWNER_GID)
    _chown_tree(base / "checkpoints", OWNER_UID, OWNER_GID)


def _project(root: Path):
    from tests.project_factory import make_project

    layout = make_project(root, shot=SHOT, prompt=PROMPT)
    path = layout.prompt_file(PROMPT)
    data = json.loads(path.read_text())
    data["cosmos_assets"] = {"model": "cosmos3", "cosmos3": {"size": "nano", "resolution": "480"}}
    path.write_text(json.dumps(data))
    return layout


def _host(sshd, base: Path, serve: str, tag: str):
    from cosmos_assets.defs.resources import SshGpuHost

    resource = SshGpuHost(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        ssh_key=str(sshd.key_path),
        known_hosts=str(sshd.known_hosts),
        ssh_config=str(base / "no-ssh-config"),
        remote_dir=str(base / "cosmos-transfer1"),
        docker_image="unused:latest",
        min_free_gb=0.5,
        model_images={"cosmos3": f"cosmos-framework-bench:{tag}"},
        name="bench-gpu",
        serve=serve,
        container_env={"STANDIN_LOAD_SECONDS": f"{LOAD_SECONDS:g}"},
        serve_idle_minutes=IDLE_MINUTES,
    )
    return resource.machine_for("cosmos3")


def _loads(base: Path) -> int:
    path = base / "cosmos-framework" / ".standin" / "loads"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _one_way(layout, sshd, client, base: Path, served: bool, tag: str, way: Way) -> None:
    from cosmos_assets.models.registry import backend_named
    from cosmos_assets.runs.runner import run_generation

    host = _host(sshd, base, "always" if served else "never", tag)
    before = _loads(base)
    t0 = time.perf_counter()
    results = [
        run_generation(layout, host, backend_named("cosmos3"), PROMPT, force=True, log=lambda line: None)
        for _ in range(RUNS)
    ]
    way.wall_s.append(time.perf_counter() - t0)
    way.loads.append(_loads(base) - before)
    way.succeeded.append(sum(r.record.state == "succeeded" for r in results))
    if served:
        name = results[0].record.serving.service_container
        started = client.containers.get(name).attrs["State"]["StartedAt"]
        start = datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00").timestamp()
        end = max(r.record.finished_at.timestamp() for r in results)
        way.gpu_s_per_video.append((end - start) / RUNS)
        host.stop_service(lambda line: None)
    else:
        way.gpu_s_per_video.append(sum(r.record.inference_seconds for r in results) / RUNS)
    host.close()


def bench_served(reps: int = REPS, log=print) -> Figures:
    root = Path(tempfile.mkdtemp(prefix="cosmos-bench-served-", dir="/tmp"))
    root.chmod(0o755)
    dockerd, sshd, client = _infra(root / "infra")
    figures = Figures()
    tag = uuid.uuid4().hex[:8]
    try:
        _checkout(root / "host")
        layout = _project(root / "project")
        for rep in range(reps):
            for served in (True, False) if rep % 2 == 0 else (False, True):
                _one_way(
                    layout, sshd, client, root / "host", served, tag, figures.served if served else figures.one_shot
                )
                log(f"served bench rep {rep + 1}: {'served' if served else 'one-shot'} done")
    finally:
        client.close()
        sshd.stop()
        dockerd.stop()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def section(f: Figures) -> list[str]:
    rows = [
        ("model loads", "loads", "{:.0f}"),
        ("total wall time", "wall_s", "{:.1f} s"),
        ("GPU-held seconds per video", "gpu_s_per_video", "{:.2f} s"),
    ]
    tail = IDLE_MINUTES * 60 / RUNS
    lines = [
        SECTION_START,
        f"## 8. Resident model service: {RUNS} single-prompt Cosmos 3 runs one after another, served vs one-shot",
        "",
        f"bench/bench_served.py: a real sshd and a private dockerd (tests/infra), the Cosmos 3 checkout of tests/standins "
        f"(the CLI's and the serving app's stand-ins, each with a fixed simulated model load of {LOAD_SECONDS:g} s), "
        f"a tiny 480p shot, the real runner with force. Served: COSMOS_SERVE=always (docs/serving.md); one-shot: "
        f"COSMOS_SERVE=never. Alternated, median of {len(f.served.wall_s)} runs each; the service is stopped between "
        "repetitions, so each served repetition pays its first load. GPU-held seconds per video: one-shot, each "
        "container's life; served, the service's life from its start to the end of the tenth request, over ten.",
        "",
        "| figure | one-shot | served | served / one-shot |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, name, fmt in rows:
        lines.append(
            f"| {label} | {fmt.format(f.one_shot.median(name))} | {fmt.format(f.served.median(name))} | "
            f"{f.ratio(name):.2f}x |"
        )
    lines += [
        "",
        WHY_GPU_HELD,
        "",
        f"After the tenth request the service holds the GPU until its idle stop (COSMOS_SERVE_IDLE_MINUTES="
        f"{IDLE_MINUTES:g}): {tail:.0f} s more per video for a sitting of {RUNS} runs, less as the sitting goes "
        "on (docs/serving.md says why 15 min). Videos made per way and run: one-shot "
        f"{f.one_shot.succeeded}, served {f.served.succeeded}. Runs (s): one-shot "
        f"{' '.join(f'{s:.1f}' for s in f.one_shot.wall_s)}; served {' '.join(f'{s:.1f}' for s in f.served.wall_s)}. "
        f"Load average of the shared machine at the start: {f.load_average:.1f} on {os.cpu_count()} cores"
        + (" (the times are inflated by it; the counts are exact)." if f.load_average >= 1.0 else "."),
        SECTION_END,
        "",
    ]
    return lines


def main() -> int:
    f = bench_served()
    lines = section(f)
    write_section(BENCH_DIR / "RESULTS.md", lines, SECTION_START, SECTION_END)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
