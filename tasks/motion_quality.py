"""Motion-quality metrics of dance motion: Beat Align Score, EDGE's PFC and a foot-skating ratio.

Conventions: ``joints`` is ``(T, 24, 3)`` SMPL joint positions in **metres, Y-up** (AIST++ world
coordinates divided by ``smpl_scaling``), sampled at ``fps`` frames per second. Music beats are
frame indices at that same rate (see :func:`music_beat_frames`).

Sources, each re-implemented here from its public reference code:

* **Beat Align Score**, two variants (REFERENCE.md §4.5 and §6):

  - ``"bailando"`` (default; what EDGE-era papers report): Bailando ``utils/beat_align_score.py``.
    Kinematic beats are the local minima of the Gaussian-smoothed (sigma 5 frames) mean joint
    speed; the score averages, over the **music** beats, ``exp(-d^2 / (2 * 9))`` where ``d`` is
    the distance in frames to the nearest kinematic beat.
  - ``"fact"``: FACT / google-research/mint ``tools/calculate_beat_scores.py``. Kinematic beats
    are the local minima (``order`` 10 at 60 fps) of the summed joint speed; the score averages,
    over the **motion** beats, ``exp(-d^2 / (2 * 3^2))`` to the nearest music beat, 0 without
    motion beats.

  Bailando and mint both ran at 60 fps. EDGE-based evaluations apply Bailando's constants (the
  smoothing sigma of 5 frames, sigma^2 = 9 frames^2) unchanged at 30 fps, and so do we; the
  same goes for FACT's sigma = 3 frames. Scores at different frame rates are therefore not
  comparable. mint's local-minimum window, however, is documented in its code as "10 for
  60FPS", so we scale it with the frame rate, ``order = round(10 * fps / 60)`` (5 at 30 fps:
  the same +-1/6 s neighbourhood).

* **PFC** (Physical Foot Contact): EDGE ``eval/eval_pfc.py``, per clip, without the final
  ``x 10000`` (multiply the mean over clips by :data:`pfc_report_scale` to get EDGE's number).

* **Foot-skating ratio**: Guided Motion Diffusion (Karunratanakul et al., ICCV 2023),
  ``korrawe/guided-motion-diffusion`` ``data_loaders/humanml/utils/metrics.py``
  ``calculate_skating_ratio``, adapted to four foot joints and an unfloored clip (see
  :func:`foot_skating_ratio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import librosa
import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter1d
from scipy.signal import argrelextrema

BeatAlignVariant = Literal["bailando", "fact"]
BEAT_ALIGN_VARIANTS: tuple[str, ...] = ("bailando", "fact")

#: EDGE prints the mean PFC over clips multiplied by this factor (``eval/eval_pfc.py``).
pfc_report_scale = 10000

HOP_LENGTH = 512  # audio hop of one motion frame, as in EDGE's / mint's feature extraction
BEAT_TIGHTNESS = 100.0

BAILANDO_SMOOTHING_SIGMA = 5.0  # frames; gaussian_filter(kinetic_vel, 5)
BAILANDO_SIGMA_SQ = 9.0  # frames^2; exp(-d^2 / 2 / 9)
FACT_SIGMA = 3.0  # frames; alignment_score(..., sigma=3)
FACT_ORDER_60FPS = 10  # argrelextrema(..., order=10)  # 10 for 60FPS

LEFT_FOOT = (7, 10)  # SMPL left ankle, left foot
RIGHT_FOOT = (8, 11)  # SMPL right ankle, right foot
ANKLES = (7, 8)
FEET = (10, 11)

_NUM_JOINTS = 24


def _check_joints(joints: np.ndarray, min_frames: int) -> np.ndarray:
    """``joints`` as a float64 ``(T, 24, 3)`` array with at least ``min_frames`` frames."""
    array = np.asarray(joints, dtype=np.float64)
    if array.ndim != 3 or array.shape[1:] != (_NUM_JOINTS, 3):
        raise ValueError(f"joints must have shape (T, {_NUM_JOINTS}, 3), got {array.shape}")
    return _check_points(array, min_frames)


def _check_points(points: np.ndarray, min_frames: int) -> np.ndarray:
    """``points`` as a finite float64 ``(T, J, D)`` array with at least ``min_frames`` frames."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 3 or 0 in array.shape[1:]:
        raise ValueError(f"points must have shape (T, J, D) with J, D >= 1, got {array.shape}")
    if len(array) < min_frames:
        raise ValueError(f"need at least {min_frames} frames of motion, got {len(array)}")
    if not np.isfinite(array).all():
        raise ValueError("joints contain NaN or infinite values")
    return array


def _check_variant(variant: str) -> None:
    if variant not in BEAT_ALIGN_VARIANTS:
        raise ValueError(
            f"unknown beat-align variant {variant!r}; use one of {BEAT_ALIGN_VARIANTS}"
        )


def fact_minimum_order(fps: int) -> int:
    """FACT's local-minimum window scaled from mint's 60 fps: ``max(1, round(10 * fps / 60))``."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return max(1, round(FACT_ORDER_60FPS * fps / 60))


def music_beat_frames(
    audio: np.ndarray, sample_rate: int, fps: int, start_bpm: float | None = None
) -> np.ndarray:
    """Frame indices (at the motion rate ``fps``) of the beats of mono ``audio``.

    As EDGE's ``baseline_features.py`` and mint's ``tools/preprocessing.py`` compute the beat
    column: the audio is resampled to ``fps * 512`` Hz (15360 Hz at 30 fps) so that one hop of
    512 samples is one motion frame, then ``librosa.onset.onset_strength`` with hop 512 and
    ``librosa.beat.beat_track(tightness=100, start_bpm=start_bpm)``. Without ``start_bpm``
    the tracker starts from librosa's global tempo estimate (EDGE's fallback for music whose
    name gives no tempo; :func:`dancegen.tasks.music_features.edge_start_bpm` gives EDGE's
    tempo of an AIST++ track).

    Returns a sorted ``int64`` array, possibly empty (silence).
    """
    signal = np.asarray(audio, dtype=np.float32)
    if signal.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {signal.shape}")
    if sample_rate <= 0 or fps <= 0:
        raise ValueError(f"sample_rate and fps must be positive, got {sample_rate}, {fps}")
    rate = fps * HOP_LENGTH
    if sample_rate != rate:
        signal = librosa.resample(signal, orig_sr=sample_rate, target_sr=rate).astype(np.float32)
    envelope = librosa.onset.onset_strength(y=signal, sr=rate, hop_length=HOP_LENGTH)
    if start_bpm is None:
        start_bpm = float(
            np.atleast_1d(
                librosa.feature.tempo(onset_envelope=envelope, sr=rate, hop_length=HOP_LENGTH)
            )[0]
        )
    _, beats = librosa.beat.beat_track(
        onset_envelope=envelope,
        sr=rate,
        hop_length=HOP_LENGTH,
        start_bpm=start_bpm,
        tightness=BEAT_TIGHTNESS,
    )
    return np.sort(np.asarray(beats, dtype=np.int64))


def motion_beat_frames(
    joints: np.ndarray, fps: int, variant: BeatAlignVariant = "bailando"
) -> np.ndarray:
    """Kinematic beats of SMPL ``joints`` ``(T, 24, 3)``: :func:`kinematic_beat_frames`."""
    _check_variant(variant)
    return kinematic_beat_frames(_check_joints(joints, min_frames=2), fps, variant)


def kinematic_beat_frames(
    points: np.ndarray, fps: int, variant: BeatAlignVariant = "bailando"
) -> np.ndarray:
    """Kinematic beats: frame indices of the local minima of the joint-speed envelope.

    ``points`` is ``(T, J, D)``: any ``J`` points in ``D`` dimensions (the SMPL joints, or 2D
    keypoints for the 2D score), speeds being Euclidean norms over ``D``.

    ``"bailando"``: speed ``v[i] = mean_j |x[i+1, j] - x[i, j]|`` (``T - 1`` values),
    ``gaussian_filter(v, 5)``, strict local minima ``argrelextrema(v, np.less)``. Index ``i``
    is the step from frame ``i`` to ``i + 1``; like Bailando, we compare it with music frame
    ``i`` unchanged.

    ``"fact"``: envelope ``e[0] = 0``, ``e[i] = sum_j |x[i, j] - x[i-1, j]|`` (``T`` values),
    strict minima over ``+-order`` frames, ``argrelextrema(e, np.less, order=order)`` with
    ``order = round(10 * fps / 60)`` (mint's 10 at 60 fps; 5 at 30 fps).

    In both, the first and last values are never minima (``argrelextrema``'s ``clip`` mode), and
    a perfectly still stretch (equal speeds) gives no minimum. ``fps`` is only used for the
    FACT window.
    """
    _check_variant(variant)
    array = _check_points(points, min_frames=2)
    step = np.linalg.norm(np.diff(array, axis=0), axis=-1)  # (T-1, J)
    if variant == "bailando":
        speed = gaussian_filter(step.mean(axis=1), BAILANDO_SMOOTHING_SIGMA)
        minima = argrelextrema(speed, np.less)[0]
    else:
        envelope = np.concatenate([[0.0], step.sum(axis=1)])
        minima = argrelextrema(envelope, np.less, order=fact_minimum_order(fps))[0]
    return minima.astype(np.int64)


def scored_music_beats(
    music_beats: np.ndarray, frames: int, variant: BeatAlignVariant = "bailando"
) -> np.ndarray:
    """The music beats (int64 frame indices) a clip of ``frames`` frames is scored against.

    ``"bailando"``: those on the speed curve, ``[0, frames - 1)``; ``"fact"``: those inside the
    clip, ``[0, frames)``. Raises ValueError when ``music_beats`` is empty or none falls inside.
    """
    _check_variant(variant)
    beats = np.asarray(music_beats)
    if beats.ndim != 1:
        raise ValueError(f"music_beats must be a 1-D array of frame indices, got {beats.shape}")
    if beats.size == 0:
        raise ValueError("no music beats: the Beat Align Score needs at least one music beat")
    length = frames - 1 if variant == "bailando" else frames
    beats = beats[(beats >= 0) & (beats < length)]
    if beats.size == 0:
        raise ValueError(f"no music beat falls inside the motion's {length} frames")
    return beats.astype(np.int64)


def beat_align_from_beats(
    motion_beats: np.ndarray,
    music_beats: np.ndarray,
    frames: int,
    variant: BeatAlignVariant = "bailando",
) -> float:
    """The Beat Align Score of a ``frames``-frame clip from its kinematic and music beats.

    The formulas of :func:`beat_align_score`; ``music_beats`` are first restricted by
    :func:`scored_music_beats` (and the same ValueErrors raised).
    """
    music = scored_music_beats(music_beats, frames, variant).astype(np.float64)
    motion = np.asarray(motion_beats, dtype=np.float64)
    if motion.size == 0:
        return 0.0
    if variant == "bailando":
        dist = np.abs(music[:, None] - motion[None, :]).min(axis=1)
        return float(np.mean(np.exp(-(dist**2) / 2.0 / BAILANDO_SIGMA_SQ)))
    dist = np.abs(motion[:, None] - music[None, :]).min(axis=1)
    return float(np.mean(np.exp(-(dist**2) / 2.0 / FACT_SIGMA**2)))


def beat_align_score(
    joints: np.ndarray,
    music_beats: np.ndarray,
    fps: int,
    variant: BeatAlignVariant = "bailando",
) -> float:
    """Beat Align Score of one clip against its music beats (frame indices at ``fps``).

    ``"bailando"`` (default): ``(1/|B_music|) sum_{b in B_music} exp(-min_m (m - b)^2 / 18)``
    over the kinematic beats ``m`` of :func:`motion_beat_frames`; music beats past the speed
    curve (frame ``>= T - 1``) are dropped, as Bailando truncates the beat column to its
    length. A clip without kinematic beats scores 0 (every music beat infinitely far; Bailando's
    own code would fail on it).

    ``"fact"``: ``(1/|B_motion|) sum_{m in B_motion} exp(-min_b (b - m)^2 / (2 * 3^2))`` with
    music beats inside the clip's ``T`` frames; 0 when there are no kinematic beats (mint).

    Raises ValueError when ``music_beats`` is empty or has no beat inside the clip.
    """
    _check_variant(variant)
    array = _check_joints(joints, min_frames=2)
    motion = kinematic_beat_frames(array, fps, variant)
    return beat_align_from_beats(motion, music_beats, len(array), variant)


def _to_edge_z_up(joints: np.ndarray) -> np.ndarray:
    """Our Y-up joints in EDGE's Z-up frame: 90 degrees about X, ``(x, y, z) -> (x, -z, y)``."""
    return np.stack([joints[..., 0], -joints[..., 2], joints[..., 1]], axis=-1)


def pfc(joints: np.ndarray, fps: int = 30) -> float:
    """EDGE's Physical Foot Contact score of one clip (lower is better), WITHOUT the x 10000.

    As EDGE's ``eval/eval_pfc.py``, in its Z-up frame: root acceleration
    ``a[t] = (v[t+1] - v[t]) / dt`` from root velocity ``v[t] = (p[t+1] - p[t]) / dt``, its
    vertical component clamped to ``>= 0`` (falling is free), its norm divided by the clip's
    maximum; per foot the smaller horizontal displacement of its two joints,
    ``|f[t+2] - f[t+1]|`` (left ``(7, 10)``, right ``(8, 11)``, metres per frame, not divided
    by dt); the score is ``mean_t(a[t] * left[t] * right[t])`` over the ``T - 2`` frames.

    EDGE reports ``mean over clips x 10000`` (:data:`pfc_report_scale`; it samples at most
    1000 clips). ``dt = 1 / fps`` cancels in the max-normalisation, so the value depends on
    the frame rate only through the per-frame foot displacements: compare at 30 fps, EDGE's
    rate. A clip whose root never accelerates (the max is 0, where EDGE's code would divide
    0 by 0) scores 0.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    joint3d = _to_edge_z_up(_check_joints(joints, min_frames=3))
    up_dir = 2
    flat_dirs = [0, 1]
    dt = 1.0 / fps
    root_v = (joint3d[1:, 0, :] - joint3d[:-1, 0, :]) / dt  # (T-1, 3)
    root_a = (root_v[1:] - root_v[:-1]) / dt  # (T-2, 3)
    root_a[:, up_dir] = np.maximum(root_a[:, up_dir], 0.0)
    root_a_norm = np.linalg.norm(root_a, axis=-1)  # (T-2,)
    scaling = root_a_norm.max()
    if scaling <= 0.0:
        return 0.0
    root_a_norm /= scaling
    feet = joint3d[:, [*LEFT_FOOT, *RIGHT_FOOT]]  # (T, 4, 3)
    foot_v = np.linalg.norm(feet[2:, :, flat_dirs] - feet[1:-1, :, flat_dirs], axis=-1)  # (T-2, 4)
    left = np.minimum(foot_v[:, 0], foot_v[:, 1])
    right = np.minimum(foot_v[:, 2], foot_v[:, 3])
    return float(np.mean(left * right * root_a_norm))


def foot_skating_ratio(
    joints: np.ndarray,
    fps: int,
    height_threshold_m: float = 0.05,
    speed_threshold_m_s: float = 0.5,
    *,
    average_window: int = 5,
    floor_height_m: float | None = None,
) -> float:
    """Fraction of frame steps in which some foot joint skates (lower is better).

    Definition of Guided Motion Diffusion (Karunratanakul et al., ICCV 2023; also used by
    OmniControl), code ``korrawe/guided-motion-diffusion``
    ``data_loaders/humanml/utils/metrics.py`` ``calculate_skating_ratio``: "the proportion of
    frames in which either foot skids more than a certain distance (2.5 cm) while maintaining
    contact with the ground (foot height < 5 cm)". For each step ``t -> t+1`` and foot joint:

    * contact: the joint's height is below ``height_threshold_m`` in both frames ``t`` and
      ``t+1`` (GMD: 5 cm);
    * skid: its horizontal (X-Z) speed ``|f[t+1] - f[t]| * fps`` exceeds ``speed_threshold_m_s``
      and so does that speed averaged over ``average_window`` steps (``uniform_filter1d``,
      zero-padded at the ends, as GMD). GMD: 0.5 m/s (2.5 cm per frame at HumanML3D's 20 fps),
      5 steps.

    A step skates when any foot joint is in contact and skids; the ratio is over the ``T - 1``
    steps. Adaptations: GMD checks the two foot joints (10, 11) of floor-aligned HumanML3D
    motion; we check the ankles (7, 8) too, and since AIST++ motion is not floored, heights
    are measured from the clip's lowest height **of that joint type** (lowest ankle for the
    ankles, lowest foot joint for the feet: an SMPL ankle rests several cm above the foot
    joint), or from ``floor_height_m`` (Y of the ground) when given.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if average_window < 1:
        raise ValueError(f"average_window must be >= 1, got {average_window}")
    array = _check_joints(joints, min_frames=2)
    skating = np.zeros(len(array) - 1, dtype=bool)
    for group in (ANKLES, FEET):
        pos = array[:, list(group)]  # (T, 2, 3)
        floor = pos[..., 1].min() if floor_height_m is None else floor_height_m
        height = pos[..., 1] - floor  # (T, 2)
        speed = np.linalg.norm(np.diff(pos[..., [0, 2]], axis=0), axis=-1) * fps  # (T-1, 2)
        speed_avg = uniform_filter1d(speed, size=average_window, axis=0, mode="constant")
        low = height < height_threshold_m
        contact = low[:-1] & low[1:]
        skid = (speed > speed_threshold_m_s) & (speed_avg > speed_threshold_m_s)
        skating |= (contact & skid).any(axis=1)
    return float(skating.mean())


@dataclass(frozen=True)
class MotionQuality:
    """Means over a set of clips: Beat Align Score, PFC (already x 10000), foot-skating ratio."""

    clips: int
    beat_align: float
    beat_align_variant: str
    pfc: float
    foot_skating: float


def evaluate_motions(
    clips: list[tuple[np.ndarray, np.ndarray]],
    fps: int,
    variant: BeatAlignVariant = "bailando",
) -> MotionQuality:
    """Score a set of clips, each ``(joints (T, 24, 3), music beat frames)``.

    Every metric is computed per clip and averaged over clips (as EDGE, Bailando and mint
    average); PFC is reported as EDGE prints it, ``mean x 10000``.
    """
    _check_variant(variant)
    if not clips:
        raise ValueError("no clips to evaluate")
    beat_align, physical, skating = [], [], []
    for index, (joints, music_beats) in enumerate(clips):
        try:
            beat_align.append(beat_align_score(joints, music_beats, fps, variant))
            physical.append(pfc(joints, fps))
            skating.append(foot_skating_ratio(joints, fps))
        except ValueError as error:
            raise ValueError(f"clip {index}: {error}") from error
    return MotionQuality(
        clips=len(clips),
        beat_align=float(np.mean(beat_align)),
        beat_align_variant=variant,
        pfc=float(np.mean(physical)) * pfc_report_scale,
        foot_skating=float(np.mean(skating)),
    )


def format_quality_table(rows: dict[str, MotionQuality]) -> str:
    """A Markdown table, one row per named set (e.g. "generated (EDGE)")."""
    if not rows:
        raise ValueError("no rows to format")
    variants = sorted({quality.beat_align_variant for quality in rows.values()})
    if len(variants) > 1:
        raise ValueError(f"rows mix beat-align variants {variants}; score them with one variant")
    lines = [
        f"| set | clips | BeatAlign ({variants[0]}) ↑ | PFC \u00d71e4 ↓ | foot skating ↓ |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, quality in rows.items():
        lines.append(
            f"| {name} | {quality.clips} | {quality.beat_align:.4f} | {quality.pfc:.4f} "
            f"| {quality.foot_skating:.4f} |"
        )
    return "\n".join(lines) + "\n"
