"""A procedural sample shot standing in for a Houdini/Nuke render.

The shot is a slow dolly-and-orbit over a ground plane with a few boxes and spheres, ray-cast
analytically with numpy (vectorised, float32). Each frame writes three consistent passes:

- ``color.####.png``: 8-bit RGB, Lambert shading with a sun, checker ground, distance fog, sky.
- ``depth.####.png``: 16-bit Z-depth (camera-space distance along the view axis) in millimetres,
  near = small, the renderer convention; sky (no hit) is written as 0 ("no data"), and depth is
  clipped to 65534 so the maximum value stays reserved as well. ``media.encode_control_videos``
  turns this into the near-is-bright convention Cosmos-Transfer1 expects.
- ``segmentation.####.png``: 8-bit RGB flat label colours, one per object (``LABEL_COLOURS``).

Frames are rendered and written in a thread pool: numpy and zlib release the GIL, so two cores are
used. Run as ``python -m cosmos_assets.media.sample_render DIR``.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmos_assets.media import RenderSequence, scan_render_folder, write_png

DEPTH_UNITS_PER_METRE = 1000.0  # millimetres
DEPTH_MAX_CODE = 65534  # 65535 is left unused; 0 means "no hit" (sky)

SKY_LABEL = 0
GROUND_LABEL = 1

# Label id -> flat RGB colour (sky, ground, then one per object in OBJECTS order).
LABEL_COLOURS = np.array(
    [
        (0, 0, 0),  # sky
        (128, 64, 128),  # ground
        (220, 20, 60),  # sphere 1
        (0, 0, 142),  # sphere 2
        (250, 170, 30),  # sphere 3
        (70, 130, 180),  # box 1
        (107, 142, 35),  # box 2
        (190, 153, 153),  # box 3
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class Sphere:
    centre: tuple[float, float, float]
    radius: float
    albedo: tuple[float, float, float]


@dataclass(frozen=True)
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    albedo: tuple[float, float, float]


SPHERES = (
    Sphere((-2.0, 1.0, 0.0), 1.0, (0.85, 0.2, 0.2)),
    Sphere((2.5, 0.7, 2.0), 0.7, (0.2, 0.3, 0.85)),
    Sphere((0.5, 1.5, -4.0), 1.5, (0.9, 0.7, 0.2)),
)
BOXES = (
    Box((-5.0, 0.0, -3.0), (-3.5, 2.5, -1.5), (0.3, 0.55, 0.75)),
    Box((3.5, 0.0, -2.0), (5.5, 1.2, 0.0), (0.45, 0.6, 0.2)),
    Box((-1.0, 0.0, 3.0), (0.0, 0.6, 4.0), (0.75, 0.6, 0.6)),
)
SUN_DIR = np.array([0.4, 0.8, 0.45], dtype=np.float32) / np.linalg.norm([0.4, 0.8, 0.45])
SKY_TOP = np.array([0.35, 0.55, 0.85], dtype=np.float32)
SKY_HORIZON = np.array([0.8, 0.85, 0.9], dtype=np.float32)
OBJECT_ALBEDO = np.array(
    [(0.0, 0.0, 0.0), (0.5, 0.47, 0.45)] + [s.albedo for s in SPHERES] + [b.albedo for b in BOXES], dtype=np.float32
)
# Linear [0, 1] in 1024 steps -> sRGB-ish 8-bit (gamma 2.2), cheaper than a per-pixel power.
GAMMA_LUT = (np.linspace(0.0, 1.0, 1024) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def camera_at(t: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera position and look-at target at normalised time t in [0, 1]: a dolly in plus a 40° orbit."""
    angle = np.deg2rad(-20.0 + 40.0 * t)
    distance = 14.0 - 5.0 * t
    eye = np.array([distance * np.sin(angle), 3.0 - 0.8 * t, distance * np.cos(angle)], dtype=np.float32)
    target = np.array([0.0, 0.8, -0.5], dtype=np.float32)
    return eye, target


def primary_rays(eye: np.ndarray, target: np.ndarray, width: int, height: int, fov_deg: float = 50.0):
    """Unit ray direction components (three HxW arrays) and the camera forward axis (for Z-depth)."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0], dtype=np.float32))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    half_h = np.tan(np.deg2rad(fov_deg) / 2.0)
    half_w = half_h * width / height
    xs = ((np.arange(width, dtype=np.float32) + 0.5) / width * 2.0 - 1.0) * half_w
    ys = (1.0 - (np.arange(height, dtype=np.float32) + 0.5) / height * 2.0) * half_h
    comps = [forward[k] + xs[None, :] * right[k] + ys[:, None] * up[k] for k in range(3)]
    inv_len = 1.0 / np.sqrt(comps[0] ** 2 + comps[1] ** 2 + comps[2] ** 2)
    return [(c * inv_len).astype(np.float32) for c in comps], forward


def hit_sphere(eye: np.ndarray, dirs: list[np.ndarray], sphere: Sphere) -> np.ndarray:
    """Ray distance to the sphere (inf where missed)."""
    oc = eye - np.asarray(sphere.centre, dtype=np.float32)
    b = dirs[0] * oc[0] + dirs[1] * oc[1] + dirs[2] * oc[2]
    disc = b * b - (float(oc @ oc) - sphere.radius**2)
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(disc)
    return np.where(t > 1e-3, t, np.inf)  # NaN (missed) compares False


def hit_box(eye: np.ndarray, inv_dirs: list[np.ndarray], box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Ray distance to an axis-aligned box (inf where missed) and the hit face axis (0, 1, 2), slab test."""
    near, far = [], []
    for k in range(3):
        t1 = (box.lo[k] - eye[k]) * inv_dirs[k]
        t2 = (box.hi[k] - eye[k]) * inv_dirs[k]
        near.append(np.minimum(t1, t2))
        far.append(np.maximum(t1, t2))
    tnear = np.maximum(np.maximum(near[0], near[1]), near[2])
    tfar = np.minimum(np.minimum(far[0], far[1]), far[2])
    axis = np.where(near[1] == tnear, 1, np.where(near[2] == tnear, 2, 0)).astype(np.int8)
    return np.where((tnear <= tfar) & (tnear > 1e-3), tnear, np.inf), axis


def render_frame(t: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one frame: (colour uint8 HxWx3, Z-depth uint16 HxW, segmentation uint8 HxWx3)."""
    eye, target = camera_at(t)
    dirs, forward = primary_rays(eye, target, width, height)
    dx, dy, dz = dirs
    with np.errstate(divide="ignore"):
        inv_dirs = [1.0 / d for d in dirs]
    with np.errstate(invalid="ignore"):
        t_ground = -eye[1] * inv_dirs[1]
    dist = np.where(t_ground > 1e-3, t_ground, np.inf).astype(np.float32)
    label = np.where(np.isfinite(dist), GROUND_LABEL, SKY_LABEL).astype(np.uint8)
    # Lambert term of whatever is closest so far; the ground's normal is +Y.
    lambert = np.full((height, width), max(SUN_DIR[1], 0.0), dtype=np.float32)

    for i, sphere in enumerate(SPHERES):
        ts = hit_sphere(eye, dirs, sphere)
        closer = ts < dist
        dist = np.where(closer, ts, dist)
        label[closer] = 2 + i
        c = np.asarray(sphere.centre, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            ndotl = sum(((eye[k] - c[k]) + dirs[k] * ts) * (SUN_DIR[k] / sphere.radius) for k in range(3))
        lambert = np.where(closer, ndotl, lambert)
    for i, box in enumerate(BOXES):
        tb, axis = hit_box(eye, inv_dirs, box)
        closer = tb < dist
        dist = np.where(closer, tb, dist)
        label[closer] = 2 + len(SPHERES) + i
        # Face normal is -sign(dir) along the hit axis.
        ndotl = np.choose(axis, [-np.sign(dirs[k]) * SUN_DIR[k] for k in range(3)])
        lambert = np.where(closer, ndotl, lambert)

    hit = label != SKY_LABEL
    safe = np.where(hit, dist, 0.0)
    zdepth = safe * (dx * forward[0] + dy * forward[1] + dz * forward[2])
    depth = np.where(hit, np.clip(np.rint(zdepth * DEPTH_UNITS_PER_METRE), 1, DEPTH_MAX_CODE), 0).astype(np.uint16)

    checker = (np.floor(eye[0] + dx * safe) + np.floor(eye[2] + dz * safe)) % 2
    albedo = OBJECT_ALBEDO[label] * np.where(label == GROUND_LABEL, 0.8 + 0.35 * checker, 1.0)[..., None]
    shade = (0.25 + 0.75 * np.clip(lambert, 0.0, 1.0))[..., None]
    fog = (1.0 - np.exp(safe * (-1.0 / 60.0)))[..., None]
    surface = albedo * shade * (1.0 - fog) + SKY_HORIZON * fog
    sky = SKY_HORIZON + (SKY_TOP - SKY_HORIZON) * np.clip(dy * 3.0, 0.0, 1.0)[..., None]
    colour = np.where(hit[..., None], surface, sky)
    colour8 = GAMMA_LUT[np.clip(colour * 1023.0, 0, 1023).astype(np.int16)]
    return colour8, depth, LABEL_COLOURS[label]


def _render_and_write(folder: Path, frame: int, t: float, width: int, height: int, digits: int) -> None:
    colour, depth, seg = render_frame(t, width, height)
    name = f"{frame:0{digits}d}"
    write_png(folder / f"color.{name}.png", colour)
    write_png(folder / f"depth.{name}.png", depth)
    write_png(folder / f"segmentation.{name}.png", seg)


def make_sample_render(
    folder: Path, frames: int = 121, width: int = 1280, height: int = 704, start: int = 1001
) -> RenderSequence:
    """Render the procedural shot into ``folder`` (created) and return its scanned ``RenderSequence``."""
    if frames < 1 or width < 2 or height < 2:
        raise ValueError(f"need frames >= 1 and a size of at least 2x2, got {frames} frames at {width}x{height}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(start + frames - 1)))
    times = [i / max(frames - 1, 1) for i in range(frames)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(_render_and_write, folder, start + i, t, width, height, digits) for i, t in enumerate(times)
        ]
        for future in futures:
            future.result()
    return scan_render_folder(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the procedural sample render (color/depth/segmentation PNGs).")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--start", type=int, default=1001)
    args = parser.parse_args(argv)
    seq = make_sample_render(args.folder, args.frames, args.width, args.height, args.start)
    print(
        f"wrote {seq.frame_count} frames {seq.first_frame}-{seq.last_frame} at {seq.width}x{seq.height} to {seq.folder}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
