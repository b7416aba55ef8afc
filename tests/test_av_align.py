"""AV-Align on synthetic click tracks and videos whose motion events are placed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.tasks.av_align import (
    AUDIO_RATE,
    audio_peak_times,
    av_align,
    flow_magnitudes,
    local_maxima,
    match_peaks,
    peak_iou,
    video_peak_times,
)

FPS = 30
T = 120  # 4 s
BEATS = np.arange(15, T, 15)  # 120 bpm, a click every 15 frames from 0.5 s on
SIZE = 64


def _click_track(beat_frames: np.ndarray, sample_rate: int = AUDIO_RATE) -> np.ndarray:
    """Short decaying 1 kHz clicks starting exactly at the given video frames' times."""
    audio = np.zeros(int(T / FPS * sample_rate), dtype=np.float32)
    t = np.arange(int(0.02 * sample_rate)) / sample_rate
    click = (np.sin(2 * np.pi * 1000 * t) * np.exp(-t / 0.004)).astype(np.float32)
    for frame in beat_frames:
        start = round(frame / FPS * sample_rate)
        audio[start:start + len(click)] += click[: len(audio) - start]
    return audio


def _jumping_patch(event_frames: np.ndarray, frames: int = T) -> np.ndarray:
    """A textured patch that jumps 6 px sideways at each event frame and rests in between,
    so the flow from frame i-1 to i peaks exactly at the events."""
    patch = np.random.default_rng(0).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    video = np.zeros((frames, SIZE, SIZE, 3), dtype=np.uint8)
    side = np.cumsum(np.isin(np.arange(frames), event_frames)) % 2
    for index, x in enumerate(16 + 6 * side):
        video[index, 20:44, x:x + 24] = patch
    return video


def _tempotokens_iou(audio_peaks: list[float], video_peaks: list[float], fps: float) -> float:
    """calc_intersection_over_union of TempoTokens' av_align.py (since 2025-02, bf0b1e3),
    transcribed literally."""
    intersection_length = 0
    used_video_peaks = [False] * len(video_peaks)
    for audio_peak in audio_peaks:
        for j, video_peak in enumerate(video_peaks):
            if not used_video_peaks[j] and video_peak - 1 / fps < audio_peak < video_peak + 1 / fps:
                intersection_length += 1
                used_video_peaks[j] = True
                break
    return intersection_length / (len(audio_peaks) + len(video_peaks) - intersection_length)


def _tempotokens_local_max(arr: list[float], fps: float) -> list[float]:
    """find_local_max_indexes of TempoTokens (since 2025-02): strict maxima of at least 0.1."""
    n = len(arr)
    return [i / fps for i in range(1, n - 1) if arr[i - 1] < arr[i] > arr[i + 1] and arr[i] >= 0.1]


# --- the matching logic against TempoTokens' own formula ----------------------------------------


def test_iou_equals_tempotokens_formula_on_hand_made_peaks() -> None:
    rng = np.random.default_rng(1)
    cases = [
        ([0.5, 1.0, 1.5], [0.5, 1.0, 1.5]),           # all matched: 1
        ([0.5, 1.0, 1.5], [0.52, 1.3]),                # one within a frame, one not
        ([1.0], [1.0 + 1 / FPS]),                      # exactly one frame apart: no match
        ([1.0, 1.01, 1.02], [1.0]),                    # one video peak matches one of them
        ([1.0, 1.02], [0.99, 1.03]),                   # first free peak: both matched
        ([0.2, 0.9], [2.0, 3.0, 4.0]),                 # nothing matches: 0
        ([0.3], []),                                   # no video peak
    ]
    for _ in range(20):
        audio = np.sort(rng.uniform(0, 4, rng.integers(1, 12)))
        video = np.round(rng.uniform(0, 4, rng.integers(0, 12)) * FPS) / FPS
        cases.append((audio.tolist(), video.tolist()))
    for audio, video in cases:
        matches = match_peaks(np.array(audio), np.array(video), 1 / FPS)
        assert peak_iou(matches, len(audio), len(video)) == pytest.approx(
            _tempotokens_iou(audio, video, FPS), abs=1e-12
        ), (audio, video)
    # one motion peak matches one onset: the score is an IoU, never above 1 (2023's script: 3)
    assert peak_iou(match_peaks(np.array([1.0, 1.01, 1.02]), np.array([1.0]), 1 / FPS),
                    3, 1) == pytest.approx(1 / 3)


def test_no_peaks_at_all_scores_zero_instead_of_dividing_by_zero() -> None:
    assert match_peaks(np.array([]), np.array([]), 1 / FPS) == 0
    assert peak_iou(0, 0, 0) == 0.0


def test_local_maxima_are_tempotokens_strict_maxima() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        values = rng.integers(0, 4, size=rng.integers(0, 30)) * 0.07  # ties, some below 0.1
        assert (local_maxima(values) / FPS).tolist() == _tempotokens_local_max(values.tolist(), FPS)
    assert local_maxima(np.array([3.0, 1.0, 2.0])).size == 0  # the ends are never maxima
    assert local_maxima(np.array([0.0, 2.0, 2.0, 0.0])).size == 0  # nor is a plateau
    assert local_maxima(np.array([0.0, 0.09, 0.0, 0.1, 0.0])).tolist() == [3]  # nor noise


# --- peaks of real signals -----------------------------------------------------------------------


def test_audio_peaks_of_a_click_track_fall_on_the_clicks_at_any_rate() -> None:
    beat_times = BEATS / FPS
    for rate in (AUDIO_RATE, 16000):
        peaks = audio_peak_times(_click_track(BEATS, rate), rate)
        assert len(peaks) == len(BEATS)
        # onset frames are 512 / 22050 s = 23 ms apart: within a hop of the click
        assert np.abs(peaks - beat_times).max() < 512 / AUDIO_RATE


def test_video_peaks_sit_on_the_motion_events() -> None:
    magnitudes = flow_magnitudes(_jumping_patch(BEATS))
    assert magnitudes.shape == (T,)
    assert magnitudes[0] == magnitudes[1]  # the first value is duplicated
    assert np.allclose(video_peak_times(_jumping_patch(BEATS), FPS) * FPS, BEATS)


def test_static_video_has_no_peak_and_scores_zero() -> None:
    still = np.full((T, SIZE, SIZE, 3), 90, dtype=np.uint8)
    assert video_peak_times(still, FPS).size == 0
    result = av_align(_click_track(BEATS), AUDIO_RATE, still, FPS)
    assert result.score == 0.0 and result.video_peaks.size == 0
    assert len(result.audio_peaks) == len(BEATS)


def test_motion_on_the_clicks_scores_one_and_shifted_motion_scores_lower() -> None:
    audio = _click_track(BEATS)
    aligned = av_align(audio, AUDIO_RATE, _jumping_patch(BEATS), FPS)
    assert aligned.score == pytest.approx(1.0)
    assert aligned.matches == len(BEATS)
    late = av_align(audio, AUDIO_RATE, _jumping_patch(BEATS + 3), FPS)  # 100 ms late
    assert late.score == 0.0 < aligned.score
    # every other event 4 frames late: those onsets go unmatched, IoU = m / (7 + 7 - m)
    mixed_events = np.where(np.arange(len(BEATS)) % 2 == 0, BEATS, BEATS + 4)
    mixed = av_align(audio, AUDIO_RATE, _jumping_patch(mixed_events), FPS)
    matched = int(np.sum(np.arange(len(BEATS)) % 2 == 0))
    assert mixed.score == pytest.approx(matched / (2 * len(BEATS) - matched))


def test_pixel_noise_leaves_an_aligned_video_aligned() -> None:
    """Sensor-like noise (sigma 3) adds flow maxima below 0.1 px: they are not motion peaks,
    so an aligned video still scores 1 (2023's script kept them: 0.25)."""
    noise = np.random.default_rng(3).normal(0, 3, size=(T, SIZE, SIZE, 3))
    noisy = np.clip(_jumping_patch(BEATS) + noise, 0, 255).astype(np.uint8)
    result = av_align(_click_track(BEATS), AUDIO_RATE, noisy, FPS)
    assert result.score == pytest.approx(1.0)
    assert np.allclose(result.video_peaks * FPS, BEATS)


def test_bad_inputs_are_refused() -> None:
    video = _jumping_patch(BEATS)
    audio = _click_track(BEATS)
    with pytest.raises(ValueError, match="uint8"):
        av_align(audio, AUDIO_RATE, video.astype(np.float32), FPS)
    with pytest.raises(ValueError, match="RGB"):
        video_peak_times(video[..., 0], FPS)
    with pytest.raises(ValueError, match="2 frames"):
        video_peak_times(video[:1], FPS)
    with pytest.raises(ValueError, match="fps"):
        av_align(audio, AUDIO_RATE, video, 0)
    with pytest.raises(ValueError, match="mono"):
        audio_peak_times(np.stack([audio, audio]), AUDIO_RATE)
    with pytest.raises(ValueError, match="sample_rate"):
        audio_peak_times(audio, 0)
