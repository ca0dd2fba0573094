"""The newer models' contracts (copies of the research notes, docs/upstream/README.md#contract-copies) and the stand-ins built on them: real flags, upstream's spec
checks and exit codes, the real output layout and the guardrail behaviour. Run here as plain processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.plan import plan_generation
from tests.project_factory import make_project
from tests.standins.install import install_checkout

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
COPIES = {
    "transfer2_5_cli.json": "cosmos-transfer2.5/cli.json",
    "transfer2_5_spec_schema.json": "cosmos-transfer2.5/spec_schema.json",
    "cosmos3_cli.json": "cosmos3/cli.json",
    "cosmos3_spec_schema.json": "cosmos3/spec_schema.json",
}


@pytest.mark.parametrize(("copy", "shared"), sorted(COPIES.items()))
def test_the_contracts_are_the_shared_ones_and_ship_with_the_package(copy: str, shared: str) -> None:
    if not (SHARED / shared).exists():
        pytest.skip(f"{SHARED / shared} is not here (a checkout without ../shared)")
    packaged = resources.files("cosmos_assets").joinpath(f"contract/{copy}").read_text(encoding="utf-8")
    assert json.loads(packaged) == json.loads((SHARED / shared).read_text(encoding="utf-8"))
    assert 'cosmos_assets = ["contract/*.json"]' in (REPO / "pyproject.toml").read_text()


@pytest.fixture(scope="module")
def checkouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("standins")
    layout = make_project(root / "project")
    found = {}
    for model in ("cosmos-transfer2.5", "cosmos3"):
        checkout = install_checkout(model, root / model)
        plan = plan_generation(layout, backend_named(model), "tiny_prompt", run_id="r1")
        for item in plan.job.inputs[1:]:
            (checkout / item.remote).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(item.local, checkout / item.remote)
        # the specs carry /workspace paths: here the checkout is the model root
        spec = json.loads(json.dumps(plan.request.spec).replace("/workspace", str(checkout)))
        (checkout / "inputs/prompts").mkdir(parents=True, exist_ok=True)
        (checkout / "spec.json").write_text(json.dumps(spec))
        found[model] = checkout
    return found


def run(
    checkout: Path, argv: list[str], spec: dict | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    if spec is not None:
        (checkout / "inputs/prompts/case.json").write_text(json.dumps(spec))
    return subprocess.run(
        [sys.executable, *argv],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(checkout), **(env or {})},
    )


def base_spec(checkout: Path, **changes: object) -> dict:
    spec = json.loads((checkout / "spec.json").read_text())
    spec.update(changes)
    return spec


T25_ARGV = ["examples/inference.py", "-i", "inputs/prompts/case.json", "-o"]


def test_transfer2_5_standin_writes_the_flat_layout(checkouts: dict[str, Path]) -> None:
    checkout = checkouts["cosmos-transfer2.5"]
    done = run(checkout, [*T25_ARGV, "out/ok"], base_spec(checkout, name="case"))
    assert done.returncode == 0, done.stderr
    names = {p.name for p in (checkout / "out/ok").iterdir()}
    assert {
        "config.yaml",
        "console.log",
        "debug.log",
        "case.json",
        "case.mp4",
        "case.txt",
        "case_control_depth.mp4",
        "case_control_vis.mp4",
    } <= names
    assert "Generated video saved to" in done.stdout


def test_transfer2_5_standin_guardrail_block_exits_0_without_the_video(checkouts: dict[str, Path]) -> None:
    checkout = checkouts["cosmos-transfer2.5"]
    spec = base_spec(checkout, name="blocked", prompt="GUARDRAIL_TEST_BLOCK a street")
    done = run(checkout, [*T25_ARGV, "out/blocked"], spec)
    assert done.returncode == 0 and "Guardrail blocked generation. Prompt:" in done.stdout
    names = {p.name for p in (checkout / "out/blocked").iterdir()}
    assert "blocked.json" in names and "blocked.mp4" not in names and "blocked.txt" not in names
    assert run(checkout, [*T25_ARGV, "out/off", "--disable-guardrails"], spec).returncode == 0
    assert (checkout / "out/off/blocked.mp4").exists()


@pytest.mark.parametrize(
    ("extra_argv", "changes", "code", "words"),
    [
        (["--disable-guardrails", "True"], {}, 2, ""),
        (["--num_gpus", "1"], {}, 2, "unrecognized"),
        (["--guidance", "9"], {}, 1, "less than or equal to 7"),
        ([], {"guidance": 3.5}, 1, "guidance: Input should be integer"),
        ([], {"sigma_max": 80}, 1, "sigma_max: Input should be string"),
        ([], {"output_dir": "x"}, 1, "output_dir: Extra inputs are not permitted"),
        ([], {"video_path": "missing.mp4"}, 1, "video_path: Path does not point to a file"),
    ],
)
def test_transfer2_5_standin_refuses_as_upstream(
    checkouts: dict[str, Path], extra_argv: list[str], changes: dict, code: int, words: str
) -> None:
    checkout = checkouts["cosmos-transfer2.5"]
    done = run(checkout, [*T25_ARGV, "out/bad", *extra_argv], base_spec(checkout, name="bad", **changes))
    assert done.returncode == code, done.stderr
    assert words in done.stderr


C3_ARGV = ["-m", "cosmos_framework.scripts.inference", "--parallelism-preset=latency", "-i", "inputs/prompts/case.json"]


def test_cosmos3_standin_writes_its_sample_folder(checkouts: dict[str, Path]) -> None:
    checkout = checkouts["cosmos3"]
    done = run(checkout, [*C3_ARGV, "-o", "out/ok", "--checkpoint-path", "Cosmos3-Nano"], base_spec(checkout, name="c"))
    assert done.returncode == 0, done.stderr
    folder = checkout / "out/ok/c"
    assert {"vision.mp4", "sample_args.json", "sample_outputs.json", "control_blur.mp4", "control_depth.mp4"} <= {
        p.name for p in folder.iterdir()
    }
    assert json.loads((folder / "sample_outputs.json").read_text())["status"] == "success"
    assert "Saved transfer outputs to" in done.stdout


@pytest.mark.parametrize(
    ("argv", "changes", "env", "code", "words"),
    [
        (["-o", "out/x"], {}, {}, 2, "--checkpoint-path"),
        (["--checkpoint-path", "Cosmos3-Nano"], {}, {}, 1, "'output_dir' is required"),
        (["-o", "out/x", "--checkpoint-path", "Cosmos3-Nano"], {}, {"WORLD_SIZE": "3"}, 1, "must divide WORLD_SIZE(3)"),
        (["-o", "out/x", "--checkpoint-path", "Cosmos3-Nano", "--guardrails", "False"], {}, {}, 2, ""),
        (
            ["-o", "out/x", "--checkpoint-path", "Cosmos3-Nano"],
            {"blur": {"control_weight": 1}},
            {},
            1,
            "blur.control_weight: Extra",
        ),
        (
            ["-o", "out/x", "--checkpoint-path", "Cosmos3-Nano"],
            {"depth": {"weight": 1}},
            {},
            1,
            "Missing pre-computed control input for 'depth'",
        ),
        (["-o", "out/x", "--checkpoint-path", "Cosmos3-Nano"], {"fps": 29.97}, {}, 1, "fps: Input should be integer"),
        (["-o", "out/x", "--checkpoint-path", "Cosmos3-Nano"], {"vis": {}}, {}, 1, "vis: Extra inputs"),
    ],
)
def test_cosmos3_standin_refuses_as_upstream(
    checkouts: dict[str, Path], argv: list[str], changes: dict, env: dict[str, str], code: int, words: str
) -> None:
    checkout = checkouts["cosmos3"]
    done = run(checkout, [*C3_ARGV, *argv], base_spec(checkout, **changes), env)
    assert done.returncode == code, done.stderr
    assert words in done.stderr
