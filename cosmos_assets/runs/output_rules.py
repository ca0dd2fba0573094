"""Asset checks on the outputs: the videos decode, have the frames and size they should, and belong to us.

Plain functions returning a :class:`CheckReport` (tests call them directly); :mod:`cosmos_assets.defs.checks`
only finds the files of a partition and turns a report into a Dagster result.

What "expected" means (the model that ran, as ``spec_used.json`` names it, read with that model's own spec;
docs/upstream/transfer1.md, transfer2.5.md, cosmos3.md):

- **Control videos** have exactly the render's frames (or the ``max_frames`` the materialization asked
  for), the render's size padded to even (yuv420p), and the three passes agree.
- **Generated video**: frames = the shortest input video (control or ``input_video_path``) cut at
  5000; size = the **resolution bucket** whose aspect is nearest the first input's (16:9 -> 1280x704,
  4:3 -> 960x704, 1:1 -> 960x960, 3:4 -> 704x960, 9:16 -> 704x1280). The model generates in
  121-frame chunks (each later chunk adds 120) but writes as many frames as it read, so the chunking
  sets the work, not the frame count; the check reports the chunk count as a fact. The preview
  backend follows the same rules by construction, so one rule serves both backends: on the preview
  backend a failure means the pipeline broke, on the model it means the model or its inputs did.
- **Generated video, Cosmos-Transfer2.5**: frames = ``video_path``'s, capped by ``max_frames`` and 5000; size =
  that video's, rounded down to even (``keep_input_resolution``, its default), else its 720/480 bucket. Chunks of 93.
- **Generated video, Cosmos 3**: frames = the first hint's control (edge, blur, depth, seg; ``vision_path`` when the
  hint has no ``control_path``), capped by ``max_frames`` (default 5000); size = the ``resolution`` tier's bucket of
  ``aspect_ratio`` (with ``vision_path``, default 16,9) or of the first hint's aspect (without it). Chunks of 93.
- **Upscale**: exactly 3x the generated video's width and height, the same frame count.
- **Decodable**: every frame of the MP4 decodes, and as many as the container says.
- **Ownership**: every output file is owned by the user running the pipeline (not root, unless we are
  root); on a remote host (a ``docker run`` command was recorded) the container must also have run
  with ``-u uid:gid``, non-root, else the files left on the host are root-owned (Cosmos' container runs
  as root by default).
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from pydantic import ValidationError

from cosmos_assets.machines.job import relative_inside
from cosmos_assets.media import VideoInfo, VideoReadError, probe_video
from cosmos_assets.models.cosmos3_contract import HINT_KEYS, Spec3
from cosmos_assets.models.transfer2_5 import Spec25
from cosmos_assets.prompts.inputs import input_videos
from cosmos_assets.prompts.spec import SpecError, parse_spec
from cosmos_assets.runs.spec_used import SpecUsed

MAX_FRAMES = 5000
CHUNK_FRAMES = 121
UPSCALE_FACTOR = 3
BUCKETS: tuple[tuple[int, int], ...] = ((1280, 704), (960, 704), (960, 960), (704, 960), (704, 1280))
"""(width, height) of Cosmos-Transfer1's 720p resolution buckets (Transfer2.5's "720" buckets are the same)."""
BUCKETS_25_480: tuple[tuple[int, int], ...] = (
    (768, 432),
    (640, 480),
    (480, 480),
    (480, 640),
    (432, 768),
)  # docs/upstream/transfer2.5.md#resolution-buckets
# Cosmos 3's tiers by aspect_ratio (data/generator/utils.py VIDEO_RES_SIZE_INFO); the 256 tier is not documented.
TIERS_3: dict[str, dict[str, tuple[int, int]]] = {
    "720": {"16,9": (1280, 720), "4,3": (1104, 832), "1,1": (960, 960), "3,4": (832, 1104), "9,16": (720, 1280)},
    "480": {"16,9": (832, 480), "4,3": (736, 544), "1,1": (640, 640), "3,4": (544, 736), "9,16": (480, 832)},
}
ASPECTS_3 = {"16,9": 16 / 9, "4,3": 4 / 3, "1,1": 1.0, "3,4": 3 / 4, "9,16": 9 / 16}
NEWER_CHUNK_FRAMES = 93  # Transfer2.5's and Cosmos 3's default num_video_frames_per_chunk
CONTAINER_ROOT = "/workspace/"  # the newer models' specs carry container paths (docs/models.md)
CONTROL_PIX_FMT = "yuv420p"


@dataclass
class CheckReport:
    """The outcome of one rule: passed when no problem was found; facts are shown as metadata."""

    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems

    def description(self, ok: str) -> str:
        return ok if self.passed else "; ".join(self.problems)


# --------------------------------------------------------------------------------------------------
# Rules (plain Python)
# --------------------------------------------------------------------------------------------------


def nearest_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]] = BUCKETS) -> tuple[int, int]:
    """The resolution bucket whose aspect ratio is nearest (in log space) to width/height."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def chunk_count(frames: int, chunk: int = CHUNK_FRAMES) -> int:
    """``chunk``-frame chunks the model runs for ``frames`` (each chunk after the first reuses one frame)."""
    return 1 if frames <= chunk else 1 + math.ceil((frames - chunk) / (chunk - 1))


def expected_generation(inputs: Sequence[VideoInfo]) -> tuple[int, tuple[int, int]]:
    """(frames, (width, height)) the model writes for these input videos (first one sets the aspect)."""
    if not inputs:
        raise ValueError("a generation needs at least one input video")
    frames = min(min(info.frames for info in inputs), MAX_FRAMES)
    return frames, nearest_bucket(inputs[0].width, inputs[0].height)


def count_decoded_frames(path: Path) -> int:
    """Decode every frame of the first video stream and count them; ``VideoReadError`` if decoding fails."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            return sum(1 for _ in container.decode(stream))
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise VideoReadError(f"{path} cannot be decoded: {exc}") from exc


def check_decodable(path: Path) -> CheckReport:
    """Every frame decodes, and the count matches what the container declares."""
    report = CheckReport(facts={"path": str(path)})
    try:
        info = probe_video(path)
        decoded = count_decoded_frames(path)
    except VideoReadError as error:
        report.problems.append(str(error))
        return report
    report.facts.update(decoded_frames=decoded, declared_frames=info.frames, codec=info.codec)
    if decoded != info.frames:
        report.problems.append(f"{path.name}: {decoded} frames decode but the container says {info.frames}")
    return report


def _probe_all(videos: Mapping[str, Path], report: CheckReport) -> dict[str, VideoInfo]:
    infos: dict[str, VideoInfo] = {}
    for name, path in videos.items():
        try:
            infos[name] = probe_video(path)
        except VideoReadError as error:
            report.problems.append(f"{name}: {error}")
    return infos


def check_controls_match_render(
    videos: Mapping[str, Path], render_frames: int, render_size: tuple[int, int], max_frames: int | None = None
) -> CheckReport:
    """Each pass has the render's frames (or ``max_frames``), its size padded to even, yuv420p."""
    frames = render_frames if max_frames is None else min(max_frames, render_frames)
    width, height = render_size
    size = (width + width % 2, height + height % 2)
    report = CheckReport(facts={"expected_frames": frames, "expected_resolution": f"{size[0]}x{size[1]}"})
    for name, info in _probe_all(videos, report).items():
        report.facts[f"{name}_frames"] = info.frames
        if info.frames != frames:
            report.problems.append(f"{name}: {info.frames} frames, the render gives {frames}")
        if (info.width, info.height) != size:
            report.problems.append(
                f"{name}: {info.width}x{info.height}, expected {size[0]}x{size[1]} (render {width}x{height} padded to even)"
            )
        if info.pix_fmt != CONTROL_PIX_FMT:
            report.problems.append(f"{name}: pixel format {info.pix_fmt}, expected {CONTROL_PIX_FMT}")
    return report


def check_generated(video: Path, inputs: Sequence[Path]) -> CheckReport:
    """Transfer1 (and the preview): frames = shortest input capped at 5000; size = the first input's bucket."""
    report = CheckReport()
    infos = list(_probe_all({str(p): p for p in inputs}, report).values())
    if not infos:
        report.problems.append("no input video of the run could be read, so nothing to compare with")
        return report
    frames, size = expected_generation(infos)
    report.facts["chunks_of_121"] = chunk_count(frames)
    return _compare(video, frames, size, report, f"shortest input, at most {MAX_FRAMES}")


def _compare(
    video: Path,
    frames: int,
    size: tuple[int, int] | None,
    report: CheckReport,
    why: str,
    size_is: str = "the resolution bucket",
) -> CheckReport:
    """``video`` has ``frames`` frames and ``size`` (None: no documented size to compare with, shown as a fact)."""
    report.facts.update(
        expected_frames=frames, expected_resolution=f"{size[0]}x{size[1]}" if size else "(not documented)"
    )
    try:
        info = probe_video(video)
    except VideoReadError as error:
        report.problems.append(str(error))
        return report
    report.facts.update(frames=info.frames, resolution=f"{info.width}x{info.height}")
    if info.frames != frames:
        report.problems.append(f"{video.name}: {info.frames} frames, expected {frames} ({why})")
    if size is not None and (info.width, info.height) != size:
        report.problems.append(f"{video.name}: {info.width}x{info.height}, expected {size_is} {size[0]}x{size[1]}")
    return report


def check_generated_run(video: Path, used: SpecUsed, project_root: Path) -> CheckReport:
    """Frames and size as the model that ran writes them: ``used.backend`` picks the rule, read with its own spec.

    Each model's spec is read with that model's parser (Transfer2.5's ``control_path`` is not a Transfer1 key): a
    spec its model's parser refuses, or an input that is not under the project, is a failed check naming the field.
    """
    rule = GENERATION_RULES.get(used.backend, _transfer1_rule)
    report = CheckReport(facts={"model": used.backend})
    try:
        return rule(video, used.spec, Path(project_root), report)
    except ValidationError as error:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3])
        report.problems.append(f"spec_used.json: the {used.backend} spec cannot be read ({fields})")
    except (SpecError, ValueError) as error:
        report.problems.append(
            f"spec_used.json: the {used.backend} spec cannot be read ({' '.join(str(error).split())})"
        )
    return report


def _transfer1_rule(video: Path, spec: dict[str, Any], root: Path, report: CheckReport) -> CheckReport:
    inputs = [root / rel for rel in input_videos(parse_spec(spec))]
    generated = check_generated(video, inputs)
    generated.facts = {**report.facts, **generated.facts}
    return generated


def _local(container_path: str, root: Path) -> Path:
    """A newer model's ``/workspace/...`` spec path as the project's file (it mirrors the model root)."""
    if not container_path.startswith(CONTAINER_ROOT):
        raise ValueError(f"{container_path!r} is not under {CONTAINER_ROOT}")
    return root / relative_inside(container_path.removeprefix(CONTAINER_ROOT), "spec path")


def _probe_one(path: Path, report: CheckReport) -> VideoInfo | None:
    infos = _probe_all({path.name: path}, report)
    return infos.get(path.name)


def _transfer2_5_rule(video: Path, spec: dict[str, Any], root: Path, report: CheckReport) -> CheckReport:
    parsed = Spec25.model_validate(spec)
    source = _probe_one(_local(parsed.video_path, root), report)
    if source is None:
        return report
    frames = min(source.frames, parsed.max_frames or MAX_FRAMES, MAX_FRAMES)
    if parsed.keep_input_resolution is False:
        buckets = BUCKETS_25_480 if parsed.resolution == "480" else BUCKETS
        size: tuple[int, int] | None = nearest_bucket(source.width, source.height, buckets)
        size_is = f"the {parsed.resolution or '720'} bucket (keep_input_resolution false)"
    else:
        size = (source.width - source.width % 2, source.height - source.height % 2)
        size_is = "video_path's size rounded down to even (keep_input_resolution)"
    report.facts["chunks"] = chunk_count(frames, parsed.num_video_frames_per_chunk or NEWER_CHUNK_FRAMES)
    return _compare(video, frames, size, report, "video_path's frames, capped by max_frames", size_is)


def _cosmos3_rule(video: Path, spec: dict[str, Any], root: Path, report: CheckReport) -> CheckReport:
    parsed = Spec3.model_validate(spec)
    hints = [(key, getattr(parsed, key)) for key in HINT_KEYS if getattr(parsed, key) is not None]
    if not hints:
        report.problems.append("spec_used.json: the cosmos3 spec has no control hint, so nothing sets the length")
        return report
    path = hints[0][1].control_path or parsed.vision_path
    if path is None:
        report.problems.append(f"spec_used.json: hint {hints[0][0]} has no control_path and there is no vision_path")
        return report
    first = _probe_one(_local(path, root), report)
    if first is None:
        return report
    frames = min(first.frames, parsed.max_frames or MAX_FRAMES)
    if parsed.vision_path is not None:
        aspect = parsed.aspect_ratio or "16,9"
    else:
        ratio = first.width / first.height
        aspect = min(ASPECTS_3, key=lambda name: abs(math.log(ASPECTS_3[name] / ratio)))
    size = TIERS_3.get(parsed.resolution, {}).get(aspect)
    report.facts.update(resolution_tier=parsed.resolution, aspect_ratio=aspect)
    chunk = parsed.num_video_frames_per_chunk or NEWER_CHUNK_FRAMES
    report.facts["chunks"] = chunk_count(frames, chunk + (-(chunk - 1)) % 4)  # rounded up to 4n+1 upstream
    return _compare(
        video,
        frames,
        size,
        report,
        f"hint {hints[0][0]}'s frames, capped by max_frames",
        f"the {parsed.resolution} tier's {aspect} bucket",
    )


GENERATION_RULES = {"cosmos-transfer2.5": _transfer2_5_rule, "cosmos3": _cosmos3_rule}
"""The models whose generation rule is not Transfer1's (the preview follows Transfer1's by construction)."""


def check_upscale(upscaled: Path, generated: Path) -> CheckReport:
    """Exactly 3x the generated video's width and height, with its frame count."""
    report = CheckReport()
    infos = _probe_all({"upscaled": upscaled, "generated": generated}, report)
    if len(infos) < 2:
        return report
    up, gen = infos["upscaled"], infos["generated"]
    want = (UPSCALE_FACTOR * gen.width, UPSCALE_FACTOR * gen.height)
    report.facts.update(
        resolution=f"{up.width}x{up.height}", expected_resolution=f"{want[0]}x{want[1]}", frames=up.frames
    )
    if (up.width, up.height) != want:
        report.problems.append(
            f"upscale is {up.width}x{up.height}, expected {want[0]}x{want[1]} (3x {gen.width}x{gen.height})"
        )
    if up.frames != gen.frames:
        report.problems.append(f"upscale has {up.frames} frames, the generated video {gen.frames}")
    return report


def container_user(command: Sequence[str]) -> str | None:
    """The ``-u``/``--user`` value of a ``docker run`` argv, or None when it runs as the image's user."""
    for i, arg in enumerate(command):
        if arg in ("-u", "--user") and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith("--user="):
            return arg.split("=", 1)[1]
    return None


def check_ownership(
    paths: Sequence[Path], uid: int | None = None, remote: bool = False, remote_user: str | None = None
) -> CheckReport:
    """Every file is owned by ``uid`` (default: ours); a remote run must have used a non-root container user."""
    uid = os.getuid() if uid is None else uid
    report = CheckReport(facts={"owner_uid": uid, "files": len(paths)})
    for path in paths:
        try:
            owner = path.stat().st_uid
        except OSError as error:
            report.problems.append(f"{path}: {error.strerror}")
            continue
        if owner != uid:
            who = "root" if owner == 0 else f"uid {owner}"
            report.problems.append(
                f"{path} is owned by {who}, not uid {uid}: fix with chown, and run the container as -u uid:gid"
            )
    if remote:
        report.facts["container_user"] = remote_user or "(image default: root)"
        if remote_user is None or remote_user.split(":")[0] in ("0", "root"):
            report.problems.append(
                "the container ran as root (no non-root -u uid:gid), so its files on the host are root-owned"
            )
    return report


# --------------------------------------------------------------------------------------------------
# Finding the files of a partition
# --------------------------------------------------------------------------------------------------


def output_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def recorded_remote_user(spec_used: SpecUsed) -> tuple[bool, str | None]:
    """(ran in a container, the container user it recorded): ``container.user`` or the docker argv's ``-u``.

    Whatever the model: the preview backend run on an SSH host runs in docker too, and must run non-root.
    """
    container = spec_used.container
    in_container = (
        container.get("runtime") == "docker" or "user" in container or spec_used.command[:2] == ["docker", "run"]
    )
    if not in_container:
        return False, None
    user = container.get("user")
    return True, str(user) if user else container_user(spec_used.command)


def read_spec_used(folder: Path) -> SpecUsed:
    return SpecUsed.read(folder / "spec_used.json")


def merge(reports: Mapping[str, CheckReport]) -> CheckReport:
    """One report of several (e.g. one per control pass); facts are prefixed with the part's name."""
    merged = CheckReport()
    for name, report in reports.items():
        merged.problems.extend(report.problems)
        merged.facts.update({f"{name}_{k}": v for k, v in report.facts.items()})
    return merged
