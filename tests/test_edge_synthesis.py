"""Pseudo-motions: EDGE sampled on new music, written in AIST++ layout, built into the dataset."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile
from prefect_ray import RayTaskRunner

from dancegen.config import DancegenConfig, load_config
from dancegen.errors import InputError
from dancegen.flows.build_dataset import build_dataset
from dancegen.storage import DatasetStore
from dancegen.storage.aistpp import AistppInputs
from dancegen.storage.audio import decode_audio
from dancegen.storage.edge_checkpoint import EdgeRun
from dancegen.storage.pseudo_motions import PseudoMotionRoot, music_files
from dancegen.tasks.edge_synthesis import (
    TrackUnit,
    pseudo_music_id,
    synthesize_track_now,
    window_starts_covering,
)
from dancegen.tasks.edge_train import train_edge_now


@pytest.fixture(scope="module")
def trained_store(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a briefly trained tiny EDGE (enough to sample from; quality is not tested)."""
    store = tmp_path_factory.mktemp("edge") / "store.zarr"
    config = load_config("configs/local-cpu.yaml", [
        "edge.train.steps=4", "edge.train.window_stride_seconds=5", "edge.train.log_every=2"])
    train_edge_now(str(fixtures_dir), str(store), config, log=lambda _: 0)
    return store


def _config(*overrides: str) -> DancegenConfig:
    return load_config("configs/local-cpu.yaml",
                       ["edge.diffusion.sampling_steps=4", "dataset.max_segments_per_sequence=1",
                        *overrides])


def test_track_names_and_windows() -> None:
    music_id = pseudo_music_id("My Song_01.mp3", "ab12cd" + "0" * 58)
    assert music_id == "mXMySong01ab12cd"
    assert window_starts_covering(12.0, 5.0) == [0.0, 2.5, 5.0, 7.5]  # last one padded
    assert window_starts_covering(10.0, 5.0) == [0.0, 2.5, 5.0]
    assert window_starts_covering(3.0, 5.0) == [0.0]


def test_any_common_audio_format_decodes(tmp_path: Path) -> None:
    rate = 22050
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    soundfile.write(tmp_path / "tone.wav", tone, rate)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ffmpeg, "-v", "error", "-i", str(tmp_path / "tone.wav"), "-c:a", "aac",
                    str(tmp_path / "tone.m4a")], check=True)
    audio, got_rate = decode_audio((tmp_path / "tone.m4a").read_bytes(), "tone.m4a")
    assert got_rate == 44100 and abs(len(audio) / got_rate - 1.0) < 0.1  # AAC pads a little
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * got_rate / len(audio) - 440) < 5
    assert music_files(str(tmp_path)) == ["tone.m4a", "tone.wav"]
    with pytest.raises(InputError, match=r"junk\.mp3: unreadable audio"):
        decode_audio(b"\x00" * 100, "junk.mp3")


def test_one_track_becomes_an_aistpp_motion(fixtures_dir: Path, trained_store: Path,
                                            tmp_path: Path) -> None:
    config = _config()
    root = PseudoMotionRoot(tmp_path)
    pseudo = Path(root.url)
    unit = TrackUnit(str(fixtures_dir), str(fixtures_dir / "new_music"), "new_track_b.flac",
                     "f" * 64, str(pseudo),
                     EdgeRun(str(trained_store), "edge-tiny").checkpoint_url, None, 50.0, "key-1")
    stale = pseudo / "motions" / f"{unit.sequence}.pkl"  # what an older version wrote
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an older pseudo-motion")
    result = synthesize_track_now(unit, config)
    assert result.windows == 3 and result.frames == 300  # 10 s of music at 30 fps
    assert sorted(p.name for p in (pseudo / "motions").iterdir()) == [f"{unit.sequence}.npz"]
    with np.load(pseudo / "motions" / f"{unit.sequence}.npz", allow_pickle=False) as npz:
        assert {"smpl_poses", "smpl_trans", "smpl_scaling", "fps"} <= set(npz.files)
        assert str(npz["generator"]) == "EDGE"
    motion = AistppInputs(str(pseudo)).load_motion(f"motions/{unit.sequence}.npz")
    assert motion.poses.shape == (300, 72) and motion.fps == 30.0
    # the training set's body scale, which the checkpoint records, beats the fallback (50)
    assert motion.scaling == pytest.approx(95.0)
    assert np.isfinite(motion.poses).all() and np.isfinite(motion.trans).all()
    record = root.records()[unit.music_id]
    assert record["key"] == "key-1" and record["motion_file"] == f"motions/{unit.sequence}.npz"
    # the same seed and music give the same dance
    again = synthesize_track_now(unit, config)
    assert again.frames == 300
    np.testing.assert_array_equal(
        AistppInputs(str(pseudo)).load_motion(f"motions/{unit.sequence}.npz").poses, motion.poses)
    # a checkpoint that does not fit the configured features fails clearly (and is not retried)
    with pytest.raises(InputError, match=r"conditioned on 35-d music features, "
                                         r"edge\.features=jukebox gives 4800-d"):
        synthesize_track_now(unit, _config("edge.features=jukebox"))


def _build(inputs: Path, out: Path, config: DancegenConfig):
    flow = build_dataset.with_options(task_runner=RayTaskRunner())
    return flow(inputs=str(inputs), out=str(out), config=config, return_state=True)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "ray_cluster")
def test_build_adds_rendered_pseudo_motions_and_resumes(fixtures_dir: Path, trained_store: Path,
                                                        tmp_path: Path) -> None:
    music = tmp_path / "music"
    shutil.copytree(fixtures_dir / "new_music", music)
    checkpoint = EdgeRun(str(trained_store), "edge-tiny").checkpoint_url
    config = _config(f"edge.synthesis.music={music}", f"edge.synthesis.checkpoint={checkpoint}")
    out = tmp_path / "store.zarr"

    state = _build(fixtures_dir, out, config)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["tracks_synthesized"] == 2 and summary["tracks_failed"] == 0
    dataset = DatasetStore(out, "v1")
    segments = dataset.segments()
    edge_rows = [i for i, s in enumerate(segments) if s.source == "edge"]
    assert len(edge_rows) == 2 and all(segments[i].split == "train" for i in edge_rows)
    row = edge_rows[0]
    pseudo = AistppInputs(PseudoMotionRoot(out).url)
    motion = pseudo.load_motion(segments[row].motion_file)
    np.testing.assert_array_equal(dataset.read("motion/smpl_poses", row), motion.poses[:150])
    assert (dataset.read("maps/depth", row) > 0).any()  # rendered like AIST++ motion
    assert dataset.read("music/baseline", row).shape == (150, 35)

    again = _build(fixtures_dir, out, config).result()
    assert again["tracks_synthesized"] == 0 and again["tracks_skipped"] == 2
    assert again["shards_written"] == 0

    (music / "new_track_a.wav").unlink()  # a track leaves the music folder: its motion goes
    third = _build(fixtures_dir, out, config).result()
    assert third["tracks_skipped"] == 1
    remaining = [s for s in DatasetStore(out, "v1").segments() if s.source == "edge"]
    assert len(remaining) == 1 and "newtrackb" in remaining[0].sequence

    # a mistyped music folder fails synthesis alone and keeps the pseudo-motions made so far
    typo = _config(f"edge.synthesis.music={tmp_path}/musik",
                   f"edge.synthesis.checkpoint={checkpoint}")
    fourth = _build(fixtures_dir, out, typo)
    assert fourth.is_failed()
    failures = fourth.result(raise_on_failure=False)["failures"]
    assert "no audio files in" in failures["inputs/synthesis"]
    assert [s.id for s in DatasetStore(out, "v1").segments() if s.source == "edge"] == [
        s.id for s in remaining]

    # a corrupt track fails alone, is recorded with its reason, and goes when the file goes
    (music / "broken.mp3").write_bytes(b"ID3" + bytes(200))
    fifth = _build(fixtures_dir, out, config)
    assert fifth.is_failed()
    summary = fifth.result(raise_on_failure=False)
    assert summary["tracks_failed"] == 1 and summary["tracks_skipped"] == 1
    failed = [u for u in DatasetStore(out, "v1").failures() if u.startswith("synthesis/")]
    assert len(failed) == 1 and "unreadable audio" in summary["failures"][failed[0]]
    (music / "broken.mp3").unlink()
    assert _build(fixtures_dir, out, config).is_completed()
    assert not DatasetStore(out, "v1").failures()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server", "ray_cluster")
def test_missing_checkpoint_fails_synthesis_alone(fixtures_dir: Path, tmp_path: Path) -> None:
    config = _config("stages=[motion]", f"edge.synthesis.checkpoint={tmp_path}/none.pt")
    out = tmp_path / "store.zarr"
    state = _build(fixtures_dir, out, config)
    assert state.is_failed()
    assert "none.pt" in state.result(raise_on_failure=False)["failures"]["inputs/synthesis"]
    dataset = DatasetStore(out, "v1")
    assert "inputs/synthesis" in dataset.failures()
    assert len(dataset.records("motion")) == len(dataset.shard_ranges()) > 0  # the rest is built
