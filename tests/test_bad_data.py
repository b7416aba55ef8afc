"""Bad audio, silently wrong data and failure records that always work.

Each bad input fails alone with a one-line reason on record: wrongly scaled, non-finite, empty
or too-short audio fails its own sequence at planning (never a whole music shard, never
silently zero segments); a rendered segment whose frames show no body fails its shard; a
corrupt video's reason is ffmpeg's error, not its banner; a unit id of any length is recorded,
listed and cleared under a file name the file system accepts.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile
from flow_helpers import build, summary_of

from dancegen.config import DancegenConfig
from dancegen.errors import InputError
from dancegen.fixtures import write_fixtures
from dancegen.fixtures.layout import default_sequences
from dancegen.storage import DatasetStore
from dancegen.storage.aistpp import AistppInputs, InputRoots
from dancegen.storage.audio import LOSSY_PEAK, audio_seconds, decode_audio
from dancegen.storage.dataset import MAX_NAME_BYTES, MAX_REASON_CHARS, one_line
from dancegen.tasks.plan import plan_segments_from
from dancegen.tasks.render_stage import compute_render
from dancegen.tasks.video_frames import video_frames

RATE = 22050
GOOD = "gBR_sBM_cAll_d01_mBR0_ch01"        # 12.5 s: two segments
OFF_CAMERA = "gHO_sBM_cAll_d04_mHO3_ch04"  # 11 s: two segments, moved out of the camera
LOUD = "gBR_sBM_cAll_d01_mBR1_ch01"        # float WAV at amplitude 1e6
HEADER_ONLY = "gBR_sBM_cAll_d01_mBR2_ch01"  # a WAV header without samples
ONE_SAMPLE = "gBR_sBM_cAll_d01_mBR3_ch01"  # a WAV of one sample
NAN = "gBR_sBM_cAll_d01_mBR4_ch01"         # good music but for one NaN sample
LONG = "gBR_sBM_cAll_d01_mBR9_ch01_" + "x" * 221  # 248 characters (a unit id, not an input)


def wav_bytes(samples: np.ndarray, subtype: str = "FLOAT") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, RATE, format="WAV", subtype=subtype)
    return buffer.getvalue()


def tone(seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)


def move_out_of_camera(motion_file: Path, from_frame: int = 0) -> None:
    """Shift the dancer 1 km sideways from ``from_frame`` on (AIST++ units: m x scaling)."""
    motion = pickle.loads(motion_file.read_bytes())
    motion["smpl_trans"][from_frame:, 0] += 1000.0 * float(motion["smpl_scaling"][0])
    motion_file.write_bytes(pickle.dumps(motion))


def write_mp4(path: Path, seconds: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(str(path), (64, 64), fps=30, macro_block_size=1)
    writer.send(None)
    for _ in range(round(30 * seconds)):
        writer.send(np.full((64, 64, 3), 90, np.uint8).tobytes())
    writer.close()


# --- audio: checked when it is decoded, and planning decodes it ------------------------------

@pytest.mark.parametrize("amplitude", [1e6, 1.5])
def test_float_wav_beyond_full_scale_is_refused(amplitude: float) -> None:
    data = wav_bytes(tone(1.0, amplitude))
    for read in (decode_audio, audio_seconds):  # audio_seconds: what planning calls
        with pytest.raises(InputError, match=re.escape(f"loud.wav: audio peaks at "
                                                       f"{amplitude:.4g}, outside [-1, 1]")):
            read(data, "loud.wav")


def test_integer_and_lossy_audio_at_full_scale_is_accepted_in_range() -> None:
    # integer PCM is scaled by its own range: the most negative int16 is exactly -1
    pcm, _ = decode_audio(wav_bytes(np.array([-1.0, 1.0, 0.0] * 100, np.float32), "PCM_16"),
                          "pcm.wav")
    assert pcm.min() == -1.0 and 0.999 < pcm.max() < 1.0
    # a full-scale square wave through MP3 decodes past 1 (codec ringing): clipped, kept
    square = 0.999 * np.sign(np.sin(2 * np.pi * 200 * np.arange(RATE) / RATE))
    buffer = io.BytesIO()
    soundfile.write(buffer, square.astype(np.float32), RATE, format="MP3")
    ringing = soundfile.read(io.BytesIO(buffer.getvalue()), dtype="float32")[0]
    assert 1.0 < np.abs(ringing).max() < LOSSY_PEAK
    audio, rate = decode_audio(buffer.getvalue(), "square.mp3")
    assert rate == RATE and np.abs(audio).max() == 1.0
    assert audio_seconds(buffer.getvalue(), "square.mp3") == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    ("samples", "message"),
    [(np.zeros(0, np.float32), r"no audio samples \(the file holds a header only\)"),
     (np.where(np.arange(RATE) == 100, np.nan, tone(1.0)), "1 of 22050 audio samples are NaN"),
     (np.where(np.arange(RATE) < 3, np.inf, tone(1.0)), "3 of 22050 audio samples are NaN or inf")],
    ids=["header-only", "nan", "inf"],
)
def test_empty_or_non_finite_audio_is_refused(samples: np.ndarray, message: str) -> None:
    for read in (decode_audio, audio_seconds):
        with pytest.raises(InputError, match=rf"bad\.wav: {message}"):
            read(wav_bytes(samples.astype(np.float32)), "bad.wav")


def add_sequences(root: Path) -> None:
    """The bad-audio sequences, each with a copy of GOOD's motion."""
    motion = (root / f"motions/{GOOD}.pkl").read_bytes()
    good_music, _ = soundfile.read(root / "music/mBR0.wav", dtype="float32")
    music = {
        "mBR1": wav_bytes(tone(12.5, 1e6)),
        "mBR2": wav_bytes(np.zeros(0, np.float32), "PCM_16"),
        "mBR3": wav_bytes(np.zeros(1, np.float32), "PCM_16"),
        "mBR4": wav_bytes(np.where(np.arange(len(good_music)) == 1000, np.nan, good_music)),
    }
    for name in (LOUD, HEADER_ONLY, ONE_SAMPLE, NAN):
        (root / f"motions/{name}.pkl").write_bytes(motion)
    for music_id, data in music.items():
        (root / f"music/{music_id}.wav").write_bytes(data)
    with (root / "splits/crossmodal_train.txt").open("a") as split:
        split.write("".join(f"{name}\n" for name in (LOUD, HEADER_ONLY, ONE_SAMPLE, NAN)))


def test_planning_fails_each_bad_track_as_its_own_sequence(inputs_copy: Path,
                                                           config: DancegenConfig) -> None:
    add_sequences(inputs_copy)
    plan = plan_segments_from(str(inputs_copy), config)
    reasons = {unit.removeprefix("inputs/"): reason for unit, reason in plan.failed.items()}
    assert set(reasons) == {LOUD, HEADER_ONLY, ONE_SAMPLE, NAN}
    assert "mBR1.wav: audio peaks at 1e+06, outside [-1, 1]" in reasons[LOUD]
    assert "mBR2.wav: no audio samples" in reasons[HEADER_ONLY]
    assert re.search(r"mBR3\.wav: music lasts 0\.000 s, shorter than one 5-s segment",
                     reasons[ONE_SAMPLE])
    assert "mBR4.wav: 1 of" in reasons[NAN] and "NaN or inf" in reasons[NAN]
    planned = {s.sequence for s in plan.segments}
    assert planned.isdisjoint(reasons) and {GOOD, OFF_CAMERA} <= planned
    assert all("\n" not in reason for reason in reasons.values())


# --- failure records: one line, any unit id ---------------------------------------------------

def test_failure_reasons_are_stored_on_one_line(tmp_path: Path) -> None:
    dataset = DatasetStore(tmp_path / "store.zarr", "v1")
    dataset.record_failure("render/000003", "InputError: first line\n\n  second line\n", {})
    assert dataset.failures()["render/000003"]["reason"] == "InputError: first line | second line"
    long_reason = "start " + "\n".join(f"line {i}" for i in range(500)) + " the end"
    dataset.record_failure("render/000004", long_reason, {})
    stored = dataset.failures()["render/000004"]["reason"]
    assert "\n" not in stored and len(stored) <= MAX_REASON_CHARS
    assert stored.startswith("start line 0 | line 1") and stored.endswith("line 499 the end")
    assert one_line("short") == "short"


def test_long_unit_ids_are_shortened_in_file_names_only(tmp_path: Path) -> None:
    dataset = DatasetStore(tmp_path / "store.zarr", "v1")
    units = [f"inputs/{LONG}", f"inputs/{LONG[:-1]}y",  # differ only in the last character
             "synthesis/" + "é" * 200, "render/000001"]   # multi-byte: cut between characters
    for unit in units:
        dataset.record_failure(unit, f"bad {unit[-3:]}", {"kind": "input"})
    folder = tmp_path / "store.zarr/v1/_failures"
    names = sorted(os.listdir(folder))
    assert len(names) == 4 and all(len(name.encode()) <= MAX_NAME_BYTES for name in names)
    assert "render--000001.json" in names  # short ids keep the names existing stores have
    assert all(name.endswith(".json") for name in names)  # no temp file left behind
    failures = dataset.failures()
    assert set(failures) == set(units)  # the full ids, from the records' contents
    assert failures[units[1]]["reason"] == "bad xxy"
    for unit in units[:3]:
        dataset.clear_failure(unit)
    assert set(dataset.failures()) == {"render/000001"} and len(os.listdir(folder)) == 1


# --- silently wrong data: a corrupt video, frames without the body ----------------------------

def test_corrupt_video_reason_is_ffmpeg_error_on_one_line(inputs_copy: Path) -> None:
    video = inputs_copy / f"videos/{GOOD.replace('_cAll_', '_c09_')}.mp4"
    write_mp4(video)
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # cut-off download
    inputs = AistppInputs(str(inputs_copy))
    with pytest.raises(InputError) as info:
        video_frames(inputs, GOOD, "c09", 0.0, 10, 30, 32, 32)
    reason = str(info.value)
    assert "\n" not in reason and len(reason) < 400
    assert reason.startswith(f"{video}: cannot decode video (Could not load meta information; ")
    assert "moov atom not found" in reason and "Invalid data found" in reason
    assert "configuration:" not in reason and "ffmpeg version" not in reason  # no banner


def test_render_refuses_frames_without_the_body(inputs_copy: Path,
                                                config: DancegenConfig) -> None:
    move_out_of_camera(inputs_copy / f"motions/{GOOD}.pkl", from_frame=150)  # from 2.5 s
    segment = next(s for s in plan_segments_from(str(inputs_copy), config).segments
                   if s.sequence == GOOD and s.window == 0)
    with pytest.raises(InputError, match=rf"segment {re.escape(segment.id)}: 75 of 150 "
                                         r"rendered frames show no body \(first: frame 75\)"):
        compute_render([segment], InputRoots(AistppInputs(str(inputs_copy))), config)


# --- through the build flow ---------------------------------------------------------------------

@pytest.fixture
def bad_inputs(tmp_path: Path) -> Path:
    """GOOD and OFF_CAMERA of the stand-in (OFF_CAMERA's dancer out of the camera) and the
    bad-audio sequences: four good segments, 2 per shard."""
    sequences = [s for s in default_sequences() if s.name in (GOOD, OFF_CAMERA)]
    root = write_fixtures(tmp_path / "inputs", sequences)
    move_out_of_camera(root / f"motions/{OFF_CAMERA}.pkl")
    add_sequences(root)
    return root


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "ray_cluster")
def test_bad_inputs_fail_alone_and_the_rest_is_built(bad_inputs: Path, tmp_path: Path,
                                                     config: DancegenConfig) -> None:
    storage = config.storage.model_copy(update={"shard_segments": 2})
    cfg = config.model_copy(update={"stages": ["music", "render"], "storage": storage})
    out = tmp_path / "store.zarr"
    state = build(bad_inputs, out, cfg)
    assert state.is_failed()
    dataset = DatasetStore(out, "v1")
    segments = dataset.segments()
    assert {s.sequence for s in segments} == {GOOD, OFF_CAMERA} and len(segments) == 4
    failures = dataset.failures()
    reasons = {unit: doc["reason"] for unit, doc in failures.items()}
    bad_audio = {f"inputs/{name}" for name in (LOUD, HEADER_ONLY, ONE_SAMPLE, NAN)}
    assert set(reasons) == bad_audio | {"render/000001"}
    assert all("\n" not in reason for reason in reasons.values())
    assert reasons["render/000001"].startswith(f"InputError: segment {OFF_CAMERA}@0000: "
                                               "150 of 150 rendered frames show no body")
    # music: every shard complete (the bad tracks took no good segment with them), in range
    assert sorted(dataset.records("music")) == [0, 1]
    audio = dataset.read("music/audio", slice(0, 4))
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0 and audio.std() > 0.01
    assert sorted(dataset.records("render")) == [0]  # GOOD rendered; OFF_CAMERA's shard failed
    assert summary_of(state)["inputs_failed"] == 4 and summary_of(state)["shards_failed"] == 1
    names = os.listdir(out / "v1/_failures")
    assert len(names) == 5 and all(name.endswith(".json") for name in names)

    # the NaN track repaired: the re-run builds its sequence and clears its failure alone
    (bad_inputs / "music/mBR4.wav").write_bytes((bad_inputs / "music/mBR0.wav").read_bytes())
    music_only = cfg.model_copy(update={"stages": ["music"]})
    again = summary_of(build(bad_inputs, out, music_only))
    assert again["inputs_failed"] == 3 and again["shards_failed"] == 0
    assert set(dataset.failures()) == bad_audio - {f"inputs/{NAN}"} | {"render/000001"}
    assert {s.sequence for s in dataset.segments()} == {GOOD, OFF_CAMERA, NAN}
    assert sorted(dataset.records("music")) == [0, 1, 2]
