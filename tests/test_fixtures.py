"""Tests for the synthetic AIST++ stand-in: tempo rule, music, choreography and layout."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy.spatial.transform import Rotation

from dancegen.fixtures import (
    NEW_MUSIC,
    FixtureSequence,
    beat_times,
    choreograph,
    default_sequences,
    synthesize_music,
    write_fixtures,
)
from dancegen.tasks.music_features import edge_start_bpm

SR = 22050
FPS = 60
AIST_MOTION_KEYS = {"smpl_poses", "smpl_trans", "smpl_scaling", "smpl_loss"}
CAMERA_KEYS = {"name", "size", "matrix", "rotation", "translation", "distortions"}


@pytest.mark.parametrize(
    ("music_id", "bpm"),
    [
        ("mBR0", 80.0),
        ("mPO2", 100.0),
        ("mLO5", 130.0),
        ("mJB9", 170.0),
        ("mHO0", 110.0),
        ("mHO3", 125.0),
        ("mXX1", None),
        ("BR0", None),
        ("mBRx", None),
        ("", None),
    ],
)
def test_edge_start_bpm_follows_edge_rule(music_id: str, bpm: float | None) -> None:
    assert edge_start_bpm(music_id) == bpm


def test_beat_times_start_at_zero_and_are_evenly_spaced() -> None:
    beats = beat_times(120.0, 3.0)
    np.testing.assert_allclose(beats, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])


def test_default_sequences_are_consistent_with_their_names() -> None:
    sequences = default_sequences()
    assert len(sequences) == 7
    assert len({s.music for s in sequences}) == 6
    assert {s.split for s in sequences} == {"train", "val", "test"}
    for seq in sequences:
        assert seq.name.split("_")[4] == seq.music
        assert seq.bpm == edge_start_bpm(seq.music)
        assert 11.0 <= seq.seconds <= 16.0
    # Different durations so the sequences yield different numbers of 5 s windows.
    assert len({int(s.seconds // 5) for s in sequences}) > 1


@pytest.mark.parametrize(
    ("music", "bpm", "split"),
    [("mPO2", 100.0, "train"), ("mBR0", 90.0, "train"), ("mBR0", 80.0, "dev")],
)
def test_fixture_sequence_rejects_inconsistent_fields(music: str, bpm: float, split: str) -> None:
    with pytest.raises(ValueError):
        FixtureSequence("gBR_sBM_cAll_d01_mBR0_ch01", music, bpm, split, 12.0)


# --- music ---------------------------------------------------------------------------------


def test_synthesize_music_shape_peak_and_determinism() -> None:
    audio = synthesize_music(100.0, 4.0, SR, seed=1)
    assert audio.dtype == np.float32
    assert audio.shape == (4 * SR,)
    assert np.isfinite(audio).all()
    assert np.max(np.abs(audio)) == pytest.approx(0.9, abs=1e-3)
    np.testing.assert_array_equal(audio, synthesize_music(100.0, 4.0, SR, seed=1))
    assert not np.array_equal(audio, synthesize_music(100.0, 4.0, SR, seed=2))


@pytest.mark.parametrize("bpm", [80.0, 130.0])
def test_beat_tracker_recovers_tempo(bpm: float) -> None:
    audio = synthesize_music(bpm, 12.0, SR)
    tempo, _ = librosa.beat.beat_track(y=audio, sr=SR, start_bpm=bpm)
    tempo = float(np.atleast_1d(tempo)[0])  # librosa may return a 1-element array
    assert abs(tempo - bpm) / bpm < 0.03


@pytest.mark.parametrize("bpm", [90.0, 125.0])
def test_onset_envelope_peaks_on_beats(bpm: float) -> None:
    seconds = 10.0
    audio = synthesize_music(bpm, seconds, SR)
    envelope = librosa.onset.onset_strength(y=audio, sr=SR)
    times = librosa.times_like(envelope, sr=SR)
    # Beat 0 is skipped: the onset envelope is unreliable in the padded first frames.
    for beat in beat_times(bpm, seconds)[1:]:
        near = np.abs(times - beat) <= 0.1  # narrower than the off-beat hi-hat distance
        peak_time = times[near][np.argmax(envelope[near])]
        assert abs(peak_time - beat) <= 0.05, f"onset peak {peak_time:.3f}s vs beat {beat:.3f}s"


# --- choreography --------------------------------------------------------------------------


def test_choreograph_matches_aist_format() -> None:
    motion = choreograph(100.0, 12.5, FPS, seed=0)
    n = round(12.5 * FPS)
    assert set(motion) == AIST_MOTION_KEYS
    assert motion["smpl_poses"].shape == (n, 72)
    assert motion["smpl_poses"].dtype == np.float32
    assert motion["smpl_trans"].shape == (n, 3)
    assert motion["smpl_trans"].dtype == np.float32
    assert motion["smpl_scaling"].shape == (1,)
    assert motion["smpl_scaling"].dtype == np.float32
    assert motion["smpl_scaling"][0] == pytest.approx(95.0)
    assert motion["smpl_loss"] == 0.0
    assert np.isfinite(motion["smpl_poses"]).all()
    assert np.isfinite(motion["smpl_trans"]).all()


def test_choreograph_is_deterministic_per_seed() -> None:
    first = choreograph(110.0, 6.0, FPS, seed=4)
    again = choreograph(110.0, 6.0, FPS, seed=4)
    other = choreograph(110.0, 6.0, FPS, seed=5)
    for key in ("smpl_poses", "smpl_trans"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["smpl_poses"], other["smpl_poses"])


@pytest.mark.parametrize(("bpm", "seconds", "seed"), [(80.0, 12.5, 0), (125.0, 11.0, 3)])
def test_pelvis_is_lowest_on_the_beats(bpm: float, seconds: float, seed: int) -> None:
    height = choreograph(bpm, seconds, FPS, seed)["smpl_trans"][:, 1].astype(np.float64)
    minima = np.flatnonzero((height[1:-1] <= height[:-2]) & (height[1:-1] <= height[2:])) + 1
    beat_frames = np.round(beat_times(bpm, seconds) * FPS).astype(int)
    beat_frames = beat_frames[(beat_frames > 0) & (beat_frames < len(height) - 1)]
    on_beat = [np.min(np.abs(minima - frame)) <= 2 for frame in beat_frames]
    assert np.mean(on_beat) >= 0.9
    # ... and only there: one dip per beat, not extra wobbles in between.
    assert len(minima) <= len(beat_frames) + 1
    # Pelvis about 0.9 m high (in scaled units) with a visible bounce.
    assert 0.75 * 95 < height.min() < height.max() <= 0.92 * 95
    assert height.max() - height.min() > 0.02 * 95


def test_choreography_is_smooth_and_arms_hang_down() -> None:
    motion = choreograph(130.0, 16.0, FPS, seed=2)
    poses = motion["smpl_poses"].reshape(-1, 24, 3).astype(np.float64)
    assert np.abs(np.diff(poses, axis=0)).max() < 0.2  # radians per frame
    assert np.abs(np.diff(motion["smpl_trans"], axis=0)).max() < 0.05 * 95  # 5 cm per frame
    # Root stays near upright: rotation angle of the pelvis well below 45 degrees.
    assert np.linalg.norm(poses[:, 0], axis=1).max() < np.pi / 4
    # Left arm (rest direction +X) and right arm (-X) point downward after the shoulder.
    left = Rotation.from_rotvec(poses[:, 16]).apply([1.0, 0.0, 0.0])
    right = Rotation.from_rotvec(poses[:, 17]).apply([-1.0, 0.0, 0.0])
    assert (left[:, 1] < -0.2).all()
    assert (right[:, 1] < -0.2).all()
    assert np.median(left[:, 1]) < -0.8


# --- on-disk layout --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("aist") / "out")


def _read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_has_every_file(fixture_dir: Path) -> None:
    sequences = default_sequences()
    expected = {
        "SYNTHETIC.md",
        "fixture.json",
        "ignore_list.txt",
        "cameras/mapping.txt",
        "cameras/setting1.json",
        "splits/crossmodal_train.txt",
        "splits/crossmodal_val.txt",
        "splits/crossmodal_test.txt",
    }
    expected |= {f"motions/{s.name}.pkl" for s in sequences}
    expected |= {f"music/{s.music}.wav" for s in sequences}
    expected.add("smpl/SMPL_NEUTRAL.pkl")  # the procedural stand-in body model
    expected |= {f"new_music/{name}" for name, _, _ in NEW_MUSIC}  # for EDGE pseudo-motions
    assert set(_snapshot(fixture_dir)) == expected


def test_motions_load_with_plain_pickle(fixture_dir: Path) -> None:
    for seq in default_sequences():
        with (fixture_dir / "motions" / f"{seq.name}.pkl").open("rb") as handle:
            motion = pickle.load(handle)
        assert set(motion) == AIST_MOTION_KEYS
        assert motion["smpl_poses"].shape == (round(seq.seconds * FPS), 72)
        assert motion["smpl_trans"].shape == (round(seq.seconds * FPS), 3)


def test_splits_ignore_list_and_mapping(fixture_dir: Path) -> None:
    sequences = default_sequences()
    for split in ("train", "val", "test"):
        listed = _read_lines(fixture_dir / "splits" / f"crossmodal_{split}.txt")
        assert listed == [s.name for s in sequences if s.split == split]
    assert _read_lines(fixture_dir / "ignore_list.txt") == ["gJB_sBM_cAll_d07_mJB2_ch05"]
    mapping = dict(line.split() for line in _read_lines(fixture_dir / "cameras" / "mapping.txt"))
    assert mapping == {s.name: "setting1" for s in sequences}


def test_cameras_see_the_dancer(fixture_dir: Path) -> None:
    cameras = json.loads((fixture_dir / "cameras" / "setting1.json").read_text())
    assert [c["name"] for c in cameras] == [f"c{i:02d}" for i in range(1, 10)]
    pelvis = np.array([0.0, 0.9 * 95, 0.0])
    for cam in cameras:
        assert set(cam) == CAMERA_KEYS
        assert cam["size"] == [1920, 1080]
        assert np.shape(cam["matrix"]) == (3, 3)
        assert len(cam["rotation"]) == len(cam["translation"]) == 3
        assert cam["distortions"] == [0.0] * 5
        rotation = Rotation.from_rotvec(cam["rotation"]).as_matrix()
        point = rotation @ pelvis + np.asarray(cam["translation"])
        assert point[2] > 0, f"{cam['name']}: dancer behind the camera"
        u, v, w = np.asarray(cam["matrix"]) @ point
        assert 0 <= u / w < 1920 and 0 <= v / w < 1080, f"{cam['name']}: pelvis off-image"
        # Y is up in the world and down in the image: the head is above the pelvis on screen.
        head = rotation @ np.array([0.0, 1.6 * 95, 0.0]) + np.asarray(cam["translation"])
        assert (np.asarray(cam["matrix"]) @ head)[1] / head[2] < v / w
    # c09 is straight in front of the dancer (who faces +Z): camera centre on the +Z axis.
    front = cameras[8]
    centre = -Rotation.from_rotvec(front["rotation"]).as_matrix().T @ front["translation"]
    assert abs(centre[0]) < 1e-3 and centre[2] > 4 * 95


def test_music_files_match_sequences(fixture_dir: Path) -> None:
    sequences = default_sequences()
    for music in {s.music for s in sequences}:
        audio, rate = sf.read(fixture_dir / "music" / f"{music}.wav")
        info = sf.info(fixture_dir / "music" / f"{music}.wav")
        longest = max(s.seconds for s in sequences if s.music == music)
        assert rate == SR
        assert info.subtype == "PCM_16"
        assert audio.ndim == 1
        assert len(audio) == round(longest * SR)


def test_manifest_and_readme_say_synthetic(fixture_dir: Path) -> None:
    manifest = json.loads((fixture_dir / "fixture.json").read_text())
    assert manifest["synthetic"] is True
    assert manifest["generator"] == "dancegen fixtures"
    assert manifest["sample_rate"] == SR
    assert [FixtureSequence(**s) for s in manifest["sequences"]] == default_sequences()
    assert "SYNTHETIC" in (fixture_dir / "SYNTHETIC.md").read_text()


def test_write_fixtures_is_idempotent(fixture_dir: Path, tmp_path: Path) -> None:
    before = _snapshot(fixture_dir)
    write_fixtures(fixture_dir)
    assert _snapshot(fixture_dir) == before
    assert _snapshot(write_fixtures(tmp_path / "fresh")) == before


def test_write_fixtures_seed_changes_content(tmp_path: Path) -> None:
    sequences = default_sequences()[:1]
    a = _snapshot(write_fixtures(tmp_path / "a", sequences, seed=0))
    b = _snapshot(write_fixtures(tmp_path / "b", sequences, seed=1))
    motion = f"motions/{sequences[0].name}.pkl"
    assert a[motion] != b[motion]
    assert a["splits/crossmodal_train.txt"] == b["splits/crossmodal_train.txt"]
