"""A wedge's comparison, once each variant has a generated video: every variant's clip and the run that made it,
the version that says when to compare again, and ``outputs/_wedges/<wedge>/{grid.mp4, contact_sheet.png,
comparison.json}`` (the grid and still labelled with each variant's values, the recipe stamped in the grid).

Plain Python, no Dagster: the comparison asset (``defs/assets/wedges.py``) and the wedge sensor share it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cosmos_assets.files import (
    atomic_write_json,
    move_aside,
    new_temp_folder,
    read_bounded,
    remove_tree,
    rename_no_replace,
)
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media.grid import GridTile, grid_still, write_grid_video
from cosmos_assets.media.previews import SHEET_NAME, write_preview
from cosmos_assets.media.recipe import WedgeRecipe
from cosmos_assets.prompts.spec import SpecError
from cosmos_assets.prompts.wedges import (
    COMPARISON_FOLDER,
    MAX_MANIFEST_BYTES,
    WedgeError,
    WedgeManifest,
    WedgeVariant,
    comparison_dir,
    manifest_path,
)
from cosmos_assets.runs.spec_used import SpecUsed


@dataclass(frozen=True)
class VariantClip:
    """A variant's generated clip, as the comparison shows it."""

    variant: WedgeVariant
    video: Path
    run_id: str


def variant_clips(layout: ProjectLayout, manifest: WedgeManifest) -> list[VariantClip]:
    """Every variant's generated ``output.mp4`` and the run that made it; WedgeError naming the variants not run yet."""

    clips, missing = [], []
    for variant in manifest.variants:
        folder = layout.output_dir(variant.prompt)
        video = folder / "output.mp4"
        try:
            used = SpecUsed.read(folder / "spec_used.json")
        except (FileNotFoundError, ValidationError, ValueError):
            used = None
        if used is None or not video.exists():
            missing.append(variant.prompt)
            continue
        clips.append(VariantClip(variant=variant, video=video, run_id=used.run_id))
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise WedgeError(
            f"wedge {manifest.name}: {len(missing)} of {len(manifest.variants)} variants have no "
            f"generated video yet ({shown}); materialize generated_videos for them first"
        )
    return clips


def clips_version(clips: list[VariantClip]) -> str:
    """Changes when any variant is generated again (its run id): the comparison's data version and the sensor's key."""
    digest = hashlib.sha256()
    for clip in clips:
        digest.update(f"{clip.variant.prompt}\0{clip.run_id}\n".encode())
    return digest.hexdigest()[:16]


def ready_version(layout: ProjectLayout, wedge: str) -> str | None:
    """The version of a wedge whose variants all have a generated video, else None (for the wedge sensor)."""
    try:
        return clips_version(variant_clips(layout, WedgeManifest.read(manifest_path(layout, wedge))))
    except (WedgeError, SpecError, OSError):
        return None


# ---------------------------------------------------------------------------------------------------------
# the comparison


class ComparisonTile(BaseModel):
    prompt: str
    values: dict[str, Any]
    run_id: str
    video: str


class ComparisonRecord(BaseModel):
    """``outputs/_wedges/<wedge>/comparison.json``: which run every tile of the grid shows."""

    wedge: str
    version: str
    grid_video: str
    contact_sheet: str
    columns: int
    rows: int
    frames: int
    tiles: list[ComparisonTile]
    created_at: datetime


@dataclass(frozen=True)
class Comparison:
    folder: Path
    grid_video: Path
    record: ComparisonRecord
    preview: Any  # previews.Preview: the contact sheet and its thumbnail
    moved_aside: Path | None


GRID_NAME = "grid.mp4"
RECORD_NAME = "comparison.json"


def build_comparison(layout: ProjectLayout, wedge: str, now: datetime | None = None) -> Comparison:
    """Tile the variants' generated clips into ``outputs/_wedges/<wedge>/grid.mp4`` plus its contact sheet.

    Built in a staging folder and renamed into place; an earlier comparison of the wedge is moved to
    ``outputs/.previous/_wedges/<wedge>/<version>``, never overwritten.
    """

    manifest = WedgeManifest.read(manifest_path(layout, wedge))
    clips = variant_clips(layout, manifest)
    version = clips_version(clips)
    tiles = [GridTile(video=clip.video, label=clip.variant.label_lines()) for clip in clips]
    final = comparison_dir(layout, wedge)
    staging = new_temp_folder(_mkdirs(layout.staging_dir), f"wedge-{wedge}-")  # the umask's mode, not 0700
    try:
        tags = WedgeRecipe(
            wedge=wedge,
            base_prompt=manifest.base_prompt,
            tiles="; ".join(f"{c.variant.prompt}={c.run_id}" for c in clips),
        ).to_tags()
        grid = write_grid_video(tiles, staging / GRID_NAME, tags=tags)
        sheet, indices = grid_still(tiles)
        preview = write_preview(sheet, staging / SHEET_NAME, indices[:1])
        record = ComparisonRecord(
            wedge=wedge,
            version=version,
            grid_video=str((final / GRID_NAME).relative_to(layout.root)),
            contact_sheet=str((final / SHEET_NAME).relative_to(layout.root)),
            columns=grid.layout.columns,
            rows=grid.layout.rows,
            frames=grid.frames,
            created_at=now or datetime.now(),
            tiles=[
                ComparisonTile(
                    prompt=c.variant.prompt,
                    values=c.variant.values,
                    run_id=c.run_id,
                    video=str(c.video.relative_to(layout.root)),
                )
                for c in clips
            ],
        )
        atomic_write_json(staging / RECORD_NAME, record.model_dump(mode="json"))
        moved = None
        if final.exists():
            moved = move_aside(final, layout.previous_outputs_dir / COMPARISON_FOLDER, _earlier_version(final))
        final.parent.mkdir(parents=True, exist_ok=True)
        rename_no_replace(staging, final)
    except BaseException:
        remove_tree(staging)
        raise
    preview = replace(preview, sheet_path=final / SHEET_NAME)
    return Comparison(folder=final, grid_video=final / GRID_NAME, record=record, preview=preview, moved_aside=moved)


def _mkdirs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _earlier_version(folder: Path) -> str:
    try:
        return ComparisonRecord.model_validate_json(
            read_bounded(folder / RECORD_NAME, MAX_MANIFEST_BYTES, "the wedge comparison record")
        ).version
    except (OSError, ValidationError):
        return datetime.fromtimestamp(folder.stat().st_mtime).strftime("%Y%m%d_%H%M%S") + "_unknown"
