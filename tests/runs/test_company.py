"""runs/company.py on the preview backend in a local process: the run holding the host takes the waiting prompts
that can share its load into one invocation; each taken prompt's own run then finds its work done, as its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs.batch_members import BatchOptions
from cosmos_assets.runs.company import run_with_company
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.plan import plan_generation, plan_upscale
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_generation, run_upscale
from cosmos_assets.runs.spec_used import SpecUsed
from tests.project_factory import make_project
from tests.runs.test_batch import CountingMachine

PREVIEW = backend_named("preview")
SHOT = "tiny_shot"
TEXTS = {"own": "a quiet street at dusk", "b": "a dry street at noon", "c": "a wet street at night"}
HOLDER = "holder01"


@pytest.fixture
def project(tmp_path: Path):
    layout = make_project(tmp_path / "project", shot=SHOT)
    for prompt, text in TEXTS.items():
        write_spec(new_prompt_spec(SHOT, text), layout.prompt_file(prompt))
    return layout, CountingMachine(tmp_path / "host" / "cosmos-transfer1")


def options() -> BatchOptions:
    return BatchOptions(dagster_run_id=HOLDER, log=lambda line: None)


def generate(layout, machine, company: dict[str, str], asked: list | None = None):
    def planner(backend, prompt: str, rid: str):
        return plan_generation(layout, backend, prompt, run_id=rid, dagster_run_id=HOLDER)

    def find() -> dict[str, str]:
        if asked is not None:
            asked.append(1)
        return company

    return run_with_company(layout, "own", find, lambda prompt: PREVIEW, machine, options(), planner)


def test_the_holder_takes_the_waiting_prompts_and_their_runs_find_the_work_done_as_their_own(project) -> None:
    layout, machine = project
    outcomes = generate(layout, machine, {"b": "waiter_b", "c": "waiter_c"})
    assert {p: o.error for p, o in outcomes.items()} == {"own": None, "b": None, "c": None}
    assert len(machine.jobs) == 1 and "--batch_input_path" in machine.jobs[0].invocation.argv
    for index, prompt in enumerate(["own", "b", "c"]):
        used = SpecUsed.read(layout.output_dir(prompt) / "spec_used.json")
        assert (layout.output_dir(prompt) / "prompt.txt").read_text() == TEXTS[prompt]
        assert used.batch is not None and used.batch.index == index and used.batch.items == 3
    records = {r.prompt: r for r in RunStore(layout.runs_dir).all()}
    assert records["b"].batch.taken_for == "waiter_b" and records["own"].batch.taken_for is None
    lines_before = len(read_history(layout.history_log))
    assert lines_before == 3

    # b's own run reaches the host: its work was run for it, reported as its own (not a skip), no model started
    mine = run_generation(layout, machine, PREVIEW, "b", dagster_run_id="waiter_b", log=lambda line: None)
    assert mine.skipped is None and mine.record.run_id == records["b"].run_id and len(machine.jobs) == 1
    assert len(read_history(layout.history_log)) == lines_before  # its history line is the batch's
    # any other run of the same work skips it, as before
    other = run_generation(layout, machine, PREVIEW, "c", dagster_run_id="someone_else", log=lambda line: None)
    assert other.skipped and len(machine.jobs) == 1


def test_only_prompts_that_share_the_load_and_have_work_are_taken(project) -> None:
    layout, machine = project
    write_spec(new_prompt_spec(SHOT, "a harbour").model_copy(update={"seed": 7}), layout.prompt_file("other_seed"))
    write_spec(new_prompt_spec(SHOT, TEXTS["own"]), layout.prompt_file("same_text"))
    run_generation(layout, machine, PREVIEW, "c", log=lambda line: None)  # done already
    assert len(machine.jobs) == 1
    outcomes = generate(layout, machine, {"other_seed": "w1", "same_text": "w2", "c": "w3", "b": "w4", "gone": "w5"})
    assert set(outcomes) == {"own", "b"}  # seed differs / same text as its own / done / no prompt file
    assert len(machine.jobs) == 2 and not layout.output_dir("other_seed").exists()
    assert not (layout.staging_dir).exists() or not any(layout.staging_dir.iterdir())  # nothing left planned


def test_a_prompt_with_nothing_to_do_asks_for_no_company(project) -> None:
    layout, machine = project
    run_generation(layout, machine, PREVIEW, "own", log=lambda line: None)
    asked: list[int] = []
    outcomes = generate(layout, machine, {"b": "w"}, asked)
    assert outcomes["own"].result is not None and outcomes["own"].result.skipped and asked == []
    assert set(outcomes) == {"own"} and len(machine.jobs) == 1


def test_upscales_waiting_share_one_invocation(project) -> None:
    layout, machine = project
    generate(layout, machine, {"b": "wb", "c": "wc"})
    assert len(machine.jobs) == 1

    def planner(backend, prompt: str, rid: str):
        return plan_upscale(layout, backend, prompt, run_id=rid, dagster_run_id=HOLDER)

    outcomes = run_with_company(
        layout, "own", lambda: {"b": "wb", "c": "wc"}, lambda p: PREVIEW, machine, options(), planner, stage="upscale"
    )
    assert {p: o.error for p, o in outcomes.items()} == {"own": None, "b": None, "c": None}
    assert len(machine.jobs) == 2
    argv = machine.jobs[1].invocation.argv
    assert machine.jobs[1].stage == "upscale"  # its container labelled as an upscale
    assert "--batch_input_path" in argv and argv[argv.index("--batch_size") + 1] == "1"
    for prompt in TEXTS:
        video = layout.upscaled_dir(prompt) / "output.mp4"
        assert video.is_file()
        used = SpecUsed.read(layout.upscaled_dir(prompt) / "spec_used.json")
        assert used.stage == "upscale" and used.batch is not None and used.batch.items == 3
    # each generation's own video was upscaled, not another's (position mapping at batch size 1)
    records = {r.prompt: r for r in RunStore(layout.runs_dir).all() if r.stage == "upscale"}
    for prompt, record in records.items():
        gen = SpecUsed.read(layout.output_dir(prompt) / "spec_used.json")
        assert any(i.path.endswith(f"{prompt}/{gen.run_id}/output.mp4") for i in record.inputs), prompt
    mine = run_upscale(layout, machine, PREVIEW, "b", dagster_run_id="wb", log=lambda line: None)
    assert mine.skipped is None and len(machine.jobs) == 2
