"""AIST++ layout reader and segment planning, on the synthetic stand-in and damaged copies."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.fixtures import default_sequences
from dancegen.storage.aistpp import AistppInputs, music_id_of
from dancegen.tasks.plan import plan_segments_from, window_starts

IGNORED = "gJB_sBM_cAll_d07_mJB2_ch05"


def test_sequences_follow_splits_and_ignore_list(fixtures_dir: Path) -> None:
    inputs = AistppInputs(str(fixtures_dir))
    found = {s.name: s for s in inputs.sequences()}
    expected = {s.name: s for s in default_sequences() if s.name != IGNORED}
    assert set(found) == set(expected)
    for name, seq in found.items():
        assert seq.split == expected[name].split
        assert seq.music_file == f"music/{expected[name].music}.wav"
    assert inputs.synthetic


def test_motion_and_cameras_load(fixtures_dir: Path) -> None:
    inputs = AistppInputs(str(fixtures_dir))
    seq = inputs.sequences()[0]
    motion = inputs.load_motion(seq.motion_file)
    spec = next(s for s in default_sequences() if s.name == seq.name)
    assert motion.poses.shape == (round(spec.seconds * 60), 72) and motion.fps == 60.0
    assert motion.seconds == pytest.approx(spec.seconds)
    cams = inputs.cameras(seq.name)
    assert sorted(cams) == [f"c{i:02d}" for i in range(1, 10)]
    pelvis = np.array([0.0, 0.9 * motion.scaling, 0.0])
    assert cams["c09"].world_to_camera(pelvis)[2] > 0  # in front of the camera


def _motion(frames: int = 5, **changes: object) -> bytes:
    """A pickled motion with AIST++'s keys, changed or (value None) without some."""
    motion = {"smpl_poses": np.zeros((frames, 72)), "smpl_trans": np.zeros((frames, 3)),
              "smpl_scaling": np.array([95.0], np.float32), **changes}
    return pickle.dumps({k: v for k, v in motion.items() if v is not None})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not a pickle", "not a readable motion pickle"),
        (pickle.dumps([1, 2, 3]), "expected smpl_poses"),
        (_motion(smpl_poses=np.zeros((5, 71))), r"\(N, 72\)"),
        (_motion(smpl_trans=np.zeros((4, 3))), r"must be \(5, 3\)"),
        (_motion(smpl_poses=np.full((5, 72), np.nan), smpl_scaling=[1.0]), "NaN"),
        # without smpl_scaling every rendered frame would be empty: refused, not taken as 1.0
        (_motion(smpl_scaling=None), r"expected smpl_poses/smpl_trans/smpl_scaling; got "
                                     r"\['smpl_poses', 'smpl_trans'\]"),
        (_motion(smpl_scaling=np.array([0.0])), "smpl_scaling must be one positive number"),
        (_motion(smpl_poses=np.array([["a"] * 72] * 5)), "smpl_poses must hold numbers"),
        (_motion(fps=-30.0), "fps must be one positive number"),
    ],
    ids=["garbage", "not-a-dict", "pose-width", "trans-length", "nan", "no-scaling",
         "zero-scaling", "string-poses", "negative-fps"],
)
def test_malformed_motion_is_an_input_error(inputs_copy: Path, payload: bytes,
                                            message: str) -> None:
    (inputs_copy / "motions/bad.pkl").write_bytes(payload)
    with pytest.raises(InputError, match=message) as info:
        AistppInputs(str(inputs_copy)).load_motion("motions/bad.pkl")
    assert "motions/bad.pkl" in str(info.value)


def test_corrupt_or_missing_audio_is_an_input_error(inputs_copy: Path) -> None:
    (inputs_copy / "music/mBR0.wav").write_bytes(b"RIFF....garbage")
    inputs = AistppInputs(str(inputs_copy))
    with pytest.raises(InputError, match="unreadable audio"):
        inputs.load_audio("music/mBR0.wav")
    with pytest.raises(InputError, match="input file missing"):
        inputs.load_audio("music/nope.wav")
    with pytest.raises(InputError, match="not AIST"):
        music_id_of("dance01")


def test_window_starts() -> None:
    assert window_starts(12.5, 5.0, 5.0, None) == [0.0, 5.0]
    assert window_starts(15.0, 5.0, 5.0, None) == [0.0, 5.0, 10.0]
    assert window_starts(6.0, 5.0, 0.5, None) == [0.0, 0.5, 1.0]
    assert window_starts(4.9, 5.0, 5.0, None) == []
    assert window_starts(30.0, 5.0, 5.0, 2) == [0.0, 5.0]


def test_plan_covers_every_whole_window(fixtures_dir: Path, config: DancegenConfig) -> None:
    plan = plan_segments_from(str(fixtures_dir), config)
    assert not plan.failed
    expected = sum(int(s.seconds // 5) for s in default_sequences() if s.name != IGNORED)
    assert len(plan.segments) == expected
    assert len({s.id for s in plan.segments}) == expected
    assert {s.source for s in plan.segments} == {"synthetic"}
    digests = {s.music_file: s.music_sha256 for s in plan.segments}
    assert all(len(d) == 64 for d in digests.values())


def test_plan_reports_unreadable_sequences(inputs_copy: Path, config: DancegenConfig) -> None:
    (inputs_copy / "music/mPO2.wav").unlink()
    (inputs_copy / "motions/gHO_sBM_cAll_d04_mHO3_ch04.pkl").write_bytes(b"\x80garbage")
    plan = plan_segments_from(str(inputs_copy), config)
    assert set(plan.failed) == {"inputs/gPO_sBM_cAll_d03_mPO2_ch03",
                                "inputs/gHO_sBM_cAll_d04_mHO3_ch04"}
    assert "no music file music/mPO2" in plan.failed["inputs/gPO_sBM_cAll_d03_mPO2_ch03"]
    assert {s.sequence for s in plan.segments}.isdisjoint(
        {"gPO_sBM_cAll_d03_mPO2_ch03", "gHO_sBM_cAll_d04_mHO3_ch04"})
    manifest = json.loads((inputs_copy / "fixture.json").read_text())
    assert manifest["synthetic"] is True
