"""media/sample_render.py: the procedural shot's three passes agree and scan cleanly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from cosmos_assets.media import decode_png
from cosmos_assets.media.sample_render import LABEL_COLOURS, make_sample_render


def test_sample_render_writes_consistent_passes(tmp_path):
    seq = make_sample_render(tmp_path, frames=3, width=96, height=54, start=1001)
    assert (seq.first_frame, seq.last_frame, seq.width, seq.height) == (1001, 1003, 96, 54)
    assert seq.bit_depth == {"color": 8, "depth": 16, "segmentation": 8}
    colour = decode_png(seq.frames["color"][1]).to_ndarray()
    depth = decode_png(seq.frames["depth"][1]).to_ndarray().astype(np.int64)
    seg = decode_png(seq.frames["segmentation"][1]).to_ndarray()
    sky = (seg == LABEL_COLOURS[0]).all(axis=2)
    assert sky.any() and (~sky).any()
    assert (depth[sky] == 0).all() and (depth[~sky] > 0).all()  # depth agrees with the labels
    labels = {tuple(c) for c in seg.reshape(-1, 3)}
    assert labels <= {tuple(c) for c in LABEL_COLOURS} and len(labels) >= 4  # flat colours, several objects
    assert depth[-1].mean() < depth[sky.argmin(axis=0).max() + 1].mean()  # bottom rows (near ground) are nearer
    assert colour.std() > 10


def test_camera_moves_between_frames(tmp_path):
    seq = make_sample_render(tmp_path, frames=2, width=64, height=36)
    a, b = (decode_png(p).to_ndarray().astype(int) for p in seq.frames["depth"])
    assert np.abs(a - b).mean() > 1


def test_module_entry_point(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cosmos_assets.media.sample_render",
            str(tmp_path / "shot"),
            "--frames",
            "2",
            "--width",
            "32",
            "--height",
            "18",
            "--start",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "shot").iterdir())[:2] == ["color.0001.png", "color.0002.png"]
