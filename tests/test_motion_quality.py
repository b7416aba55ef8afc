"""Motion-quality metrics on procedurally built motion whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.tasks.motion_quality import (
    MotionQuality,
    beat_align_score,
    evaluate_motions,
    fact_minimum_order,
    foot_skating_ratio,
    format_quality_table,
    motion_beat_frames,
    music_beat_frames,
    pfc,
    pfc_report_scale,
)

FPS = 30
T = 150
PERIOD = 16  # frames per beat (112.5 bpm at 30 fps), even so that half a period is whole
MUSIC_BEATS = np.arange(8, T, PERIOD)  # 8, 24, ..., 136
FEET = [7, 8, 10, 11]


def _rest_pose(seed: int = 0) -> np.ndarray:
    """A fixed (24, 3) pose: body joints 0.3-1.6 m up, ankles at 8 cm, foot joints at 2 cm."""
    rng = np.random.default_rng(seed)
    pose = rng.uniform(-0.3, 0.3, size=(24, 3))
    pose[:, 1] = rng.uniform(0.3, 1.6, size=24)
    pose[[7, 8], 1] = 0.08
    pose[[10, 11], 1] = 0.02
    return pose


def _pulsing(minimum_at: float, frames: int = T, period: int = PERIOD) -> np.ndarray:
    """The whole body drifts along X with a speed whose minima fall every ``period`` frames.

    Step ``i`` (frame i -> i+1) has length ``0.02 (1 - cos(2 pi (i - minimum_at) / period))``
    + 1 mm, so the slowest steps are ``minimum_at + k * period``.
    """
    steps = np.arange(frames - 1)
    step = 0.02 * (1.0 - np.cos(2.0 * np.pi * (steps - minimum_at) / period)) + 0.001
    x = np.concatenate([[0.0], np.cumsum(step)])
    joints = np.repeat(_rest_pose()[None], frames, axis=0)
    joints[:, :, 0] += x[:, None]
    return joints


def _static(frames: int = T) -> np.ndarray:
    return np.repeat(_rest_pose()[None], frames, axis=0)


# --- Beat Align Score -----------------------------------------------------------------------


def test_bailando_perfect_alignment_scores_one_and_half_a_beat_off_scores_low() -> None:
    aligned = _pulsing(minimum_at=8)
    off = _pulsing(minimum_at=8 + PERIOD // 2)
    assert np.array_equal(motion_beat_frames(aligned, FPS), MUSIC_BEATS)
    good = beat_align_score(aligned, MUSIC_BEATS, FPS)
    bad = beat_align_score(off, MUSIC_BEATS, FPS)
    assert good == pytest.approx(1.0, abs=1e-9)
    assert bad < 0.1 < good
    # one frame late: every music beat is 1 frame from a kinematic beat -> exp(-1/18)
    late = beat_align_score(_pulsing(minimum_at=9), MUSIC_BEATS, FPS)
    assert late == pytest.approx(np.exp(-1 / 18), abs=1e-9)
    assert beat_align_score(aligned, MUSIC_BEATS, FPS, variant="bailando") == good


def test_fact_variant_agrees_on_the_ordering() -> None:
    aligned = _pulsing(minimum_at=8)
    off = _pulsing(minimum_at=8 + PERIOD // 2)
    good = beat_align_score(aligned, MUSIC_BEATS, FPS, variant="fact")
    bad = beat_align_score(off, MUSIC_BEATS, FPS, variant="fact")
    assert good > 0.9 and bad < 0.1
    # mint's envelope e[i] = |x[i] - x[i-1]|, so its beats sit one frame after Bailando's
    assert np.array_equal(motion_beat_frames(aligned, FPS, "fact"), MUSIC_BEATS + 1)
    exact = _pulsing(minimum_at=7)
    assert beat_align_score(exact, MUSIC_BEATS, FPS, variant="fact") == pytest.approx(1.0)


def test_fact_local_minimum_window_scales_with_the_frame_rate() -> None:
    assert fact_minimum_order(60) == 10  # mint's value at 60 fps
    assert fact_minimum_order(30) == 5
    assert fact_minimum_order(1) == 1
    # two dips 3 frames apart: order 5 (30 fps) keeps only the deeper one; order 1 (6 fps) both
    step = np.full(T - 1, 2.0**-6)  # binary fractions: the speeds are exactly equal elsewhere
    step[40], step[43] = 2.0**-8, 2.0**-7
    joints = np.zeros((T, 24, 3))
    joints[:, :, 0] = np.concatenate([[0.0], np.cumsum(step)])[:, None]
    # FACT's envelope e[i] is the step i-1 -> i
    assert motion_beat_frames(joints, 30, "fact").tolist() == [41]
    assert motion_beat_frames(joints, 6, "fact").tolist() == [41, 44]


def test_no_motion_beats_scores_zero() -> None:
    still = _static()
    assert motion_beat_frames(still, FPS).size == 0
    assert motion_beat_frames(still, FPS, "fact").size == 0
    assert beat_align_score(still, MUSIC_BEATS, FPS, variant="fact") == 0.0
    assert beat_align_score(still, MUSIC_BEATS, FPS, variant="bailando") == 0.0
    # a steadily accelerating body has no speed minimum either
    accelerating = _static()
    accelerating[:, :, 2] += (0.001 * np.arange(T) ** 2)[:, None]
    assert beat_align_score(accelerating, MUSIC_BEATS, FPS, variant="fact") == 0.0


def test_beat_align_needs_music_beats() -> None:
    joints = _pulsing(minimum_at=8)
    for variant in ("bailando", "fact"):
        with pytest.raises(ValueError, match="no music beats"):
            beat_align_score(joints, np.array([], dtype=int), FPS, variant=variant)
        with pytest.raises(ValueError, match="inside the motion"):
            beat_align_score(joints, np.array([T + 10]), FPS, variant=variant)
    with pytest.raises(ValueError, match="variant"):
        beat_align_score(joints, MUSIC_BEATS, FPS, variant="edge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        beat_align_score(joints[:, :22], MUSIC_BEATS, FPS)


def _click_track(bpm: float, seconds: float, sample_rate: int) -> np.ndarray:
    """Short decaying 1 kHz clicks on every beat, starting at t = 0."""
    audio = np.zeros(int(seconds * sample_rate), dtype=np.float32)
    t = np.arange(int(0.03 * sample_rate)) / sample_rate
    click = np.sin(2 * np.pi * 1000.0 * t) * np.exp(-t / 0.005)
    for onset in np.arange(0.0, seconds, 60.0 / bpm):
        start = int(onset * sample_rate)
        audio[start : start + len(click)] += click[: len(audio) - start]
    return audio


@pytest.mark.parametrize("start_bpm", [None, 120.0])
def test_music_beats_of_a_120_bpm_click_track_every_15_frames(start_bpm: float | None) -> None:
    audio = _click_track(120.0, 8.0, 22050)
    beats = music_beat_frames(audio, 22050, FPS, start_bpm=start_bpm)
    truth = np.arange(0, 8 * FPS, 15)
    assert beats.dtype == np.int64 and np.all(np.diff(beats) > 0)
    assert len(beats) >= len(truth) - 2
    assert np.median(np.diff(beats)) == pytest.approx(15, abs=0.5)
    assert np.abs(beats[:, None] - truth[None, :]).min(axis=1).max() <= 2


# --- PFC ------------------------------------------------------------------------------------


def test_pfc_of_a_still_body_is_zero() -> None:
    assert pfc(_static(), FPS) == 0.0


def test_pfc_of_sliding_feet_under_an_accelerating_root_is_positive() -> None:
    joints = _static()
    t = np.arange(T) / FPS
    joints[:, :, 0] += (0.5 * t**2)[:, None]  # everything, feet included, accelerates along X
    score = pfc(joints, FPS)
    assert score > 0
    # ... but not when one foot stays planted
    planted = joints.copy()
    planted[:, [8, 11]] = _rest_pose()[[8, 11]]
    assert pfc(planted, FPS) == 0.0
    # a root that only accelerates downward (falling) is not penalised
    falling = _static()
    falling[:, 0, 1] -= (4.9 * t**2)
    falling[:, FEET, 0] += (0.1 * np.arange(T))[:, None]  # feet slide at a constant speed
    assert pfc(falling, FPS) == 0.0


def test_pfc_matches_a_hand_computed_example() -> None:
    joints = np.zeros((5, 24, 3))
    # root, Y-up: accelerations (per frame^2) (1,0,0), (0,2,0), (0,-4,0) -> vertical
    # clamped to >= 0 -> norms 1, 2, 0 -> max-normalised 0.5, 1, 0
    joints[:, 0] = [[0, 0, 0], [0, 0, 0], [1, 0, 0], [2, 2, 0], [3, 0, 0]]

    def walk(first: list[float], steps: list[list[float]]) -> np.ndarray:
        return np.cumsum(np.array([first, *steps], dtype=float), axis=0)

    # feet steps 0->1 (ignored by EDGE), 1->2, 2->3, 3->4
    joints[:, 7] = walk([0, 0, 0], [[5, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [0.3, 0, 0]])
    joints[:, 10] = walk([0, 0, 0], [[5, 0, 0], [0.2, 0, 0], [0.1, 0, 0], [0.3, 0, 0]])
    joints[:, 8] = walk([0, 0, 0], [[5, 0, 0], [0.18, 0, 0.24], [0, 0, 0.3], [0.3, 0, 0]])
    # vertical motion (Y) does not count as foot sliding
    joints[:, 11] = walk([0, 0, 0], [[5, 0, 0], [0, 1, 0.4], [0, 1, 0.2], [0, 1, 0.5]])
    # left min 0.1, 0.1, 0.3; right min 0.3, 0.2, 0.3
    expected = (0.5 * 0.1 * 0.3 + 1.0 * 0.1 * 0.2 + 0.0 * 0.3 * 0.3) / 3
    assert pfc(joints, 30) == pytest.approx(expected, rel=1e-12)
    # dt cancels in EDGE's max-normalisation
    assert pfc(joints, 60) == pytest.approx(expected, rel=1e-12)
    assert pfc_report_scale == 10000


# --- foot skating ---------------------------------------------------------------------------


def test_planted_feet_do_not_skate() -> None:
    joints = _static()
    joints[:, :, 1] += 0.01 * np.sin(np.arange(T) / 5.0)[:, None]  # small bounce, feet stay low
    assert foot_skating_ratio(joints, FPS) == 0.0


def test_feet_sliding_along_the_ground_skate() -> None:
    joints = _static()
    joints[:, :, 0] += (1.0 / FPS * np.arange(T))[:, None]  # whole body glides at 1 m/s
    assert foot_skating_ratio(joints, FPS) == pytest.approx(1.0)
    # slower than GMD's 0.5 m/s is not skating
    slow = _static()
    slow[:, :, 0] += (0.3 / FPS * np.arange(T))[:, None]
    assert foot_skating_ratio(slow, FPS) == 0.0
    # GMD's 5-step average is zero-padded: the first and last steps average 0.6 * 0.3 m/s
    assert foot_skating_ratio(slow, FPS, speed_threshold_m_s=0.2) == pytest.approx(
        (T - 3) / (T - 1)
    )
    # gliding for the second half only
    half = _static()
    half[T // 2 :, :, 0] += (1.0 / FPS * np.arange(T - T // 2))[:, None]
    assert foot_skating_ratio(half, FPS) == pytest.approx(0.5, abs=0.03)


def test_feet_moving_fast_in_the_air_do_not_skate() -> None:
    joints = _static()
    airborne = np.arange(T) >= 10  # stands for 10 frames, then jumps 30 cm and moves
    joints[airborne, :, 1] += 0.3
    joints[airborne, :, 0] += (2.0 / FPS * np.arange(airborne.sum()))[:, None]
    assert foot_skating_ratio(joints, FPS) == 0.0
    # a clip entirely in the air needs the floor height given
    flying = _static()
    flying[:, :, 1] += 0.3
    flying[:, :, 0] += (2.0 / FPS * np.arange(T))[:, None]
    assert foot_skating_ratio(flying, FPS, floor_height_m=0.0) == 0.0
    assert foot_skating_ratio(flying, FPS) == pytest.approx(1.0)  # its lowest foot is "ground"


def test_only_one_foot_joint_needs_to_skate() -> None:
    joints = _static()
    joints[:, 10, 2] += (1.0 / FPS * np.arange(T))  # the left foot joint drags, 1 m/s
    assert foot_skating_ratio(joints, FPS) == pytest.approx(1.0)


# --- evaluation and table -------------------------------------------------------------------


def test_evaluate_motions_averages_clips() -> None:
    aligned = _pulsing(minimum_at=8)
    off = _pulsing(minimum_at=8 + PERIOD // 2)
    gliding = _static()
    gliding[:, :, 0] += (0.5 * (np.arange(T) / FPS) ** 2)[:, None]
    clips = [(aligned, MUSIC_BEATS), (off, MUSIC_BEATS), (gliding, MUSIC_BEATS)]
    quality = evaluate_motions(clips, FPS)
    assert quality.clips == 3
    assert quality.beat_align_variant == "bailando"
    assert quality.beat_align == pytest.approx(
        np.mean([beat_align_score(j, b, FPS) for j, b in clips])
    )
    assert quality.pfc == pytest.approx(np.mean([pfc(j, FPS) for j, _ in clips]) * 10000)
    assert quality.pfc > 0
    assert quality.foot_skating == pytest.approx(
        np.mean([foot_skating_ratio(j, FPS) for j, _ in clips])
    )
    fact = evaluate_motions(clips, FPS, variant="fact")
    assert fact.beat_align_variant == "fact"
    assert fact.pfc == quality.pfc and fact.foot_skating == quality.foot_skating

    with pytest.raises(ValueError, match="clip 1"):
        evaluate_motions([(aligned, MUSIC_BEATS), (aligned, np.array([], dtype=int))], FPS)
    with pytest.raises(ValueError, match="no clips"):
        evaluate_motions([], FPS)


def test_format_quality_table() -> None:
    rows = {
        "generated (EDGE)": MotionQuality(20, 0.26151, "bailando", 1.53634, 0.12),
        "training motions (reference)": MotionQuality(980, 0.24, "bailando", 1.332, 0.05),
    }
    table = format_quality_table(rows)
    lines = table.strip().splitlines()
    assert len(lines) == 4
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["set", "clips", "BeatAlign (bailando) ↑", "PFC \u00d71e4 ↓", "foot skating ↓"]
    assert set(lines[1].replace("|", "")) <= {"-", ":"}
    first = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert first == ["generated (EDGE)", "20", "0.2615", "1.5363", "0.1200"]
    assert lines[3].startswith("| training motions (reference) | 980 |")
    mixed = {**rows, "fact": MotionQuality(1, 0.5, "fact", 0.0, 0.0)}
    with pytest.raises(ValueError, match="variants"):
        format_quality_table(mixed)
