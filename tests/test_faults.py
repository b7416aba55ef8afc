"""Fault injection: each test breaks something real in the middle of a build and checks that
nothing finished is lost, nothing is written twice or half, and the reason is on record.

Faults: a Ray worker killed with SIGKILL inside a shard; the S3 server stopped mid-run; corrupt,
truncated and malformed inputs; a wrong SMPL file; the flow's process killed; two builds of one
store at once; a store damaged on disk and repaired. (A training stage killed mid-run is in
test_ldm_training.py and test_edge_training.py.) Each records its tally in fault_report.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import imageio_ffmpeg
import numpy as np
import psutil
import pytest
from fault_report import record
from flow_helpers import build, shards_with_sequence, summary_of
from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.config import DancegenConfig
from dancegen.fixtures import write_fixtures
from dancegen.fixtures.layout import default_sequences
from dancegen.storage import DatasetStore
from dancegen.storage.verify import verify_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "ray_cluster")]
REPO = Path(__file__).resolve().parents[1]
# a Ray worker's process title while it builds a shard: a stage actor, or a per-shard Ray task
TASK_TITLES = ("ray::StageWorker.build_shard", "ray::build-shard")


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sequences of the synthetic stand-in, four 5-s segments: enough for every fault,
    small enough that each test renders in seconds."""
    sequences = [s for s in default_sequences() if s.name in (
        "gBR_sBM_cAll_d01_mBR0_ch01", "gHO_sBM_cAll_d04_mHO3_ch04")]
    return write_fixtures(tmp_path_factory.mktemp("small-inputs"), sequences)


def staged(config: DancegenConfig, *stages: str, shard_segments: int | None = None,
           retries: int | None = None) -> DancegenConfig:
    """The test config with only ``stages`` (and optionally smaller shards, fewer retries)."""
    storage = config.storage.model_copy(update={"shard_segments": shard_segments or
                                                config.storage.shard_segments})
    ray = config.ray.model_copy(update={"retries": config.ray.retries if retries is None
                                        else retries})
    return config.model_copy(update={"stages": list(stages), "storage": storage, "ray": ray})


def busy_workers() -> list[psutil.Process]:
    """This session's Ray worker processes that are running a task right now."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.cmdline()[:1] and process.cmdline()[0].startswith(TASK_TITLES):
                found.append(process)
        except psutil.Error:
            continue
    return found


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def wait_for_idle_workers() -> None:
    """Tasks a failed flow left in flight finish (or fail) before the next run starts."""
    wait_until(lambda: not busy_workers(), 180, "the session's Ray workers to go idle")


class InBackground(threading.Thread):
    """Run ``action`` once ``ready()`` holds, polling in a thread while the flow runs."""

    def __init__(self, ready: Callable[[], bool], action: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.ready, self.action, self.result, self.done = ready, action, None, threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.ready():
                self.result = self.action()
                self.done.set()
                return
            time.sleep(0.05)


def record_times(dataset: DatasetStore, stages: list[str]) -> dict[tuple[str, int], float]:
    """(stage, shard) -> written_at of every complete shard."""
    return {(stage, shard): rec["written_at"] for stage in stages
            for shard, rec in dataset.records(stage).items()}


def assert_whole_and_once(dataset: DatasetStore, stages: list[str]) -> int:
    """Every shard of every stage complete exactly once, for its own rows, and verified."""
    shards = dataset.shard_ranges()
    ids = [s.id for s in dataset.segments()]
    for stage in stages:
        records = dataset.records(stage)
        assert sorted(records) == list(range(len(shards))), stage
        for shard, rows in enumerate(shards):
            assert records[shard]["segments"] == [ids[i] for i in rows]
    report = verify_dataset(dataset)
    assert report.ok, (report.incomplete, report.damaged)
    assert report.checked == len(stages) * len(shards)
    return report.checked


# --- 1. a Ray worker killed in the middle of a shard -------------------------------------

def test_worker_killed_mid_shard_is_retried(small_inputs: Path, tmp_path: Path,
                                            config: DancegenConfig) -> None:
    seen: dict[int, float] = {}

    def long_busy() -> bool:  # a worker 1.5 s into a render shard (2 segments: several s)
        now = time.monotonic()
        for worker in busy_workers():
            seen.setdefault(worker.pid, now)
            if now - seen[worker.pid] > 1.5:
                return True
        return False

    def kill() -> int:
        worker = next(w for w in busy_workers() if w.pid in seen)
        os.kill(worker.pid, signal.SIGKILL)
        return worker.pid

    out, cfg = tmp_path / "store.zarr", staged(config, "render", shard_segments=2)
    killer = InBackground(long_busy, kill)
    killer.start()
    state = build(small_inputs, out, cfg)
    killer.stop.set()
    assert killer.done.is_set(), "no worker ran a shard long enough to be killed"
    assert not psutil.pid_exists(killer.result) or \
        psutil.Process(killer.result).status() == psutil.STATUS_ZOMBIE
    assert state.is_completed(), state.message
    summary = summary_of(state)
    dataset = DatasetStore(out, "v1")
    checked = assert_whole_and_once(dataset, ["render"])
    assert summary["shards_written"] == checked and summary["failed"] == 0
    assert not dataset.failures()
    record("kill -9 of a Ray worker mid-shard", tried=checked, lost=0, recomputed=1,
           note="the killed shard ran again (a new actor replaced the dead one)")


# --- 2. the S3 server stopped mid-run, then back -----------------------------------------

def test_store_outage_fails_clearly_and_the_rerun_resumes(small_inputs: Path, s3_server,
                                                          s3_bucket: str,
                                                          config: DancegenConfig) -> None:
    stages = ["motion", "music", "render"]
    cfg = staged(config, *stages, shard_segments=1, retries=0)
    url = f"{s3_bucket}/outage.zarr"
    bucket = s3_bucket.removeprefix("s3://")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint)

    def some_shards_done() -> bool:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="outage.zarr/v1/_records/")
        return listed.get("KeyCount", 0) >= 2  # motion and music shards are quick

    outage = InBackground(some_shards_done, s3_server.stop)
    outage.start()
    try:
        state = build(small_inputs, url, cfg)
    finally:
        outage.stop.set()
        outage.join()
        if not outage.done.is_set():
            pytest.fail("the build finished before the outage could be injected")
    assert state.is_failed() or state.is_crashed()
    assert f"lost the store {url}" in state.message and "run the build again" in state.message

    wait_for_idle_workers()
    s3_server.start()
    dataset = DatasetStore(url, "v1")
    finished = record_times(dataset, stages)
    assert finished, "no shard had finished before the outage"
    again = build(small_inputs, url, cfg)
    assert again.is_completed(), again.message
    summary = summary_of(again)
    checked = assert_whole_and_once(dataset, stages)
    after = record_times(dataset, stages)
    assert {key: after[key] for key in finished} == finished  # none recomputed
    assert summary["shards_written"] == checked - len(finished)
    record("S3 server stopped mid-run, re-run once it is back", tried=checked, lost=0,
           recomputed=0, note=f"{len(finished)} shards finished before the outage were kept")


# --- 3. corrupt, truncated and malformed inputs --------------------------------------------

def write_video(path: Path, width: int, height: int, seconds: float = 1.0) -> None:
    path.parent.mkdir(exist_ok=True)
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=30,
                                         macro_block_size=1)
    writer.send(None)
    for _ in range(int(30 * seconds)):
        writer.send(np.full((height, width, 3), 90, np.uint8).tobytes())
    writer.close()


def rewrite_motion(path: Path, change: Callable[[dict], None]) -> None:
    data = pickle.loads(path.read_bytes())
    change(data)
    path.write_bytes(pickle.dumps(data))


def test_bad_inputs_are_quarantined_with_their_reasons(inputs_copy: Path, tmp_path: Path,
                                                       config: DancegenConfig) -> None:
    motions, music = inputs_copy / "motions", inputs_copy / "music"
    music.joinpath("mKR5.wav").write_bytes(b"RIFF\x00\x00garbage")        # corrupt audio
    wav = music / "mWA1.wav"                                            # truncated download
    wav.write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
    rewrite_motion(motions / "gBR_sBM_cAll_d02_mBR0_ch02.pkl",          # NaN motion
                   lambda d: d["smpl_poses"].__setitem__((5, 3), np.nan))
    rewrite_motion(motions / "gHO_sBM_cAll_d04_mHO3_ch04.pkl",          # wrong shape
                   lambda d: d.__setitem__("smpl_poses", d["smpl_poses"][:, :70]))
    videos = inputs_copy / "videos"                                     # the person's frames:
    write_video(videos / "gBR_sBM_c09_d01_mBR0_ch01.mp4", 64, 36)       # too small
    videos.joinpath("gPO_sBM_c09_d03_mPO2_ch03.mp4").write_bytes(       # not a video
        b"\x89PNG\r\n\x1a\n" + bytes(64))
    stages = ["motion", "music", "render"]
    cfg = staged(config, *stages, shard_segments=1)  # one segment per unit
    out = tmp_path / "store.zarr"

    state = build(inputs_copy, out, cfg)
    assert state.is_failed()
    dataset = DatasetStore(out, "v1")
    reasons = {unit: doc["reason"] for unit, doc in dataset.failures().items()}
    quarantined = {"inputs/gKR_sBM_cAll_d06_mKR5_ch02", "inputs/gWA_sBM_cAll_d05_mWA1_ch01",
                   "inputs/gBR_sBM_cAll_d02_mBR0_ch02", "inputs/gHO_sBM_cAll_d04_mHO3_ch04"}
    assert "unreadable audio" in reasons.pop("inputs/gKR_sBM_cAll_d06_mKR5_ch02")
    assert "truncated WAV" in reasons.pop("inputs/gWA_sBM_cAll_d05_mWA1_ch01")
    assert "NaN" in reasons.pop("inputs/gBR_sBM_cAll_d02_mBR0_ch02")
    assert "(N, 72)" in reasons.pop("inputs/gHO_sBM_cAll_d04_mHO3_ch04")
    small = shards_with_sequence(dataset, "gBR_sBM_cAll_d01_mBR0_ch01")
    broken = shards_with_sequence(dataset, "gPO_sBM_cAll_d03_mPO2_ch03")
    assert len(small) == 2 and len(broken) == 3  # the two sequences left, one segment each
    for shard in small:
        assert "video is 64x36, too small for 128x128" in reasons.pop(f"render/{shard:06d}")
    for shard in broken:
        assert "cannot decode video" in reasons.pop(f"render/{shard:06d}")
    assert not reasons
    shards = len(dataset.shard_ranges())
    assert not dataset.records("render")  # every render unit had a bad video ...
    assert len(dataset.records("motion")) == len(dataset.records("music")) == shards  # ... alone
    report = verify_dataset(dataset)
    assert not report.damaged and len(report.incomplete) == shards

    before = record_times(dataset, stages)
    again = summary_of(build(inputs_copy, out, cfg))  # bad inputs stay bad; nothing redone
    assert again["shards_written"] == 0 and again["shards_failed"] == shards
    assert record_times(dataset, stages) == before

    # the videos repaired (removed: the render stand-in frames take their place): the re-run
    # builds exactly the quarantined render shards and clears their failures
    for video in videos.iterdir():
        video.unlink()
    repaired = summary_of(build(inputs_copy, out, cfg))
    assert repaired["shards_written"] == shards and repaired["shards_failed"] == 0
    assert {k: v for k, v in record_times(dataset, stages).items() if k in before} == before
    assert set(dataset.failures()) == quarantined
    record("bad inputs: corrupt and truncated WAVs, NaN and (N, 70) motion, too-small and "
           "non-video person frames", tried=3 * shards + 6, lost=0, recomputed=0,
           note=f"quarantined with reasons: 4 sequences, {shards} render units; once the "
                "videos were repaired, exactly those units were built")


def test_wrong_smpl_file_quarantines_rendering_alone(inputs_copy: Path, tmp_path: Path,
                                                     config: DancegenConfig) -> None:
    model = inputs_copy / "smpl/SMPL_NEUTRAL.pkl"
    data = pickle.loads(model.read_bytes(), encoding="latin1")
    data["v_template"] = np.zeros((10475, 3))  # SMPL-X's vertex count: the wrong body model
    model.write_bytes(pickle.dumps(data))
    out = tmp_path / "store.zarr"
    state = build(inputs_copy, out, staged(config, "motion", "render"))
    assert state.is_failed()
    dataset = DatasetStore(out, "v1")
    shards = len(dataset.shard_ranges())
    failures = dataset.failures()
    assert set(failures) == {f"render/{shard:06d}" for shard in range(shards)}
    for failure in failures.values():  # each render unit says which file and what is wrong
        assert failure["reason"].startswith("InputError: ")
        assert "SMPL_NEUTRAL.pkl" in failure["reason"] and "'v_template' has shape (10475, 3)," \
            " expected (6890, 3)" in failure["reason"]
    assert len(dataset.records("motion")) == shards and not dataset.records("render")
    record("wrong SMPL file (SMPL-X vertex count)", tried=2 * shards, lost=0, recomputed=0,
           note=f"{shards} render shards quarantined with the reason; {shards} motion shards "
                "complete")


# --- 4. the flow's process killed mid-run ---------------------------------------------------

def test_killed_flow_process_resumes_without_recomputing(small_inputs: Path, tmp_path: Path,
                                                         config: DancegenConfig) -> None:
    stages = ["motion", "music", "render"]
    out = tmp_path / "store.zarr"
    records = out / "v1/_records"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)  # the CLI starts its own local Prefect server
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dancegen"), "dataset", "build",
         "--inputs", str(small_inputs), "--out", str(out),
         "--set", f"stages=[{', '.join(stages)}]", "--set", "storage.shard_segments=1",
         "--set", "edge.synthesis.music=null"],
        cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(list(records.glob("*/*.json"))) >= 3 or process.poll() is not None,
                   300, "three finished shards")
        assert process.poll() is None, "the build ended before it could be killed"
        family = psutil.Process(process.pid).children(recursive=True)
        os.kill(process.pid, signal.SIGKILL)  # the flow's process
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # its local Ray and Prefect server go with it
        for child in psutil.Process().children():
            if child.pid == process.pid:
                process.wait()
    for child in family:  # anything that left the process group
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    dataset = DatasetStore(out, "v1")
    finished = record_times(dataset, stages)
    assert (out / "_lease/build.json").exists()  # left behind by the killed process

    again = build(small_inputs, out, staged(config, *stages, shard_segments=1))
    assert again.is_completed(), again.message
    checked = assert_whole_and_once(dataset, stages)
    after = record_times(dataset, stages)
    assert {key: after[key] for key in finished} == finished
    assert summary_of(again)["shards_written"] == checked - len(finished)
    assert not (out / "_lease/build.json").exists()
    record("flow process killed mid-run", tried=checked, lost=0, recomputed=0,
           note=f"{len(finished)} shards finished before the kill were kept; the dead "
                "process's lease was taken over at once")


# --- 5. two builds of one store at once -----------------------------------------------------

def test_two_builds_at_once_do_the_work_once(small_inputs: Path, tmp_path: Path,
                                             config: DancegenConfig) -> None:
    stages = ["motion", "music"]
    out, cfg = tmp_path / "store.zarr", staged(config, *stages, shard_segments=1)
    states: dict[str, object] = {}
    runs = [threading.Thread(target=lambda name=name: states.__setitem__(
        name, build(small_inputs, out, cfg))) for name in ("first", "second")]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=600)
    assert all(state.is_completed() for state in states.values())
    summaries = [summary_of(state) for state in states.values()]
    dataset = DatasetStore(out, "v1")
    checked = assert_whole_and_once(dataset, stages)
    written = sorted(s["shards_written"] for s in summaries)
    assert written == [0, checked]  # one build did everything, the other waited and skipped
    assert sorted(s["shards_skipped"] for s in summaries) == [0, checked]
    record("two builds of one store at once", tried=2 * checked, lost=0, recomputed=0,
           note="the second waited for the first's lease, then found every shard complete")


# --- 7. a store damaged on disk: verify finds it, --repair, the build redoes only that -----

def test_verify_finds_damage_and_the_build_repairs_it(fixtures_dir: Path, tmp_path: Path,
                                                     config: DancegenConfig) -> None:
    out, cfg = tmp_path / "store.zarr", staged(config, "motion", "music")
    assert build(fixtures_dir, out, cfg).is_completed()
    dataset = DatasetStore(out, "v1")
    shard_file = out / "v1/music/baseline/c/2/0/0"
    raw = bytearray(shard_file.read_bytes())
    raw[200:216] = bytes(16)
    shard_file.write_bytes(bytes(raw))
    (out / "v1/motion/smpl_trans/c/1/0/0").unlink()
    before = record_times(dataset, ["motion", "music"])

    result = CliRunner().invoke(app, ["dataset", "verify", str(out), "--repair"])
    assert result.exit_code == 1
    assert "damaged music/000002" in result.output and "damaged motion/000001" in result.output
    assert "marked 2 damaged shards incomplete" in result.output
    summary = summary_of(build(fixtures_dir, out, cfg))
    assert summary["shards_written"] == 2
    checked = assert_whole_and_once(dataset, ["motion", "music"])
    after = record_times(dataset, ["motion", "music"])
    changed = {key for key in before if after[key] != before[key]}
    assert changed == {("music", 2), ("motion", 1)}
    assert CliRunner().invoke(app, ["dataset", "verify", str(out)]).exit_code == 0
    record("store damaged on disk: `dataset verify --repair`, then the build", tried=checked,
           lost=0, recomputed=2, note="exactly the two damaged shards were rebuilt")
