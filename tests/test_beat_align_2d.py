"""2D-BeatAlign on keypoints whose speed minima are placed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.tasks.beat_align_2d import beat_align_2d, fill_low_confidence
from dancegen.tasks.motion_quality import beat_align_score

FPS = 30
T = 150
PERIOD = 16  # frames per beat; even, so half a period is whole
MUSIC_BEATS = np.arange(8, T, PERIOD)
K = 18


def _drift(minimum_at: float, frames: int = T) -> np.ndarray:
    """Horizontal drift whose per-step speed is slowest at ``minimum_at + k * PERIOD``."""
    steps = np.arange(frames - 1)
    step = 6.0 * (1.0 - np.cos(2.0 * np.pi * (steps - minimum_at) / PERIOD)) + 0.3  # pixels
    return np.concatenate([[0.0], np.cumsum(step)])


def _keypoints(minimum_at: float, frames: int = T, score: float = 0.9) -> np.ndarray:
    """(T, 18, 3): a fixed 2D pose drifting along x, all keypoints with the given score."""
    rest = np.random.default_rng(0).uniform(50, 400, size=(K, 2))
    xy = np.repeat(rest[None], frames, axis=0)
    xy[..., 0] += _drift(minimum_at, frames)[:, None]
    return np.concatenate([xy, np.full((frames, K, 1), score)], axis=-1)


@pytest.mark.parametrize("variant", ["bailando", "fact"])
def test_speed_minima_on_the_beats_score_higher_than_half_a_beat_off(variant: str) -> None:
    aligned = beat_align_2d(_keypoints(minimum_at=8), MUSIC_BEATS, FPS, variant)
    shifted = beat_align_2d(_keypoints(minimum_at=8 + PERIOD // 2), MUSIC_BEATS, FPS, variant)
    assert aligned.score > 0.9
    assert shifted.score < 0.1
    assert aligned.variant == variant
    # FACT's envelope e[i] is the step into frame i, Bailando's v[i] the step out of it
    first = 8 if variant == "bailando" else 9
    assert set(aligned.motion_beats.tolist()) <= set(range(first, T, PERIOD))


@pytest.mark.parametrize("variant", ["bailando", "fact"])
def test_equals_the_3d_score_of_the_same_points_and_ignores_scale(variant: str) -> None:
    """24 points moving in a plane: the 2D score of their (x, y) is the 3D score of them."""
    rng = np.random.default_rng(1)
    joints = np.repeat(rng.uniform(-0.5, 0.5, size=(1, 24, 3)), T, axis=0)
    joints[..., 0] += _drift(minimum_at=5)[:, None] / 300
    joints[..., 1] += 0.02 * np.sin(np.arange(T) / 7.0)[:, None]  # some vertical motion too
    expected = beat_align_score(joints, MUSIC_BEATS, FPS, variant)
    assert beat_align_2d(joints[..., :2], MUSIC_BEATS, FPS, variant).score == pytest.approx(
        expected, abs=1e-12
    )
    # pixels of a 640-high frame instead of metres: the same minima, the same score
    in_pixels = beat_align_2d(joints[..., :2] * 640.0 + 320.0, MUSIC_BEATS, FPS, variant)
    assert in_pixels.score == pytest.approx(expected, abs=1e-12)


def test_music_beats_used_are_those_on_the_speed_curve() -> None:
    result = beat_align_2d(_keypoints(minimum_at=8), np.array([-3, 8, 24, T - 1, T + 5]), FPS)
    assert result.music_beats.tolist() == [8, 24]  # bailando: frames [0, T - 1)
    fact = beat_align_2d(_keypoints(minimum_at=8), np.array([-3, 8, T - 1, T + 5]), FPS, "fact")
    assert fact.music_beats.tolist() == [8, T - 1]  # fact: frames [0, T)
    with pytest.raises(ValueError, match="no music beats"):
        beat_align_2d(_keypoints(minimum_at=8), np.array([], dtype=int), FPS)


def test_low_confidence_gaps_are_interpolated_not_carried_forward() -> None:
    clean = _keypoints(minimum_at=8)
    noisy = clean.copy()
    rng = np.random.default_rng(2)
    # DWPose's answer for a lost keypoint: garbage coordinates with a low score
    lost = rng.random((T, K)) < 0.15
    lost[40:52, 3] = True  # and one long gap
    noisy[lost, :2] = rng.uniform(0, 640, size=(int(lost.sum()), 2))
    noisy[lost, 2] = 0.05
    reference = beat_align_2d(clean, MUSIC_BEATS, FPS)
    repaired = beat_align_2d(noisy, MUSIC_BEATS, FPS)
    assert repaired.score == pytest.approx(reference.score, abs=0.05)
    # taken at face value, the garbage would wreck the score
    assert beat_align_2d(noisy, MUSIC_BEATS, FPS, min_score=0.0).score < reference.score - 0.2


def test_fill_low_confidence_interpolates_holds_ends_and_drops_never_seen_keypoints() -> None:
    positions = np.zeros((5, 3, 2))
    positions[:, 0, 0] = [0.0, 99.0, 99.0, 30.0, 99.0]  # frames 1, 2 and 4 unsure
    positions[:, 1, 1] = [7.0, 7.0, 8.0, 9.0, 9.0]
    confident = np.ones((5, 3), dtype=bool)
    confident[[1, 2, 4], 0] = False
    confident[:, 2] = False  # never seen
    filled = fill_low_confidence(positions, confident)
    assert filled.shape == (5, 2, 2)
    assert filled[:, 0, 0].tolist() == [0.0, 10.0, 20.0, 30.0, 30.0]
    assert filled[:, 1, 1].tolist() == [7.0, 7.0, 8.0, 9.0, 9.0]


def test_no_confident_keypoint_scores_zero() -> None:
    result = beat_align_2d(_keypoints(minimum_at=8, score=0.1), MUSIC_BEATS, FPS)
    assert result.score == 0.0
    assert result.motion_beats.size == 0


def test_bad_keypoints_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        beat_align_2d(np.zeros((T, K)), MUSIC_BEATS, FPS)
    with pytest.raises(ValueError, match="shape"):
        beat_align_2d(np.zeros((T, K, 4)), MUSIC_BEATS, FPS)
    with pytest.raises(ValueError, match="2 frames"):
        beat_align_2d(np.zeros((1, K, 3)), MUSIC_BEATS, FPS)
    with pytest.raises(ValueError, match="variant"):
        beat_align_2d(_keypoints(minimum_at=8), MUSIC_BEATS, FPS, "edge")  # type: ignore[arg-type]
