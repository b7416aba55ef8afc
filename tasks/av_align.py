"""AV-Align: how well the peaks of a video's motion coincide with the onsets of its audio.

Definition of TempoTokens (Yariv et al., "Diverse and Aligned Audio-to-Video Generation via
Text-to-Video Model Adaptation", AAAI 2024), re-implemented from ``guyyariv/TempoTokens``
``av_align.py`` as it stands since its update of 2025-02-13 (commit bf0b1e3), whose notes say
both rules below "have always been the case" (REFERENCE.md §4.5, §6):

* **audio peaks**: the audio at librosa's default 22050 Hz (``librosa.load``), then
  ``librosa.onset.onset_strength`` and ``librosa.onset.onset_detect`` with their defaults
  (hop 512), as times in seconds (:func:`audio_peak_times`);
* **video peaks**: per frame pair, the mean magnitude of Farnebäck optical flow between the
  grey frames (``cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 15, 3, 5, 1.2, 0)``),
  the first value duplicated so that there is one value per frame; the strict local maxima
  ``v[i-1] < v[i] > v[i+1]`` for ``1 <= i <= T-2`` with ``v[i] >= 0.1`` (smaller flow peaks are
  noise, not motion), at ``t = i / fps`` (:func:`video_peak_times`);
* audio peaks in order, each **matches** the first video peak not matched yet that lies
  strictly within one frame of it, ``t_v - 1/fps < t_a < t_v + 1/fps`` (:func:`match_peaks`):
  one video peak matches at most one audio peak, so the score, ``matches / (|A| + |V| -
  matches)`` (:func:`peak_iou`), is an IoU in [0, 1]; averaged over videos by the caller.

The first published script (2023) had neither rule: it kept every strict maximum (pixel
noise of sigma 3 on an aligned video then scores 0.25 instead of 1) and let one video peak
match several audio peaks (an IoU above 1 was possible); dancegen followed it until it changed.
Differences from the current script, both deliberate:

* it reads BGR frames with OpenCV and converts with ``COLOR_BGR2GRAY``; our frames are RGB and
  are converted with ``COLOR_RGB2GRAY``: the same grey image of the same picture;
* it divides by zero when the audio has no onset and the video no peak; that case scores 0
  here (no evidence of alignment), as does any video without a flow peak (a static video).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import librosa
import numpy as np

#: TempoTokens loads the audio with ``librosa.load``'s default rate.
AUDIO_RATE = 22050
#: Flow peaks below this mean magnitude (pixels per frame) are not motion (TempoTokens).
MIN_FLOW_PEAK = 0.1

# cv2.calcOpticalFlowFarneback(prev, next, flow, pyr_scale, levels, winsize, iterations,
# poly_n, poly_sigma, flags), as in TempoTokens' compute_of
_FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


@dataclass(frozen=True)
class AvAlign:
    """AV-Align of one video: the score, and the peaks (seconds) it was computed from."""

    score: float
    audio_peaks: np.ndarray
    video_peaks: np.ndarray
    matches: int


def audio_peak_times(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times in seconds of mono float ``audio`` (samples in [-1, 1]) at ``sample_rate``.

    The audio is resampled to 22050 Hz first when it is at another rate (``librosa.load``
    would have resampled it too, with the same default resampler).
    """
    signal = np.asarray(audio, dtype=np.float32)
    if signal.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {signal.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if sample_rate != AUDIO_RATE:
        signal = librosa.resample(signal, orig_sr=sample_rate, target_sr=AUDIO_RATE)
    envelope = librosa.onset.onset_strength(y=signal, sr=AUDIO_RATE)
    onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=AUDIO_RATE)
    return np.asarray(librosa.frames_to_time(onsets, sr=AUDIO_RATE), dtype=np.float64)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {array.dtype}")
    if len(array) < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {len(array)}")
    return array


def _check_fps(fps: float) -> None:
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")


def flow_magnitudes(frames: np.ndarray) -> np.ndarray:
    """Mean Farnebäck flow magnitude per frame, ``(T,)``: entry ``i`` is the flow from frame
    ``i - 1`` to ``i``, and entry 0 repeats entry 1 (TempoTokens' ``flow_trajectory``)."""
    grey = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in _check_frames(frames)]
    magnitudes = []
    for previous, current in itertools.pairwise(grey):
        flow = cv2.calcOpticalFlowFarneback(previous, current, None, *_FARNEBACK)
        # cv2.magnitude + cv2.mean, as TempoTokens, so that ties between frames break alike
        magnitudes.append(cv2.mean(cv2.magnitude(flow[..., 0], flow[..., 1]))[0])
    return np.asarray(magnitudes[:1] + magnitudes, dtype=np.float64)


def local_maxima(values: np.ndarray, floor: float = MIN_FLOW_PEAK) -> np.ndarray:
    """Indices ``i`` with ``values[i-1] < values[i] > values[i+1]`` and ``values[i] >= floor``
    (never the first or last; a plateau has none), as TempoTokens' ``find_local_max_indexes``."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {v.shape}")
    inner = v[1:-1]
    return np.flatnonzero((v[:-2] < inner) & (inner > v[2:]) & (inner >= floor)) + 1


def video_peak_times(frames: np.ndarray, fps: float) -> np.ndarray:
    """Times in seconds (``i / fps``) of the local maxima (at least :data:`MIN_FLOW_PEAK`) of
    the video's flow magnitudes.

    ``frames`` is ``(T, H, W, 3)`` uint8 RGB with ``T >= 2``.
    """
    _check_fps(fps)
    return local_maxima(flow_magnitudes(frames)) / float(fps)


def match_peaks(audio_peaks: np.ndarray, video_peaks: np.ndarray, tolerance: float) -> int:
    """How many audio peaks match a video peak strictly within ``tolerance`` seconds, each
    video peak used once: audio peaks in order, each taking the first free video peak.

    TempoTokens' test, ``t_v - tol < t_a < t_v + tol``, written the same way (not as
    ``|t_a - t_v| < tol``) so that peaks exactly one frame apart round alike.
    """
    video = [float(v) for v in np.asarray(video_peaks, dtype=np.float64).ravel()]
    used = [False] * len(video)
    matches = 0
    for audio in np.asarray(audio_peaks, dtype=np.float64).ravel():
        for j, peak in enumerate(video):
            if not used[j] and peak - tolerance < audio < peak + tolerance:
                used[j] = True
                matches += 1
                break
    return matches


def peak_iou(matches: int, audio_count: int, video_count: int) -> float:
    """``matches / (audio_count + video_count - matches)``; 0 when there are no peaks at all."""
    union = audio_count + video_count - matches
    return matches / union if union > 0 else 0.0


def av_align(
    audio: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float
) -> AvAlign:
    """AV-Align of one video: ``frames`` ``(T, H, W, 3)`` uint8 RGB at ``fps`` and its mono
    ``audio`` at ``sample_rate``, both starting at t = 0.

    A static video (no flow peak) scores 0, as does silent audio with a still video.
    """
    _check_fps(fps)
    audio_peaks = audio_peak_times(audio, sample_rate)
    video_peaks = video_peak_times(frames, fps)
    matches = match_peaks(audio_peaks, video_peaks, 1.0 / fps)
    score = peak_iou(matches, len(audio_peaks), len(video_peaks))
    return AvAlign(score=score, audio_peaks=audio_peaks, video_peaks=video_peaks, matches=matches)
