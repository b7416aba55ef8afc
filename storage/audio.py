"""Decode audio of any common format to mono float32: libsndfile first, ffmpeg for the rest.

libsndfile (``soundfile``) reads WAV, FLAC, OGG/Vorbis, Opus-in-OGG and MP3; AAC/M4A, WMA and
WebM go through the ffmpeg binary that imageio-ffmpeg ships, so no system ffmpeg is needed.
"""

from __future__ import annotations

import io
import subprocess

import imageio_ffmpeg
import numpy as np
import soundfile

from dancegen.errors import InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff",
                  ".wma", ".webm")
FFMPEG_RATE = 44100  # ffmpeg output rate (later stages resample to what they need)


def _ffmpeg_decode(data: bytes) -> tuple[np.ndarray, int]:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", "pipe:0", "-f", "f32le",
               "-ac", "1", "-ar", str(FFMPEG_RATE), "pipe:1"]
    done = subprocess.run(command, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(lines[-1] if lines else f"ffmpeg exited with {done.returncode}")
    return np.frombuffer(done.stdout, dtype="<f4").copy(), FFMPEG_RATE


def check_not_truncated(data: bytes, where: str) -> None:
    """Refuse a RIFF/WAV file shorter than its header says.

    libsndfile reads a cut-off WAV without complaint and returns the samples that are there,
    so a truncated download would silently become a shorter track (and fewer segments).
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        size_field = int.from_bytes(data[4:8], "little")
        declared = size_field + 8
        # 0 and 0xFFFFFFFF are the placeholders of streaming writers: no size to check
        if size_field not in (0, 0xFFFFFFFF) and len(data) < declared:
            raise InputError(f"{where}: truncated WAV ({len(data)} bytes, its header says "
                             f"{declared})")


def decode_audio(data: bytes, where: str) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate; an unreadable, truncated or empty file is an
    InputError."""
    check_not_truncated(data, where)
    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    except Exception:
        try:
            audio, rate = _ffmpeg_decode(data)
        except Exception as error:
            raise InputError(f"{where}: unreadable audio ({error})") from None
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.size == 0 or not np.isfinite(audio).all():
        raise InputError(f"{where}: empty audio or NaN samples")
    return audio.astype(np.float32, copy=False), int(rate)


def audio_seconds(data: bytes, where: str) -> float:
    """Duration from the header when libsndfile knows the format, else by decoding."""
    check_not_truncated(data, where)
    try:
        return float(soundfile.info(io.BytesIO(data)).duration)
    except Exception:
        audio, rate = decode_audio(data, where)
        return len(audio) / rate
