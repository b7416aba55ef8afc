"""Cut one window out of a sequence's motion and music, at the dataset's rates."""

from __future__ import annotations

import librosa
import numpy as np

from dancegen.errors import InputError
from dancegen.storage.aistpp import Motion


def motion_window(motion: Motion, start_s: float, frames: int, fps: int) -> Motion:
    """``frames`` frames of ``motion`` from ``start_s``, resampled to ``fps``.

    AIST++ is 60 fps and the dataset 30 fps (EDGE takes every second frame); other rates must
    divide the source rate exactly.
    """
    ratio = motion.fps / fps
    step = round(ratio)
    if abs(ratio - step) > 1e-6 or step < 1:
        raise InputError(f"motion at {motion.fps} fps cannot be resampled to {fps} fps by striding")
    first = round(start_s * motion.fps)
    stop = first + frames * step
    if stop > len(motion.poses):
        raise InputError(
            f"motion has {len(motion.poses)} frames, window needs frames {first}..{stop}"
        )
    return Motion(motion.poses[first:stop:step], motion.trans[first:stop:step],
                  motion.scaling, float(fps))


def resample_audio(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample mono audio (soxr, high quality); no-op when the rates match."""
    if rate == target:
        return audio.astype(np.float32, copy=False)
    return librosa.resample(audio, orig_sr=rate, target_sr=target).astype(np.float32)


def audio_window(audio: np.ndarray, rate: int, start_s: float, seconds: float) -> np.ndarray:
    """Exactly ``seconds * rate`` samples from ``start_s``, zero-padded past the end.

    The planner only plans windows inside the music, so padding covers rounding only.
    """
    first = round(start_s * rate)
    length = round(seconds * rate)
    window = audio[first : first + length]
    if len(window) < length:
        window = np.pad(window, (0, length - len(window)))
    return window
