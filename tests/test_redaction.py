"""redaction.py: which names are secret, redacted copies, and shell_join (the only argv -> shell string)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from cosmos_assets.redaction import is_secret_name, redacted, redacted_message, shell_join

HOSTILE_PATH = 'inputs/prompts/my shot\'s "best" $(touch pwned) `id`;.json'


def test_shell_join_round_trips_hostile_path() -> None:
    argv = ["python3", "cosmos_transfer1/diffusion/inference/transfer.py", "--controlnet_specs", HOSTILE_PATH]
    command = shell_join(argv)
    assert shlex.split(command) == argv


def test_shell_join_does_not_execute_substitutions(tmp_path: Path) -> None:
    argv = ["printf", "%s", HOSTILE_PATH]
    result = subprocess.run(["sh", "-c", shell_join(argv)], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout == HOSTILE_PATH
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "name, secret",
    [
        ("HF_TOKEN", True),
        ("HUGGING_FACE_HUB_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("NGC_API_KEY", True),
        ("SSH_PASSPHRASE", True),
        ("db_password", True),
        ("SSH_KEY_PATH", False),
        ("KEY_FILE", False),
        ("PATH", False),
        ("PYTHONPATH", False),
        ("LOG_LEVEL", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_redacted_env_mapping() -> None:
    assert redacted({"HF_TOKEN": "x", "HOME": "/h"}) == {"HF_TOKEN": "***", "HOME": "/h"}


def test_redacted_argv_and_command_line() -> None:
    argv = ["docker", "run", "-e", "HF_TOKEN=hf_abc", "--env=DB_PASSWORD=pw", "-e", "MODE=fast", "img"]
    assert redacted(argv) == ["docker", "run", "-e", "HF_TOKEN=***", "--env=DB_PASSWORD=***", "-e", "MODE=fast", "img"]
    line = redacted("HF_TOKEN='hf abc' docker run -e MODE=fast img")
    assert shlex.split(line) == ["HF_TOKEN=***", "docker", "run", "-e", "MODE=fast", "img"]


def test_redacted_message_hides_secret_assignments_in_free_text() -> None:
    text = "docker said: HF_TOKEN=hf_abc123 was refused (MODE=fast, 'quoted' text kept)"
    assert redacted_message(text) == "docker said: HF_TOKEN=*** was refused (MODE=fast, 'quoted' text kept)"
