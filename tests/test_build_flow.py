"""The build flow on a real Prefect API server with real local Ray workers.

One scenario per test, each on its own store: a full build whose values match the inputs, an
idempotent re-run, a changed music file, a build straight to S3, a missing body model.
Damaged inputs, killed workers and the other faults are in test_faults.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
from flow_helpers import build, summary_of

from dancegen.config import DancegenConfig
from dancegen.models.motion_repr import encode_edge151
from dancegen.storage import DatasetStore
from dancegen.storage.aistpp import AistppInputs
from dancegen.storage.location import StoreLocation
from dancegen.storage.segments import shard_ranges

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "ray_cluster")]


def test_build_writes_what_the_inputs_say(fixtures_dir: Path, tmp_path: Path,
                                          config: DancegenConfig) -> None:
    state = build(fixtures_dir, tmp_path / "store.zarr", config)
    assert state.is_completed(), state.message
    summary = summary_of(state)
    dataset = DatasetStore(tmp_path / "store.zarr", "v1")
    segments = dataset.segments()
    shards = len(shard_ranges(len(segments), config.storage.shard_segments))
    assert summary["segments"] == len(segments) == 14
    assert summary["shards_written"] == len(config.stages) * shards and summary["failed"] == 0
    assert summary["bytes_written"] > 0

    inputs = AistppInputs(str(fixtures_dir))
    i = next(k for k, s in enumerate(segments) if s.window == 1)  # a window that starts at 5 s
    seg = segments[i]
    motion = inputs.load_motion(seg.motion_file)
    np.testing.assert_array_equal(dataset.read("motion/smpl_poses", i),
                                  motion.poses[300:600:2])  # 5 s at 60 fps, every 2nd frame
    np.testing.assert_array_equal(dataset.read("motion/smpl_trans", i), motion.trans[300:600:2])
    edge151 = encode_edge151(motion.poses[300:600:2], motion.trans[300:600:2], motion.scaling)
    np.testing.assert_allclose(dataset.read("motion/edge151", i), edge151.numpy(), atol=1e-6)

    audio, rate = soundfile.read(fixtures_dir / seg.music_file, dtype="float32")
    expected = librosa.resample(audio, orig_sr=rate, target_sr=22050)[5 * 22050:10 * 22050]
    np.testing.assert_allclose(dataset.read("music/audio", i), expected, atol=1e-5)
    features = dataset.read("music/baseline", slice(0, len(segments)))
    assert features.shape == (14, 150, 35) and np.isfinite(features).all()
    np.testing.assert_array_equal(dataset.read("music/beats", slice(0, 14)), features[..., 34])
    assert dataset.attrs["synthetic_inputs"] is True
    assert not dataset.failures()


def test_second_run_skips_and_changed_music_recomputes_only_its_shards(
    inputs_copy: Path, tmp_path: Path, config: DancegenConfig
) -> None:
    out = tmp_path / "store.zarr"
    assert build(inputs_copy, out, config).is_completed()
    dataset = DatasetStore(out, "v1")
    before = {stage: dataset.records(stage) for stage in config.stages}

    again = summary_of(build(inputs_copy, out, config))
    assert again["shards_written"] == 0
    assert again["shards_skipped"] == sum(len(r) for r in before.values())

    # louder mPO2: same length, new content -> its segments are tombstoned and appended anew
    # (no complete shard is ever rewritten under a snapshot), every other row stays
    path = inputs_copy / "music/mPO2.wav"
    audio, rate = soundfile.read(path, dtype="float32")
    soundfile.write(path, audio * 0.5, rate, subtype="PCM_16")
    old_rows = [row for row, s in dataset.table().live() if s.music_file == "music/mPO2.wav"]
    third = summary_of(build(inputs_copy, out, config))
    table = dataset.table()
    new_shards = {row // config.storage.shard_segments for row, s in table.live()
                  if s.music_file == "music/mPO2.wav"}
    assert third["tombstoned"] == len(old_rows) >= 1 and table.dead == set(old_rows)
    assert min(new_shards) == len(before["motion"])  # appended after every old shard
    assert third["shards_written"] == len(new_shards) * len(config.stages)
    after = {stage: dataset.records(stage) for stage in config.stages}
    for stage in config.stages:  # every old record untouched
        assert {k: after[stage][k] for k in before[stage]} == before[stage]
    assert third["snapshot_new"] and third["snapshot"] != again["snapshot"]


def test_build_from_and_to_s3(fixtures_dir: Path, s3_bucket: str,
                              config: DancegenConfig) -> None:
    inputs = f"{s3_bucket}/aistpp"
    StoreLocation.parse(inputs).fs.put(f"{fixtures_dir}/", inputs.removeprefix("s3://"),
                                       recursive=True)
    url = f"{s3_bucket}/datasets/dance.zarr"
    # no render: rendering into S3 is test_faults.py's outage test, and it costs ~15 s here
    config = config.model_copy(update={"stages": ["motion", "music", "edge_repr"]})
    state = build(inputs, url, config)
    assert state.is_completed(), state.message
    dataset = DatasetStore(url, "v1")
    assert len(dataset.records("music")) == len(dataset.shard_ranges())
    assert dataset.read("music/baseline", slice(0, 4)).shape == (4, 150, 35)
    assert dataset.segments()[0].music_sha256 == AistppInputs(str(fixtures_dir)).sha256(
        dataset.segments()[0].music_file)
    assert summary_of(build(inputs, url, config))["shards_written"] == 0


def test_missing_body_model_fails_rendering_alone(inputs_copy: Path, tmp_path: Path,
                                                  config: DancegenConfig) -> None:
    (inputs_copy / "smpl/SMPL_NEUTRAL.pkl").unlink()
    out = tmp_path / "store.zarr"
    state = build(inputs_copy, out, config.model_copy(update={"stages": ["motion", "render"]}))
    assert state.is_failed()
    dataset = DatasetStore(out, "v1")
    reason = dataset.failures()["inputs/render-shared"]["reason"]
    assert "SMPL_NEUTRAL.pkl" in reason
    assert len(dataset.records("motion")) == len(dataset.shard_ranges())
    assert not dataset.records("render")


def test_metrics_reach_the_ray_metrics_endpoint(fixtures_dir: Path, tmp_path: Path,
                                                config: DancegenConfig) -> None:
    """The counters the dashboard shows are exported by the node (Prometheus format)."""
    import time
    import urllib.request

    import ray

    only_motion = config.model_copy(update={"stages": ["motion"]})
    assert build(fixtures_dir, tmp_path / "store.zarr", only_motion).is_completed()
    port = ray.nodes()[0]["MetricsExportPort"]
    pattern = re.compile(r'^ray_dancegen_segments_produced_total\{.*stage="motion".*\} (\S+)$',
                         re.MULTILINE)
    deadline = time.monotonic() + 60  # Ray reports metrics every ~10 s
    counted = 0.0
    while time.monotonic() < deadline and counted < 14:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        counted = sum(float(v) for v in pattern.findall(text.decode()))
        time.sleep(2)
    assert counted >= 14  # this build's 14 segments, plus any earlier build in the session
