"""2D-BeatAlign: the Beat Align Score of 2D keypoints (DWPose's, or the dataset's).

The paper reports a "2D-BeatAlign" from DWPose joints and librosa beats; REFERENCE.md §4.5
and §6: the 2D variant applies the 3D score's function to 2D keypoints. So this module only
prepares the keypoints and calls :mod:`dancegen.tasks.motion_quality`
(:func:`~dancegen.tasks.motion_quality.kinematic_beat_frames`,
:func:`~dancegen.tasks.motion_quality.beat_align_from_beats`), with the same variants
(``"bailando"`` by default, ``"fact"``), constants and frame-rate conventions.

Coordinates are used in pixels, unnormalised. The score only depends on *where* the
(smoothed) mean keypoint speed has its local minima, and multiplying every coordinate by one
positive factor multiplies every speed by it (the Gaussian smoothing is linear), which moves
no minimum: dividing by the image height would change nothing. What would change the score is
scaling x and y differently (e.g. x / W and y / H on a non-square frame), which distorts
directions of motion, so we leave pixels as they are.

Low-confidence keypoints (score below ``min_score``; DWPose draws a keypoint only above 0.3)
are treated as missing and filled per keypoint by linear interpolation in time between the
confident frames, and by holding the nearest confident value before the first and after the
last. Interpolation rather than carrying the last value forward: a carried value stands still
and then jumps when the keypoint comes back, inventing a speed minimum (a kinematic beat)
during the gap and a spike after it; a linear fill moves at a constant speed through the gap.
A keypoint confident in no frame is left out of the mean speed; a clip without any confident
keypoint has no kinematic beat and scores 0, as a still clip does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dancegen.tasks.motion_quality import (
    BeatAlignVariant,
    beat_align_from_beats,
    kinematic_beat_frames,
    scored_music_beats,
)

#: DWPose's drawing threshold (annotator/dwpose/__init__.py, ``score > 0.3``).
DEFAULT_MIN_SCORE = 0.3


@dataclass(frozen=True)
class BeatAlign2d:
    """The 2D Beat Align Score of one clip, with the beats (frame indices) it compared."""

    score: float
    variant: str
    motion_beats: np.ndarray
    music_beats: np.ndarray


def _split_keypoints(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(T, K, 2) float64 positions and, for (T, K, 3) input, the (T, K) scores."""
    array = np.asarray(keypoints, dtype=np.float64)
    if array.ndim != 3 or array.shape[-1] not in (2, 3) or array.shape[1] == 0:
        raise ValueError(f"keypoints must be (T, K, 2) or (T, K, 3), got shape {array.shape}")
    if len(array) < 2:
        raise ValueError(f"need at least 2 frames of keypoints, got {len(array)}")
    scores = array[..., 2] if array.shape[-1] == 3 else None
    return array[..., :2], scores


def fill_low_confidence(
    positions: np.ndarray, confident: np.ndarray
) -> np.ndarray:
    """``positions`` (T, K, 2) with the non-``confident`` entries filled in time, per keypoint.

    Linear interpolation between confident frames, the nearest confident value held at the
    ends (``np.interp``); keypoints confident in no frame are dropped, so the result is
    (T, K', 2) with K' <= K.
    """
    frames = np.arange(len(positions))
    filled = []
    for keypoint in range(positions.shape[1]):
        known = confident[:, keypoint] & np.isfinite(positions[:, keypoint]).all(axis=-1)
        if not known.any():
            continue
        filled.append([
            np.interp(frames, frames[known], positions[known, keypoint, axis])
            for axis in range(positions.shape[-1])
        ])
    if not filled:
        return np.empty((len(positions), 0, positions.shape[-1]))
    return np.transpose(np.asarray(filled), (2, 0, 1))  # (K', 2, T) -> (T, K', 2)


def beat_align_2d(
    keypoints: np.ndarray,
    music_beats: np.ndarray,
    fps: int,
    variant: BeatAlignVariant = "bailando",
    min_score: float = DEFAULT_MIN_SCORE,
) -> BeatAlign2d:
    """Beat Align Score of 2D ``keypoints`` against ``music_beats`` (frame indices at ``fps``).

    ``keypoints`` is (T, K, 2) pixel positions, or (T, K, 3) with a confidence last (DWPose's
    score, or the dataset's visibility), in which case entries scoring below ``min_score`` are
    filled as the module describes. Any K and keypoint order: the envelope is the mean (or,
    for ``"fact"``, the sum) of the per-keypoint speeds. Raises ValueError when there is no
    music beat inside the clip (as the 3D score does).
    """
    positions, scores = _split_keypoints(keypoints)
    confident = np.ones(positions.shape[:2], dtype=bool) if scores is None else scores >= min_score
    points = fill_low_confidence(positions, confident)
    music = scored_music_beats(music_beats, len(points), variant)
    if points.shape[1] == 0:
        motion = np.empty(0, dtype=np.int64)
    else:
        motion = kinematic_beat_frames(points, fps, variant)
    score = beat_align_from_beats(motion, music, len(points), variant)
    return BeatAlign2d(score=score, variant=variant, motion_beats=motion, music_beats=music)
