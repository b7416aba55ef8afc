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


def decode_audio(data: bytes, where: str) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate; an unreadable or empty file is an InputError."""
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
    try:
        return float(soundfile.info(io.BytesIO(data)).duration)
    except Exception:
        audio, rate = decode_audio(data, where)
        return len(audio) / rate
