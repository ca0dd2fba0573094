"""The recipe travels with the clip: provenance tags in an MP4's container metadata.

A clip found on a shared drive names the run that made it: ``ffprobe -show_format clip.mp4`` lists the tags
(``cosmos_run_id``, ``cosmos_prompt``, ``cosmos_model``, ``cosmos_seed``, ``cosmos_spec_sha256``, ...), and
``outputs/.runs/<run_id>.json`` holds the rest. Control videos, which no run made, carry their shot, pass and
source frames instead (:class:`ControlRecipe`).

MP4 keeps only a few well-known keys (title, comment, ...) unless the muxer is told
``movflags=use_metadata_tags``, which stores every key as a QuickTime ``mdta`` entry; FFmpeg-based tools
(ffprobe, PyAV) and QuickTime read them back. Stamping an existing file remuxes it (packets copied as they are,
no re-encode) into a temp file beside it, then renames it over the original: readers see the old file or the
whole new one. Plain Python (PyAV), no ffmpeg CLI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import ClassVar

import av
from pydantic import BaseModel, ConfigDict

from cosmos_assets.files import fsync_dir, new_temp_path

TAG_PREFIX = "cosmos_"
MUXER_OPTIONS = {"movflags": "use_metadata_tags+faststart"}
"""What every MP4 we write or stamp is muxed with: custom keys kept, the index up front (plays while streaming)."""
MAX_TAG_CHARS = 4000
MAX_VERBATIM_CHARS = 60000


class RecipeError(ValueError):
    """A clip that cannot be stamped or read; the message names the file."""


class _Tags(BaseModel):
    """A set of ``cosmos_*`` tags: every field is written as ``cosmos_<field>`` (None fields are left out)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    _verbatim: ClassVar[frozenset[str]] = frozenset()  # JSON to run again from: kept byte for byte, or left out whole

    def to_tags(self) -> dict[str, str]:
        tags = {}
        for key, value in self.model_dump().items():
            if value is None:
                continue
            if key in self._verbatim:
                if len(value) <= MAX_VERBATIM_CHARS:
                    tags[f"{TAG_PREFIX}{key}"] = value
                continue
            tags[f"{TAG_PREFIX}{key}"] = _tag_text(value)
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]):
        """The recipe in ``tags`` (as read back from a file); ValueError when a required tag is missing."""
        values = {key[len(TAG_PREFIX) :]: value for key, value in tags.items() if key.startswith(TAG_PREFIX)}
        return cls.model_validate(values)


def _tag_text(value: object) -> str:
    # One line per tag: players show them in one-line fields, and a prompt of a few pages stays readable.
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 3] + "..."


class ClipRecipe(_Tags):
    """What made a generated or upscaled clip: enough to trace it to its run record."""

    run_id: str
    stage: str
    prompt_name: str
    prompt: str
    model: str
    seed: str
    spec_sha256: str
    shot: str | None = None
    dagster_run_id: str | None = None
    host: str | None = None
    source_run_id: str | None = None  # an upscale: the run that generated the clip it upscaled
    # issue 20: enough to run it again from the clip alone (cosmos-assets reproduce CLIP.mp4); absent in older clips
    recipe_version: str | None = None
    num_gpus: str | None = None
    image: str | None = None
    image_id: str | None = None
    program_sha256: str | None = None
    checkpoint_revisions: str | None = None  # JSON {repository: commit}
    inputs: str | None = None  # JSON [[path, size, sha256], ...] under the model root
    prompt_spec: str | None = None  # JSON: the artist's prompt file as the run read it
    settings: str | None = None  # JSON: the backend's settings (warnings left out)

    _verbatim: ClassVar[frozenset[str]] = frozenset({"checkpoint_revisions", "inputs", "prompt_spec", "settings"})


class ControlRecipe(_Tags):
    """What identifies a control video (no run made it): its shot, pass and the render frames it was encoded from."""

    kind: str = "control_video"
    shot: str
    pass_name: str
    source_folder: str
    source_frames: str  # "color.0001.png .. color.0024.png (24 frames)"
    source_digest: str  # sha256 over the frame files' names, sizes and mtimes (cheap; changes when a frame does)
    encoder: str


class WedgeRecipe(_Tags):
    """What a wedge's comparison grid shows: the wedge and the run of every tile."""

    kind: str = "wedge_grid"
    wedge: str
    base_prompt: str
    tiles: str  # "<prompt>=<run_id>; ..."


def read_tags(path: Path) -> dict[str, str]:
    """The container-level metadata of a video file (every key, ours or not)."""
    try:
        with av.open(str(path)) as container:
            return dict(container.metadata)
    except (av.FFmpegError, OSError) as error:
        raise RecipeError(f"{path} cannot be read as a video: {error}") from error


def read_recipe(path: Path) -> dict[str, str]:
    """Only our ``cosmos_*`` tags of a video file."""
    return {key: value for key, value in read_tags(path).items() if key.startswith(TAG_PREFIX)}


def _add_stream_like(output: av.container.OutputContainer, stream: av.stream.Stream) -> av.stream.Stream:
    if hasattr(output, "add_stream_from_template"):  # PyAV >= 14
        return output.add_stream_from_template(stream)
    return output.add_stream(template=stream)  # type: ignore[call-arg]  # PyAV 12-13


def stamp(path: Path, tags: Mapping[str, str]) -> None:
    """Set ``tags`` in the container metadata of the MP4 at ``path``, keeping its other tags; no re-encode.

    Video, audio and subtitle streams are copied packet by packet; streams FFmpeg cannot copy into MP4 (data
    tracks) are dropped. Atomic: the stamped file is written beside ``path`` and renamed over it.
    """
    path = Path(path)
    temp = new_temp_path(path.parent, f".{path.stem}.", ".stamp.mp4")  # the umask's mode: it replaces the clip
    try:
        with av.open(str(path)) as source, av.open(str(temp), "w", format="mp4", options=MUXER_OPTIONS) as target:
            target.metadata.update({k: v for k, v in source.metadata.items() if k not in _MUXER_WRITTEN})
            target.metadata.update(dict(tags))
            mapping = {}
            for stream in source.streams:
                if stream.type in ("video", "audio", "subtitle"):
                    mapping[stream.index] = _add_stream_like(target, stream)
            if not mapping:
                raise RecipeError(f"{path} has no video or audio stream to keep")
            for packet in source.demux(*[s for s in source.streams if s.index in mapping]):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = mapping[packet.stream.index]
                target.mux(packet)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
        fsync_dir(path.parent)
    except RecipeError:
        temp.unlink(missing_ok=True)
        raise
    except (av.FFmpegError, OSError) as error:
        temp.unlink(missing_ok=True)
        raise RecipeError(f"{path} cannot be stamped with its recipe: {error}") from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# Written by the muxer itself from the output; copying the source's value would only repeat a stale one.
_MUXER_WRITTEN = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder"})


def stamp_all(paths: Iterable[Path], tags: Mapping[str, str]) -> list[Path]:
    """Stamp every MP4 in ``paths`` once per file on disk; other names of a hard-linked file are linked again to the
    stamped one (a backend's ``output.mp4`` is a hard link to the model's own file). Returns what was stamped."""
    stamped: dict[tuple[int, int], Path] = {}
    for path in sorted(Path(p) for p in paths):
        info = path.stat()
        key = (info.st_dev, info.st_ino)
        first = stamped.get(key)
        if first is None:
            stamp(path, tags)
            stamped[key] = path
        else:
            link = path.with_name(f".{path.name}.relink")
            link.unlink(missing_ok=True)
            os.link(first, link)
            os.replace(link, path)
    return sorted(stamped.values())
