"""Batched generation (issue 11, item 1) on the preview backend in a local process: one invocation for prompts that
can share a model load, every output under its own prompt, a guardrail block reported while its batch-mates succeed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cosmos_assets.machines.job import InferenceJob, LogLine, RunOutcome
from cosmos_assets.machines.local import LocalMachine
from cosmos_assets.models.registry import backend_named
from cosmos_assets.prompts.files import new_prompt_spec, write_spec
from cosmos_assets.runs.batch import run_generations
from cosmos_assets.runs.batch_map import map_outputs
from cosmos_assets.runs.batch_members import BatchOptions
from cosmos_assets.runs.history import read_history
from cosmos_assets.runs.ids import listed_source, run_id_base, seeded_source, token_source
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import InferenceFailed, run_generation
from cosmos_assets.runs.spec_used import SpecUsed
from tests.project_factory import make_project
from tests.runs.test_ids import SEEDS_BY_LEAD

PREVIEW = backend_named("preview")
SHOT = "tiny_shot"
TEXTS = {
    "p_one": "a quiet street at dusk",
    "p_two": "GUARDRAIL_TEST_BLOCK a street",
    "p_three": "a wet street at night",
}


class CountingMachine(LocalMachine):
    """The local machine, keeping every job it ran."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, label="preview@local")
        self.jobs: list[InferenceJob] = []

    def run(self, job: InferenceJob, log: LogLine) -> RunOutcome:
        self.jobs.append(job)
        return super().run(job, log)


@pytest.fixture
def project(tmp_path: Path):
    layout = make_project(tmp_path / "project", shot=SHOT)
    for prompt, text in TEXTS.items():
        write_spec(new_prompt_spec(SHOT, text), layout.prompt_file(prompt))
    return layout, CountingMachine(tmp_path / "host" / "cosmos-transfer1")


def generate(layout, machine, prompts: list[str], **options):
    return run_generations(
        layout,
        prompts,
        lambda prompt: PREVIEW,
        lambda backend: machine,
        BatchOptions(dagster_run_id="abcdef12", log=lambda line: None, **options),
    )


def own_text(layout, prompt: str) -> str:
    return (layout.output_dir(prompt) / "prompt.txt").read_text()


def test_three_compatible_prompts_run_as_one_invocation_each_under_its_own_prompt(project) -> None:
    layout, machine = project
    write_spec(new_prompt_spec(SHOT, "a dry street at noon"), layout.prompt_file("p_two"))  # not blocked here
    outcomes = generate(layout, machine, ["p_one", "p_two", "p_three"])
    assert [o.error for o in outcomes.values()] == [None, None, None]
    assert len(machine.jobs) == 1 and "--batch_input_path" in machine.jobs[0].invocation.argv
    batch_ids = set()
    for index, prompt in enumerate(["p_one", "p_two", "p_three"]):
        used = SpecUsed.read(layout.output_dir(prompt) / "spec_used.json")
        assert (
            own_text(layout, prompt)
            == used.spec["prompt"]
            == json.loads(layout.prompt_file(prompt).read_text())["prompt"]
        )
        assert used.batch is not None and used.batch.index == index and used.batch.items == 3
        assert used.video_save_folder.endswith(f"/video_{index}") and used.prompt == prompt
        run_log = (layout.output_dir(prompt) / "run.log").read_text()
        assert f"item {index} of the shared invocation {used.batch.batch_id}" in run_log
        batch_ids.add(used.batch.batch_id)
    assert len(batch_ids) == 1
    records = [r for r in RunStore(layout.runs_dir).all() if r.state == "succeeded"]
    assert len(records) == 3 and len({r.run_id for r in records}) == 3
    assert all(r.batch is not None and r.batch.gpu_share == pytest.approx(1 / 3) for r in records)
    history = read_history(layout.history_log)
    assert sorted((h.prompt, h.batch_index) for h in history) == [("p_one", 0), ("p_three", 2), ("p_two", 1)]
    batch_file = json.loads((layout.outputs_dir / ".batches" / batch_ids.pop() / "batch.json").read_text())
    assert [i["status"] for i in batch_file["items"]] == ["succeeded"] * 3

    # Skip what is done still works per prompt, batched or not: nothing runs again.
    again = generate(layout, machine, ["p_one", "p_two", "p_three"])
    assert all(o.result is not None and o.result.skipped for o in again.values()) and len(machine.jobs) == 1
    alone = run_generation(layout, machine, PREVIEW, "p_three", dagster_run_id="99999999", log=lambda line: None)
    assert alone.skipped and len(machine.jobs) == 1


def test_a_blocked_middle_item_is_reported_blocked_and_the_third_runs_in_a_follow_up(project) -> None:
    layout, machine = project
    outcomes = generate(layout, machine, ["p_one", "p_two", "p_three"])
    assert outcomes["p_one"].error is None and outcomes["p_three"].error is None
    blocked = outcomes["p_two"].error
    assert isinstance(blocked, InferenceFailed) and blocked.guardrail_blocked and blocked.cause == "guardrail_blocked"
    assert "item 1" in str(blocked)
    # upstream at batch size 1: the block ends the invocation (TypeError) -> a follow-up runs the third item
    assert len(machine.jobs) == 2
    assert own_text(layout, "p_one") == TEXTS["p_one"] and own_text(layout, "p_three") == TEXTS["p_three"]
    assert not layout.output_dir("p_two").exists()
    states = {r.prompt: r for r in RunStore(layout.runs_dir).all()}
    assert states["p_two"].state == "guardrail_blocked" and states["p_two"].cause == "guardrail_blocked"
    first, third = states["p_one"].batch, states["p_three"].batch
    assert first is not None and third is not None and third.follow_up_of == first.batch_id
    assert first.gpu_share == pytest.approx(1 / 2) and third.gpu_share == 1.0  # the crash ran items 0 and 1
    assert (layout.outputs_dir / ".failed" / "p_two" / states["p_two"].run_id / "run.log").is_file()


def test_with_a_larger_batch_size_a_survivor_saved_in_the_wrong_folder_still_lands_under_its_prompt(project) -> None:
    layout, machine = project
    outcomes = generate(layout, machine, ["p_one", "p_two", "p_three"], batch_size=3)
    assert len(machine.jobs) == 1
    assert isinstance(outcomes["p_two"].error, InferenceFailed) and outcomes["p_two"].error.guardrail_blocked
    assert own_text(layout, "p_three") == TEXTS["p_three"]
    used = SpecUsed.read(layout.output_dir("p_three") / "spec_used.json")
    assert used.video_save_folder.endswith("/video_1")  # upstream saved it by position in the shorter list
    assert not layout.output_dir("p_two").exists()


def test_prompts_that_cannot_share_a_load_go_to_separate_invocations(project) -> None:
    layout, machine = project
    seeded = new_prompt_spec(SHOT, "a quiet street, another seed").to_json_dict() | {"seed": 7}
    layout.prompt_file("p_seed").write_text(json.dumps(seeded))
    write_spec(new_prompt_spec(SHOT, TEXTS["p_one"]), layout.prompt_file("p_same_text"))
    outcomes = generate(layout, machine, ["p_one", "p_seed", "p_same_text", "p_three"])
    assert all(o.error is None for o in outcomes.values())
    shapes = sorted(
        len(
            json.loads(Path(layout.root / "outputs" / ".batches").joinpath(j.run_id, "batch.json").read_text())["items"]
        )
        if "--batch_input_path" in j.invocation.argv
        else 1
        for j in machine.jobs
    )
    assert shapes == [
        1,
        1,
        2,
    ]  # p_one + p_three share; the seed is per invocation; a repeated text cannot be told apart
    for prompt in outcomes:
        assert SpecUsed.read(layout.output_dir(prompt) / "spec_used.json").prompt == prompt


def _folders(tmp_path: Path, written: dict[str, str]) -> Path:
    for folder, text in written.items():
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "output.mp4").write_bytes(b"x")
        (tmp_path / folder / "prompt.txt").write_text(text)
    return tmp_path


def test_the_mapping_trusts_text_not_position_and_knows_unrun_items(tmp_path: Path) -> None:
    texts, folders = ("a", "b", "c", "d"), ("video_0", "video_1", "video_2", "video_3")
    # batch size 2, item b dropped: c saved into video_1; then d's window crashed (all blocked? no: here exit 0)
    fetched = _folders(tmp_path / "one", {"video_0": "a", "video_1": "c", "video_2": "d"})
    out = map_outputs(fetched, texts, folders, "prompt.txt", 2, 0, True)
    assert [(o.status, o.folder) for o in out] == [
        ("succeeded", "video_0"),
        ("blocked", None),
        ("succeeded", "video_1"),
        ("succeeded", "video_2"),
    ]
    # batch size 1, the second item blocked and the invocation crashed: the rest never ran
    fetched = _folders(tmp_path / "two", {"video_0": "a"})
    out = map_outputs(fetched, texts, folders, "prompt.txt", 1, 1, True)
    assert [o.status for o in out] == ["succeeded", "blocked", "not_run", "not_run"]
    # the same crash without a guardrail line: a failure, and the rest failed too (no follow-up)
    assert [o.status for o in map_outputs(fetched, texts, folders, "prompt.txt", 1, 1, False)] == [
        "succeeded",
        "failed",
        "failed",
        "failed",
    ]
    # a folder whose prompt.txt is another text is never given to the item of that position
    fetched = _folders(tmp_path / "three", {"video_0": "zzz"})
    assert map_outputs(fetched, ("a",), ("video_0",), "prompt.txt", 1, 0, False)[0].status == "failed"
    # not checkable by text (upsampled prompt): position, batch size 1
    assert map_outputs(fetched, (None,), ("video_0",), "prompt.txt", 1, 0, False)[0].folder == "video_0"


# --------------------------------------------------------------------------- ids (issue 17): a follow-up keeps its batch's id


BLOCKED_TOO = {"p_four": "GUARDRAIL_TEST_BLOCK a road", "p_five": "a dry street at noon"}


def _with_two_blocks(layout) -> list[str]:
    for prompt, text in BLOCKED_TOO.items():
        write_spec(new_prompt_spec(SHOT, text), layout.prompt_file(prompt))
    return ["p_one", "p_two", "p_four", "p_five"]  # two blocks at batch size 1: the first invocation and two follow-ups


@pytest.mark.parametrize("lead", ["f", "a", "0"])
def test_each_follow_up_is_named_after_its_own_batch_whatever_the_random_part(project, lead: str) -> None:
    layout, machine = project
    with token_source(seeded_source(SEEDS_BY_LEAD[lead])):
        outcomes = generate(layout, machine, _with_two_blocks(layout))
    assert [p for p, o in outcomes.items() if o.error is not None] == ["p_two", "p_four"]
    records = {r.prompt: r for r in RunStore(layout.runs_dir).all()}
    base = run_id_base(records["p_one"].run_id)
    assert base is not None and base[-8:].startswith(lead)  # the seed gave the random part this test is about
    batches = {p: r.batch for p, r in records.items()}
    assert batches["p_one"].batch_id == f"{base}_batch0" and batches["p_one"].follow_up_of is None
    assert (batches["p_four"].batch_id, batches["p_four"].follow_up_of) == (f"{base}_batch0_f1", f"{base}_batch0")
    assert (batches["p_five"].batch_id, batches["p_five"].follow_up_of) == (f"{base}_batch0_f2", f"{base}_batch0_f1")
    folders = sorted(p.name for p in (layout.outputs_dir / ".batches").iterdir())
    assert folders == [f"{base}_batch0", f"{base}_batch0_f1", f"{base}_batch0_f2"]
    for folder in folders:
        assert json.loads((layout.outputs_dir / ".batches" / folder / "batch.json").read_text())["batch_id"] == folder
    assert own_text(layout, "p_five") == BLOCKED_TOO["p_five"]


def test_two_requests_in_the_same_second_with_f_leading_ids_keep_their_follow_ups_apart(project) -> None:
    """Before: both follow-ups were named <timestamp>_f2 and shared one folder, the second overwriting the first."""
    layout, machine = project
    same_second = datetime(2025, 1, 2, 3, 4, 7, tzinfo=UTC)
    with token_source(listed_source(["f1111111", "f2222222"])):
        for _ in range(2):
            run_generations(
                layout,
                ["p_one", "p_two", "p_three"],
                lambda prompt: PREVIEW,
                lambda backend: machine,
                BatchOptions(dagster_run_id="abcdef12", log=lambda line: None, force=True),
                now=same_second,
            )
    folders = sorted(p.name for p in (layout.outputs_dir / ".batches").iterdir())
    assert folders == [
        "20250102_030407_f1111111_batch0",
        "20250102_030407_f1111111_batch0_f1",
        "20250102_030407_f2222222_batch0",
        "20250102_030407_f2222222_batch0_f1",
    ]
    assert len(machine.jobs) == 4 and len({job.run_id for job in machine.jobs}) == 4
    three = [r for r in RunStore(layout.runs_dir).all() if r.prompt == "p_three"]
    assert sorted(r.batch.batch_id for r in three) == [folders[1], folders[3]]
    assert len({r.run_id for r in RunStore(layout.runs_dir).all()}) == 6  # three prompts, twice, none overwritten
