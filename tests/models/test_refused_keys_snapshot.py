"""The keys a prompt file may not carry, with their messages, against a snapshot: at the top level (every model's, as
any model may run a prompt) and in each model's block. A change shows here as a diff to review; when it is meant,
refresh with ``COSMOS_UPDATE_SNAPSHOTS=1 pytest tests/models/test_refused_keys_snapshot.py``."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

from cosmos_assets.models.names import MODEL_NAMES
from cosmos_assets.models.refused_keys import model_invocation_keys, prompt_file_invocation_keys
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.prompts.spec import SpecError, parse_spec

SNAPSHOT = Path(__file__).parents[1] / "snapshots" / "refused_keys.json"


def _listing() -> dict[str, dict[str, str]]:
    listing = {"prompt_file": {k: v.message() for k, v in sorted(prompt_file_invocation_keys().items())}}
    listing |= {
        model: {k: v.message() for k, v in sorted(model_invocation_keys(model).items())} for model in MODEL_NAMES
    }
    return listing


def test_the_refused_keys_are_the_snapshot() -> None:
    now = json.dumps(_listing(), indent=1, sort_keys=True)
    if os.environ.get("COSMOS_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(now + "\n")
    was = SNAPSHOT.read_text().rstrip("\n")
    diff = "\n".join(difflib.unified_diff(was.splitlines(), now.splitlines(), "snapshot", "now", lineterm=""))
    assert now == was, f"the refused keys changed (refresh with COSMOS_UPDATE_SNAPSHOTS=1 if meant):\n{diff}"


def test_a_pixel_setting_at_the_top_level_is_refused_naming_its_block() -> None:
    spec = new_prompt_spec("a_shot", "a street at dusk").to_json_dict()
    with pytest.raises(SpecError) as caught:
        parse_spec({**spec, "diffusion_cache": True}, "p.json")
    assert "diffusion_cache" in str(caught.value) and "cosmos_assets.cosmos3.diffusion_cache" in str(caught.value)
    parse_spec({**spec, "cosmos_assets": {"model": "cosmos3", "cosmos3": {"diffusion_cache": True}}}, "p.json")
