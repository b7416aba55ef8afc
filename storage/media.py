"""Media files in and out: a reference photo, a music file, an MP4 with its music muxed.

Paths are local files or ``s3://`` URLs (:class:`~dancegen.storage.location.StoreLocation`).
An MP4 is encoded to a local temporary file by imageio-ffmpeg's static ffmpeg (H.264, yuv420p,
AAC audio) and then written in one piece, so a reader never sees half a video.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import soundfile

from dancegen.errors import InputError
from dancegen.storage.audio import decode_audio
from dancegen.storage.location import split_url


def _read(url: str, what: str) -> bytes:
    location, name = split_url(url)
    data = location.read_bytes(name)
    if data is None:
        raise InputError(f"{what} not found: {url}")
    return data


def read_image(url: str) -> np.ndarray:
    """A photo as an (H, W, 3|4) or (H, W) uint8 array; unreadable files are InputErrors."""
    data = _read(url, "reference image")
    suffix = Path(url).suffix.lower() or None  # spares imageio a search through every plugin
    try:
        image = iio.imread(data, extension=suffix)
    except Exception as error:
        raise InputError(f"{url}: not a readable image ({error})") from None
    if image.ndim == 4:  # animated formats: the first frame
        image = image[0]
    return image


def read_music(url: str) -> tuple[np.ndarray, int]:
    """Mono float32 samples of any format ffmpeg or libsndfile reads, and their rate."""
    return decode_audio(_read(url, "music"), url)


def write_mp4(url: str, frames: np.ndarray, fps: int, audio: np.ndarray | None = None,
              sample_rate: int | None = None, quality: float = 8.0) -> None:
    """Encode (T, H, W, 3) uint8 ``frames`` (sides even) with ``audio`` muxed, cut to the video."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    location, name = split_url(url)
    with tempfile.TemporaryDirectory() as tmp:
        video, sound = Path(tmp) / "video.mp4", None
        if audio is not None:
            sound = Path(tmp) / "music.wav"
            soundfile.write(sound, audio[: round(len(frames) / fps * sample_rate)], sample_rate)
        writer = imageio_ffmpeg.write_frames(
            str(video), (width, height), fps=fps, quality=quality, codec="libx264",
            macro_block_size=1, audio_path=str(sound) if sound else None,
            audio_codec="aac" if sound else None, output_params=["-shortest"],
            ffmpeg_log_level="error")
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        location.write_bytes(name, video.read_bytes())


def probe_mp4(path: str | Path) -> dict[str, object]:
    """Frame count, size, fps and whether there is an audio stream (for checks and tests)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    count = sum(1 for _ in reader)
    streams = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                             capture_output=True, text=True, check=False).stderr
    return {"frames": count, "size": tuple(meta["size"]), "fps": float(meta["fps"]),
            "audio": "Audio:" in streams}
