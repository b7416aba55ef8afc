"""EDGE's baseline music features on music whose beats are known."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.fixtures import beat_times, synthesize_music
from dancegen.tasks.music_features import baseline_features, feature_sample_rate
from dancegen.tasks.segment_inputs import audio_window, resample_audio

FPS, HOP, FRAMES = 30, 512, 150


@pytest.mark.parametrize("bpm", [90.0, 125.0])
def test_baseline_features_find_the_known_beats(bpm: float) -> None:
    rate = feature_sample_rate(FPS, HOP)
    assert rate == 15360
    music = synthesize_music(bpm, 8.0, sample_rate=22050, seed=1)
    clip = audio_window(resample_audio(music, 22050, rate), rate, 0.0, 5.0)
    features = baseline_features(clip, FPS, FRAMES, HOP, start_bpm=bpm)
    assert features.shape == (FRAMES, 35) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert (features[:, 0] >= 0).all()                       # onset envelope
    assert set(np.unique(features[:, 33:])) <= {0.0, 1.0}    # one-hot columns
    beat_frames = np.flatnonzero(features[:, 34])
    truth = beat_times(bpm, 5.0) * FPS
    assert len(beat_frames) >= len(truth) - 2
    # every detected beat lies within 2 frames (67 ms) of a true beat
    assert max(np.abs(truth[None, :] - beat_frames[:, None]).min(axis=1)) <= 2
    period = np.median(np.diff(beat_frames))
    assert period == pytest.approx(FPS * 60 / bpm, abs=1.0)


def test_features_without_a_known_tempo_fall_back_to_estimation() -> None:
    rate = feature_sample_rate(FPS, HOP)
    clip = audio_window(resample_audio(synthesize_music(100.0, 5.0, seed=2), 22050, rate),
                        rate, 0.0, 5.0)
    features = baseline_features(clip, FPS, FRAMES, HOP, start_bpm=None)
    assert np.flatnonzero(features[:, 34]).size >= 5


@pytest.mark.filterwarnings("ignore:n_fft=512 is too large:UserWarning")
def test_too_short_audio_is_refused() -> None:
    with pytest.raises(ValueError, match="feature frames"):
        baseline_features(np.zeros(15360, np.float32), FPS, FRAMES, HOP, start_bpm=100.0)


def test_audio_window_pads_only_past_the_end() -> None:
    audio = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(audio_window(audio, 2, 1.0, 2.0), [2, 3, 4, 5])
    np.testing.assert_array_equal(audio_window(audio, 2, 4.0, 2.0), [8, 9, 0, 0])
