"""Assets, one module per stage: renders -> controls -> prompts -> generation."""

from cosmos_assets.defs.assets.controls import control_videos
from cosmos_assets.defs.assets.generation import generated_videos, upscaled_videos
from cosmos_assets.defs.assets.prompts import PROMPT_INPUTS, prompt_inputs, prompt_specs
from cosmos_assets.defs.assets.renders import shots
from cosmos_assets.defs.assets.wedges import wedge_comparisons

ALL_ASSETS = [shots, control_videos, prompt_inputs, prompt_specs, generated_videos, upscaled_videos, wedge_comparisons]

__all__ = [
    "ALL_ASSETS",
    "PROMPT_INPUTS",
    "control_videos",
    "generated_videos",
    "prompt_inputs",
    "prompt_specs",
    "shots",
    "upscaled_videos",
    "wedge_comparisons",
]
