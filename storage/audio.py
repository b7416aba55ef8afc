"""Decode audio of any common format to mono float32: libsndfile first, ffmpeg for the rest.

libsndfile (``soundfile``) reads WAV, FLAC, OGG/Vorbis, Opus-in-OGG and MP3; AAC/M4A, WMA and
WebM go through the ffmpeg binary that imageio-ffmpeg ships, so no system ffmpeg is needed.

Decoded samples are checked, not trusted: integer formats come scaled by their own range into
[-1, 1), but float WAVs carry whatever values were written (integer PCM saved as float gives
samples of thousands), so an empty track, NaN/inf or a peak outside [-1, 1] is an InputError.
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
# libsndfile subtypes of lossy codecs; everything ffmpeg decodes (AAC, WMA, WebM) counts as lossy
LOSSY_SUBTYPES = frozenset({"VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"})
# Lossy decoders overshoot full scale (a 0.999 square wave decodes to 1.33 from MP3, 4.1 from
# Opus): peaks up to +12 dB are codec ringing and are clipped; beyond, the samples are wrongly
# scaled. Lossless formats reproduce what was written, so their limit is full scale itself.
LOSSY_PEAK = 4.0


def _ffmpeg_decode(data: bytes) -> tuple[np.ndarray, int]:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", "pipe:0", "-f", "f32le",
               "-ac", "1", "-ar", str(FFMPEG_RATE), "pipe:1"]
    done = subprocess.run(command, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(lines[-1] if lines else f"ffmpeg exited with {done.returncode}")
    return np.frombuffer(done.stdout, dtype="<f4").copy(), FFMPEG_RATE


def _soundfile_decode(data: bytes) -> tuple[np.ndarray, int, bool]:
    with soundfile.SoundFile(io.BytesIO(data)) as sound:
        return sound.read(dtype="float32"), sound.samplerate, sound.subtype in LOSSY_SUBTYPES


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


def checked_samples(audio: np.ndarray, lossy: bool, where: str) -> np.ndarray:
    """``audio`` (any channels) if it is usable, clipped to [-1, 1] when a lossy codec's
    overshoot took it past full scale; an empty track, NaN/inf or a peak beyond the format's
    limit is an InputError."""
    if audio.size == 0:
        raise InputError(f"{where}: no audio samples (the file holds a header only)")
    finite = np.isfinite(audio)
    if not finite.all():
        raise InputError(f"{where}: {audio.size - np.count_nonzero(finite)} of {audio.size} "
                         "audio samples are NaN or inf")
    peak = float(np.abs(audio).max())
    limit = LOSSY_PEAK if lossy else 1.0
    if peak > limit:
        allowed = f"[-1, 1] (+{20 * np.log10(limit):.0f} dB for a lossy codec)" if lossy \
            else "[-1, 1]"
        raise InputError(f"{where}: audio peaks at {peak:.4g}, outside {allowed}; wrongly "
                         "scaled samples (integer PCM saved as float?)")
    return np.clip(audio, -1.0, 1.0) if peak > 1.0 else audio


def decode_audio(data: bytes, where: str) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and their rate; an unreadable, truncated, empty,
    non-finite or wrongly scaled file is an InputError."""
    check_not_truncated(data, where)
    try:
        audio, rate, lossy = _soundfile_decode(data)
    except Exception:
        try:
            (audio, rate), lossy = _ffmpeg_decode(data), True
        except Exception as error:
            raise InputError(f"{where}: unreadable audio ({error})") from None
    audio = checked_samples(audio, lossy, where)  # every channel, before they are mixed
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return audio.astype(np.float32, copy=False), int(rate)


def audio_seconds(data: bytes, where: str) -> float:
    """Duration of a track whose samples pass :func:`decode_audio`'s checks.

    Decodes the whole file rather than reading its header: planning calls this, and only the
    samples show NaN or wrong scaling, so a bad track fails as its own sequence at planning
    instead of failing every music shard that holds one of its segments.
    """
    audio, rate = decode_audio(data, where)
    return len(audio) / rate
