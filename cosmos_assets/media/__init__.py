"""Media: render frames in, control videos out, video files probed and shown. Plain Python (numpy + PyAV).

Everything runs in-process: PNGs are decoded and videos encoded through PyAV's bindings to FFmpeg,
never by shelling out to the ffmpeg CLI. ``frames`` reads and checks the PNG sequences, ``encode``
writes the control videos, ``video`` probes and samples video files.
"""

from cosmos_assets.media.encode import EncodedVideo, encode_control_videos
from cosmos_assets.media.frames import (
    FRAME_NAME,
    MODALITIES,
    PngHeader,
    RenderSequence,
    RenderValidationError,
    decode_png,
    read_png_header,
    scan_render_folder,
    write_png,
)
from cosmos_assets.media.video import VideoInfo, VideoReadError, contact_sheet, probe_video, read_frames

__all__ = [
    "FRAME_NAME",
    "MODALITIES",
    "EncodedVideo",
    "PngHeader",
    "RenderSequence",
    "RenderValidationError",
    "VideoInfo",
    "VideoReadError",
    "contact_sheet",
    "decode_png",
    "encode_control_videos",
    "probe_video",
    "read_frames",
    "read_png_header",
    "scan_render_folder",
    "write_png",
]
