"""Stamp a run's fetched clips with its recipe (:mod:`cosmos_assets.media.recipe`) before they are promoted and hashed.

The tags come from the run record: run id, stage, prompt name and text, model, seed, spec sha256, shot, host. An
upscale's spec has no prompt: its text comes from the recipe of the generated clip it read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from cosmos_assets.media.recipe import ClipRecipe, RecipeError, read_recipe, stamp_all
from cosmos_assets.runs.record import RunRecord

DEFAULT_SEED = "(model default)"
RECIPE_VERSION = "2"
"""2: the clip carries what running it again needs (prompt file, inputs' hashes, settings, image ID, checkpoints)."""


def clip_recipe(record: RunRecord, source_tags: dict[str, str] | None = None) -> ClipRecipe:
    """The recipe of ``record``'s clips; ``source_tags``: the recipe of the clip an upscale read, if any."""
    prompt_spec = record.prompt_spec or {}
    source = source_tags or {}
    text = prompt_spec.get("prompt") or record.spec.get("prompt") or source.get("cosmos_prompt") or ""
    seed = record.spec.get("seed", prompt_spec.get("seed"))
    if seed is None:
        seed = source.get("cosmos_seed") if record.stage == "upscale" and source else None
    settings = {k: v for k, v in record.settings.items() if k != "warnings"}
    return ClipRecipe(
        run_id=record.run_id,
        stage=record.stage,
        prompt_name=record.prompt,
        prompt=str(text),
        model=record.model,
        seed=DEFAULT_SEED if seed is None else str(seed),
        spec_sha256=record.spec_sha256,
        shot=record.shot,
        dagster_run_id=record.dagster_run_id,
        host=record.host,
        source_run_id=source.get("cosmos_run_id") if record.stage == "upscale" else None,
        recipe_version=RECIPE_VERSION,
        num_gpus=str(record.num_gpus),
        image=record.image,
        image_id=record.image_id,
        program_sha256=record.program_sha256,
        checkpoint_revisions=_json(record.checkpoint_revisions),
        inputs=_json([[i.path, i.size, i.sha256] for i in record.inputs]),
        prompt_spec=_json(record.prompt_spec) if record.prompt_spec is not None else None,
        settings=_json(settings),
    )


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def stamp_outputs(folder: Path, record: RunRecord, inputs: Iterable[Path], log: Callable[[str], None]) -> list[Path]:
    """Stamp every ``*.mp4`` under ``folder`` with ``record``'s recipe. Never fails the run: a clip that cannot be
    remuxed is left as the model wrote it, and the log says so."""
    source_tags: dict[str, str] = {}
    for path in inputs:
        if Path(path).suffix == ".mp4" and record.stage == "upscale":
            try:
                source_tags = read_recipe(Path(path))
            except RecipeError:
                pass
            break
    recipe = clip_recipe(record, source_tags).to_tags()
    clips = [p for p in Path(folder).rglob("*.mp4") if p.is_file() and not p.name.startswith(".")]
    try:
        return stamp_all(clips, recipe)
    except (RecipeError, OSError) as error:
        log(
            f"[cosmos-assets] warning: the recipe (run id, prompt, model, seed, spec hash) was not written into the "
            f"clip's metadata: {error}"
        )
        return []
