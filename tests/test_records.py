"""runs/record.py: spec_used.json never carries a secret; history lines are whole JSON records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cosmos_assets.files import atomic_write_text
from cosmos_assets.runs.history import HistoryRecord, append_history, read_history
from cosmos_assets.runs.spec_used import SpecUsed


def test_spec_used_redacts_secrets_in_environment_and_command(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    used = SpecUsed(
        stage="generate",
        backend="cosmos-transfer1",
        run_id="r1",
        prompt="p",
        host="h",
        command=["docker", "run", "-e", "HF_TOKEN=hf_secretvalue", "img"],
        command_line="docker run -e HF_TOKEN=hf_secretvalue img",
        environment={"HF_TOKEN": "hf_secretvalue", "SSH_KEY_PASSPHRASE": "pw", "NUM_GPU": "2"},
        spec={"prompt": "p"},
        spec_remote_path="inputs/prompts/p.json",
        video_save_folder="outputs/p/r1",
        started_at=now,
        finished_at=now,
        exit_code=0,
    )
    path = tmp_path / "spec_used.json"
    used.write(path)
    text = path.read_text()
    assert "hf_secretvalue" not in text and '"pw"' not in text
    assert json.loads(text)["environment"]["NUM_GPU"] == "2"
    assert used.environment["HF_TOKEN"] == "hf_secretvalue"  # the in-memory record is left alone


def test_history_appends_one_parseable_line_per_run(tmp_path: Path) -> None:
    log = tmp_path / "notes" / "run_history.log"
    for status in ("success", "failed"):
        append_history(
            log,
            HistoryRecord(
                when=datetime.now(UTC),
                run_id=status,
                stage="generate",
                prompt="p",
                shot="s",
                host="h",
                backend="preview",
                command="cmd",
                status=status,
            ),
        )
    assert len(log.read_text().splitlines()) == 2
    assert [r.status for r in read_history(log)] == ["success", "failed"]


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["b.txt"]
