"""A small, real project root for tests: a tiny render, its control videos and a prompt."""

from __future__ import annotations

from pathlib import Path

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media import encode_control_videos, scan_render_folder
from cosmos_assets.media.sample_render import make_sample_render
from cosmos_assets.prompts.files import new_prompt_spec, write_spec

TINY = {"frames": 8, "width": 96, "height": 64}


def make_project(
    root: Path, shot: str = "tiny_shot", prompt: str = "tiny_prompt", text: str = "a quiet street at dusk"
) -> ProjectLayout:
    layout = ProjectLayout(root=root)
    layout.ensure_working_folders()
    make_sample_render(layout.render_dir(shot), **TINY)
    encode_control_videos(scan_render_folder(layout.render_dir(shot)), layout.shot_videos_dir(shot))
    write_spec(new_prompt_spec(shot, text), layout.prompt_file(prompt))
    return layout
