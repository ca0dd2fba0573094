"""What the sensors remember between ticks, and their settings: typed, compact, validated on the way in.

Dagster-free. The cursors are pydantic models stored as compact JSON (zlib + base64 once large), so a tick over
10,000 render folders keeps its memory small; a cursor that does not load starts over (logged by the sensor).
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from typing import Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cosmos_assets.settings import MAX_FOLDERS_PER_TICK, SECONDS_PER_DAY, Settings

# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


class SensorSettings(BaseModel):
    """The sensors' settings: their part of the one :class:`~cosmos_assets.settings.Settings`."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    enabled: bool = Field(False, description="COSMOS_SENSORS: start the sensors running (else they start stopped).")
    interval_seconds: int = Field(
        30, ge=1, le=SECONDS_PER_DAY, description="COSMOS_SENSOR_INTERVAL: seconds between ticks."
    )
    render_settle_seconds: float = Field(
        30.0, ge=0, description="COSMOS_RENDER_SETTLE_SECONDS: quiet time before a folder runs."
    )
    auto_generate: bool = Field(
        False, description="COSMOS_AUTO_GENERATE: also run generated_videos and upscaled_videos."
    )
    render_scan_budget: int = Field(
        200,
        ge=1,
        le=MAX_FOLDERS_PER_TICK,
        description="COSMOS_RENDER_SCAN_BUDGET: new/changed folders examined per tick.",
    )
    render_deep_checks: int = Field(
        100,
        ge=0,
        le=MAX_FOLDERS_PER_TICK,
        description="COSMOS_RENDER_DEEP_CHECKS: unchanged folders re-stat'ed per tick.",
    )
    run_priority: int = Field(
        0, description="COSMOS_SENSOR_PRIORITY: the dagster/priority of the runs the sensors start."
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> SensorSettings:
        return cls(
            enabled=settings.sensors,
            interval_seconds=settings.sensor_interval,
            render_settle_seconds=settings.render_settle_seconds,
            auto_generate=settings.auto_generate,
            render_scan_budget=settings.render_scan_budget,
            render_deep_checks=settings.render_deep_checks,
            run_priority=settings.sensor_priority,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SensorSettings:
        """The sensors' part of :class:`~cosmos_assets.settings.Settings` (read from ``env`` or the environment)."""
        return cls.from_settings(Settings.from_env(env))


# --------------------------------------------------------------------------------------------------
# Cursors: compact JSON (zlib + base64 once large), validated by pydantic on the way in
# --------------------------------------------------------------------------------------------------

_COMPRESSED = "z1:"
_COMPRESS_ABOVE = 16 * 1024


def _encode_cursor(model: BaseModel) -> str:
    text = model.model_dump_json()
    if len(text) <= _COMPRESS_ABOVE:
        return text
    return _COMPRESSED + base64.b64encode(zlib.compress(text.encode(), 6)).decode()


def _decode_cursor_text(raw: str) -> str:
    if raw.startswith(_COMPRESSED):
        return zlib.decompress(base64.b64decode(raw[len(_COMPRESSED) :])).decode()
    return raw


CursorT = TypeVar("CursorT", bound=BaseModel)


def _load_cursor(cls: type[CursorT], raw: str | None) -> CursorT:
    """The cursor ``raw`` holds; an empty or unreadable one starts afresh (first tick, or format change)."""
    if not raw:
        return cls()
    try:
        return cls.model_validate_json(_decode_cursor_text(raw))
    except (ValidationError, ValueError, zlib.error):
        return cls()


ShotStatus = Literal["new", "ok", "bad", "empty"]


class ShotState(NamedTuple):
    """What the render sensor knows of one folder; a JSON array ``[m, f, s, w]`` in the cursor."""

    m: int
    """The folder's own mtime_ns when last examined (adding, removing or renaming a file changes it)."""
    f: str
    """Fingerprint (16 hex) of the frames last run or found current (``ok``) or last reported (``bad``)."""
    s: ShotStatus
    """Last settled verdict: new (never settled), ok (run requested or already current), bad (problem reported), empty."""
    w: bool = False
    """Still being written at the last look: examined again every tick until it settles."""


class RenderCursor(BaseModel):
    v: Literal[1] = 1
    shots: dict[str, ShotState] = Field(default_factory=dict)
    rr: str = ""
    """The last folder re-stat'ed by the round-robin deep check (in-place rewrites)."""

    def dump(self) -> str:
        return _encode_cursor(self)

    @classmethod
    def load(cls, raw: str | None) -> RenderCursor:
        """The cursor of the last tick; an empty or unreadable cursor starts afresh (first tick, or format change)."""
        return _load_cursor(cls, raw)


class PromptState(NamedTuple):
    """What the prompt sensor knows of one prompt file; a JSON array in the cursor."""

    m: int
    """The file's mtime_ns."""
    z: int
    """The file's size."""
    v: str
    """The prompt_specs data version last requested or found materialized; "" if none."""
    s: str
    """The shot read from the spec ("" if unknown), to re-check the prompt when that shot's controls change."""
    ok: bool
    """False when the last check reported a problem (not repeated until the file or its shot changes)."""


class PromptCursor(BaseModel):
    v: Literal[1] = 1
    prompts: dict[str, PromptState] = Field(default_factory=dict)
    controls_after: int = 0
    """Storage id of the last control_videos materialization seen."""

    def dump(self) -> str:
        return _encode_cursor(self)

    @classmethod
    def load(cls, raw: str | None) -> PromptCursor:
        return _load_cursor(cls, raw)
