"""Stages on long-lived Ray actors (flows/stage_pool.py): set up once per worker, fake GPUs on
a local Ray, a hung unit failing alone on its timeout, a stage the cluster cannot hold."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flow_helpers import build, summary_of

from dancegen.config import DancegenConfig, StageResources
from dancegen.fixtures import write_fixtures
from dancegen.storage import DatasetStore
from dancegen.tasks import stages as stage_registry
from dancegen.tasks.stages import Stage, compute_motion

pytestmark = pytest.mark.usefixtures("prefect_server", "ray_cluster")
HUNG_SEQUENCE = "gHO_sBM_cAll_d04_mHO3_ch04"


def one_segment_per_shard(config: DancegenConfig, stages: list[str], **resources: dict
                          ) -> DancegenConfig:
    """``config`` building ``stages`` only, one segment per sequence and per shard."""
    ray_stages = dict(config.ray.stages)
    for name, update in resources.items():
        ray_stages[name] = ray_stages.get(name, StageResources()).model_copy(update=update)
    return config.model_copy(update={
        "stages": stages,
        "dataset": config.dataset.model_copy(update={"max_segments_per_sequence": 1}),
        "storage": config.storage.model_copy(update={"shard_segments": 1}),
        "ray": config.ray.model_copy(update={"stages": ray_stages}),
    })


@pytest.mark.slow
def test_render_on_fake_gpus_sets_up_once_per_actor(tmp_path: Path) -> None:
    """The issue's command: fake GPUs on the CLI's local Ray, a render shard per segment."""
    from prefect.settings import PREFECT_API_URL

    # the session's Prefect server (the CLI starts none when one is configured)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}

    def dancegen(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dancegen", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=900)

    write_fixtures(tmp_path / "in")
    built = dancegen("dataset", "build", "--inputs", "in", "--out", "store.zarr",
                     "--set", "stages=[render]", "--set", "dataset.max_segments_per_sequence=1",
                     "--set", "ray.num_gpus=2", "--set", "ray.stages.render.num_gpus=0.5",
                     "--set", "storage.shard_segments=1")
    assert built.returncode == 0, (built.stdout + built.stderr)[-3000:]
    records = DatasetStore(tmp_path / "store.zarr", "v1").records("render")
    shards = len(DatasetStore(tmp_path / "store.zarr", "v1").shard_ranges())
    assert sorted(records) == list(range(shards)) and shards >= 6
    workers = {(r["worker"]["pid"], r["worker"]["setups"]) for r in records.values()}
    assert {setups for _, setups in workers} == {1}
    pids = {pid for pid, _ in workers}
    assert len(pids) < shards / 2, pids  # 2 CPUs: at most two render actors at once


@pytest.mark.parametrize("actors", [2, 0], ids=["on-actors", "as-ray-tasks"])
def test_a_hung_unit_fails_alone_on_its_timeout_and_a_rerun_completes_it(
        fixtures_dir: Path, tmp_path: Path, config: DancegenConfig,
        monkeypatch: pytest.MonkeyPatch, actors: int) -> None:
    real = stage_registry.STAGES["motion"]

    def hangs_on_one_sequence(segments, roots, config):  # pickled by value to the actors
        if any(s.sequence == HUNG_SEQUENCE for s in segments):
            time.sleep(600)  # a stuck read: only stopping the worker ends it
        return compute_motion(segments, roots, config)

    hanging = Stage(real.name, real.version, real.segment_inputs, real.config_sections,
                    hangs_on_one_sequence)
    monkeypatch.setitem(stage_registry.STAGES, "motion", hanging)
    # 10 s: a task unit's timeout counts from its submission, which on a loaded 2-core machine
    # includes a cold Ray worker's start (3 s timed out healthy units there)
    cfg = one_segment_per_shard(config, ["motion"], motion={"timeout_s": 10.0, "actors": actors})
    cfg = cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"retries": 1})})
    out = tmp_path / "store.zarr"
    started = time.monotonic()
    summary = summary_of(build(fixtures_dir, out, cfg))
    assert time.monotonic() - started < 120  # neither the sleep nor a retry loop held it up

    dataset = DatasetStore(out, cfg.dataset.version)
    shards = dataset.shard_ranges()
    hung = [k for k, rows in enumerate(shards)
            if dataset.segments()[rows.start].sequence == HUNG_SEQUENCE]
    assert len(hung) == 1
    unit = f"motion/{hung[0]:06d}"
    assert summary["shards_failed"] == 1 and summary["shards_written"] == len(shards) - 1
    assert summary["failures"][unit].startswith(f"UnitTimeout: {unit} ran past its timeout "
                                                "of 10 s (ray.stages.motion.timeout_s)")
    assert unit in dataset.failures()
    records = dataset.records("motion")
    assert sorted(records) == sorted(set(range(len(shards))) - set(hung))
    assert {r["worker"]["setups"] for r in records.values()} == {1}

    monkeypatch.setitem(stage_registry.STAGES, "motion", real)  # the read is unstuck
    before = {k: r["written_at"] for k, r in records.items()}
    again = summary_of(build(fixtures_dir, out, cfg))
    assert again["shards_written"] == 1 and again["shards_skipped"] == len(shards) - 1
    after = dataset.records("motion")
    assert sorted(after) == list(range(len(shards)))
    assert {k: after[k]["written_at"] for k in before} == before  # nothing redone
    assert not dataset.failures()


def test_a_stage_the_local_ray_cannot_hold_fails_alone(fixtures_dir: Path, tmp_path: Path,
                                                       config: DancegenConfig) -> None:
    cfg = one_segment_per_shard(config, ["motion", "render"], render={"num_gpus": 1.0})
    summary = summary_of(build(fixtures_dir, tmp_path / "store.zarr", cfg))
    shards = summary["shards_written"] + summary["shards_failed"]
    assert summary["shards_written"] == shards // 2  # every motion shard
    reasons = {r for u, r in summary["failures"].items() if u.startswith("render/")}
    assert len(reasons) == 1 and len(summary["failures"]) == shards // 2
    assert reasons.pop().startswith("ConfigError: ray.stages.render asks for")


class _FakeLane:
    """What ``_fill`` sees of a lane: whether it runs tasks, its running units, submit_one."""

    def __init__(self, per_task: bool, pending: int, workers: int) -> None:
        self.per_task, self.pending, self.workers = per_task, pending, workers
        self.running: list[int] = []

    def submit_one(self) -> bool:
        limit = 2 * self.workers if self.per_task else self.workers
        if not self.pending or len(self.running) >= limit:
            return False
        self.pending -= 1
        self.running.append(self.pending)
        return True


def test_idle_actors_get_work_even_when_queued_tasks_fill_the_window() -> None:
    """Render actors holding both CPUs while the window is full of queued CPU tasks (waiting
    for those CPUs) stalled a build for good; actors are now fed outside the window."""
    from dancegen.flows.stage_pool import _fill

    tasks = [_FakeLane(True, pending=10, workers=2) for _ in range(3)]
    actors = _FakeLane(False, pending=4, workers=2)
    _fill([*tasks, actors], window=8)
    assert len(actors.running) == 2  # every idle actor has a unit
    assert sum(len(lane.running) for lane in tasks) == 8  # the window bounds the tasks
