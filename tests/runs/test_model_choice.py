"""Which model runs a generation: the run's config > the prompt file's block > the deployment; the upscale is Transfer1's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.prompts.files import new_prompt_spec
from cosmos_assets.runs.plan import model_for, upscaler_for


@pytest.fixture
def layout(tmp_path: Path) -> ProjectLayout:
    layout = ProjectLayout(root=tmp_path)
    layout.ensure_working_folders()
    data = new_prompt_spec("shot_a", "a street").to_json_dict()
    data["cosmos_assets"] = {"model": "cosmos3"}
    layout.prompt_file("with_block").write_text(json.dumps(data))
    layout.prompt_file("plain").write_text(json.dumps(new_prompt_spec("shot_a", "a street").to_json_dict()))
    return layout


def test_run_config_beats_the_prompt_block_which_beats_the_deployment(layout: ProjectLayout) -> None:
    assert model_for(layout, "with_block", "transfer2.5", "cosmos-transfer1").name == "cosmos-transfer2.5"
    assert model_for(layout, "with_block", None, "cosmos-transfer1").name == "cosmos3"
    assert model_for(layout, "plain", None, "cosmos-transfer2.5").name == "cosmos-transfer2.5"
    with pytest.raises(ValueError, match="'t9' is not a backend here"):
        model_for(layout, "plain", "t9", "cosmos-transfer1")


def test_a_preview_deployment_runs_previews_unless_the_run_names_a_model(layout: ProjectLayout) -> None:
    assert model_for(layout, "with_block", None, "preview").name == "preview"
    assert model_for(layout, "with_block", "cosmos3", "preview").name == "cosmos3"


def test_the_upscale_is_transfer1s_whichever_model_generated() -> None:
    assert upscaler_for("cosmos3").name == "cosmos-transfer1"
    assert upscaler_for("cosmos-transfer2.5").name == "cosmos-transfer1"
    assert upscaler_for("preview").name == "preview"
