"""Run and batch ids (runs/ids.py): one function makes them from a seedable random part, suffixes are read back only
as whole trailing parts, and two runs planned in the same second never share an id. Pure logic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cosmos_assets.runs.ids import (
    BatchId,
    batch_id,
    batch_run_id,
    follow_up_id,
    listed_source,
    new_run_id,
    run_id_base,
    run_id_problem,
    seeded_source,
    token_source,
)

SECOND = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)  # a second no real run of the suite is planned in
# A seed per leading hex digit of its first token: f (the one that used to be cut), the other letters, and a digit.
SEEDS_BY_LEAD = {"f": 2, "a": 19, "b": 24, "c": 6, "d": 0, "e": 20, "0": 31}


def test_the_seeded_set_covers_an_f_leading_random_part_and_the_other_letters() -> None:
    for lead, seed in SEEDS_BY_LEAD.items():
        with token_source(seeded_source(seed)):
            run_id = new_run_id(SECOND)
        assert run_id.startswith(f"20250102_030405_{lead}"), (seed, run_id)
    assert seeded_source(2)() == seeded_source(2)()  # reproducible


@pytest.mark.parametrize("lead", "0123456789abcdef")
def test_every_leading_hex_digit_gives_a_follow_up_of_its_own_batch(lead: str) -> None:
    with token_source(listed_source([f"{lead}0f0f0f0"])):
        base = new_run_id(SECOND)
    first = batch_id(base, 0)
    assert follow_up_id(first) == f"{base}_batch0_f1"
    assert follow_up_id(follow_up_id(first)) == f"{base}_batch0_f2"
    assert BatchId.parse(follow_up_id(first)) == BatchId(base, 0, 1)
    assert run_id_base(batch_run_id(base, 3)) == base


def test_two_runs_planned_in_the_same_second_get_different_ids_even_if_the_random_part_repeats() -> None:
    with token_source(listed_source(["f1234567", "f1234567", "f1234567", "0abcdef1"])):
        first, second = new_run_id(SECOND), new_run_id(SECOND)
    assert first == "20250102_030405_f1234567" and second == "20250102_030405_0abcdef1"
    many = {new_run_id(SECOND) for _ in range(500)}  # the real source, all in one second
    assert len(many) == 500
    assert new_run_id(SECOND, "upscale").endswith("_upscale")


def test_a_source_that_never_changes_is_refused_rather_than_repeating_an_id() -> None:
    with token_source(lambda: "deadbeef"):
        new_run_id(datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC))
        with pytest.raises(RuntimeError, match="repeated itself"):
            new_run_id(datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC))
    with token_source(lambda: "../x/abc"), pytest.raises(ValueError, match="8 lowercase hex"):
        new_run_id(SECOND)


@pytest.mark.parametrize(
    "run_id",
    [
        "20261207_160000_f4bea973",
        "20261207_160000_f4bea973_upscale",
        "20261207_160000_f4bea973_p12",
        "20261207_160000_f4bea973_p2_offload",
        "20261207_160000_f4bea973_upscale_offload",
    ],
)
def test_every_id_the_package_makes_is_read_back_as_one(run_id: str) -> None:
    assert run_id_problem(run_id) is None and run_id_base(run_id) == "20261207_160000_f4bea973"


@pytest.mark.parametrize(
    "run_id",
    [
        "../other_prompt/20261207_160000_f4bea973",
        "20261207_160000_f4bea973/..",
        "20261207_160000_f4bea973_batch0",
        "20261207_160000_F4BEA973",
        "",
        "r1",
        "20261207_160000_f4bea973\n",
        "._20261207_160000_f4bea973",
    ],
)
def test_anything_else_is_not_a_run_id(run_id: str) -> None:
    assert run_id_problem(run_id) is not None and run_id_base(run_id) is None


def test_a_batch_id_is_parsed_whole_or_refused() -> None:
    for text in ("20261207_160000", "20261207_160000_f2", "x_batch0_f1", "20261207_160000_f4bea973_batch0_f1/.."):
        with pytest.raises(ValueError, match="is not"):
            BatchId.parse(text)


def test_two_generations_of_one_dagster_run_in_the_same_second_keep_their_own_records(tmp_path) -> None:
    """Before: the random part was the Dagster run id's first 8 digits, so a second run of the same Dagster run in the
    same second (a pool failing over, a step retry) took the first one's id and overwrote its record."""
    from cosmos_assets.machines.local import LocalMachine
    from cosmos_assets.models.registry import backend_named
    from cosmos_assets.runs.record_store import RunStore
    from cosmos_assets.runs.runner import run_generation
    from tests.project_factory import make_project

    layout = make_project(tmp_path / "project")
    machine = LocalMachine(tmp_path / "host", label="preview@local")
    same = dict(
        now=datetime(2025, 1, 2, 3, 4, 8, tzinfo=UTC), dagster_run_id="abcdef12-0000", force=True, log=lambda line: None
    )
    first = run_generation(layout, machine, backend_named("preview"), "tiny_prompt", **same)
    second = run_generation(layout, machine, backend_named("preview"), "tiny_prompt", **same)
    assert first.record.run_id != second.record.run_id
    assert first.record.run_id.startswith("20250102_030408_") and second.record.run_id.startswith("20250102_030408_")
    assert sorted(r.run_id for r in RunStore(layout.runs_dir).all()) == sorted(
        [first.record.run_id, second.record.run_id]
    )
    assert second.previous_moved_to is not None and second.previous_moved_to.name == first.record.run_id
