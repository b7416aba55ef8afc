"""Real AIST++ video frames: decode a window of an mp4, centre-crop and resize it.

imageio-ffmpeg ships a static ffmpeg; its filters do the frame-rate change (AIST++ is 60 fps),
the centre crop to the output aspect and the resize in one decoding pass.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import imageio_ffmpeg
import numpy as np

from dancegen.errors import InputError
from dancegen.storage.aistpp import AistppInputs

_STDERR = "=== stderr ==="  # where imageio-ffmpeg appends ffmpeg's whole log to its message
# ffmpeg's log around the errors: banner, build configuration, stream listing, progress
_LOG_NOISE = re.compile(r"^(\s|ffmpeg version|Input #|Output #|Stream mapping:|Press \[q\]|frame=)")
_COMPONENT = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")  # "[in#0 @ 0x55eb9b5e20c0] "


def video_name(sequence: str, camera: str) -> str:
    """AIST++ video of one camera: the sequence name with ``cAll`` replaced by the camera."""
    return sequence.replace("_cAll_", f"_{camera}_")


@contextmanager
def _local_copy(inputs: AistppInputs, key: str) -> Iterator[str]:
    """ffmpeg needs a file path: local inputs as they are, remote ones via a temp copy."""
    if inputs.location.is_local:
        yield inputs.location.path(key)
        return
    with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
        tmp.write(inputs.read_bytes(key))
        tmp.flush()
        yield tmp.name


def _check_size(path: str, meta: dict, width: int, height: int) -> None:
    """Refuse a video whose centre crop is smaller than the frames asked for: upscaling a
    small video would give blurred person frames that look valid."""
    source_w, source_h = meta.get("source_size") or meta.get("size") or (0, 0)
    crop_w, crop_h = min(source_w, source_h * width / height), min(source_h,
                                                                   source_w * height / width)
    if crop_w < width or crop_h < height:
        raise InputError(f"{path}: video is {source_w}x{source_h}, too small for "
                         f"{width}x{height} frames")


def ffmpeg_reason(message: str) -> str:
    """One line from an imageio-ffmpeg error: its own message, then the first and the last
    error ffmpeg logged (the cause, e.g. "moov atom not found", and its verdict), without the
    banner and build configuration that make up most of ffmpeg's log."""
    head, _, log = message.partition(_STDERR)
    logged: list[str] = []
    for raw in log.splitlines():
        if not raw.strip() or _LOG_NOISE.match(raw):
            continue
        line = _COMPONENT.sub("", raw.strip())
        if line not in logged:
            logged.append(line)
    picked = logged[:1] + logged[-1:] if len(logged) > 1 else logged
    return "; ".join(part for part in (" ".join(head.split()), *picked) if part)


def decode_window(path: str, start_s: float, frames: int, fps: int, width: int,
                  height: int) -> np.ndarray:
    """``frames`` RGB frames from ``start_s`` at ``fps``, centre-cropped to width:height."""
    crop = f"crop='min(iw,ih*{width}/{height})':'min(ih,iw*{height}/{width})'"
    reader = imageio_ffmpeg.read_frames(
        path,
        input_params=["-ss", f"{start_s:.6f}"],
        output_params=["-vf", f"fps={fps},{crop},scale={width}:{height}:flags=area",
                       "-frames:v", str(frames)],
    )
    try:
        _check_size(path, next(reader), width, height)  # metadata of the source stream
        decoded = [np.frombuffer(b, np.uint8).reshape(height, width, 3) for b in reader]
    except (RuntimeError, OSError, StopIteration) as error:
        raise InputError(f"{path}: cannot decode video ({ffmpeg_reason(str(error))})") from None
    finally:
        reader.close()
    if len(decoded) < frames:
        raise InputError(f"{path}: {len(decoded)} frames from {start_s} s, need {frames}")
    return np.stack(decoded)


def video_frames(inputs: AistppInputs, sequence: str, camera: str, start_s: float, frames: int,
                 fps: int, width: int, height: int) -> np.ndarray | None:
    """Frames of the sequence's AIST++ video for this camera, or None when there is none."""
    key = inputs.video_file(video_name(sequence, camera))
    if key is None:
        return None
    with _local_copy(inputs, key) as path:
        if not os.path.exists(path):
            raise InputError(f"video {path} vanished while reading")
        return decode_window(path, start_s, frames, fps, width, height)
