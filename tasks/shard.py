"""The unit of work: compute one stage for one shard and write it straight to the store.

A :class:`StageWorker` is one worker process's copy of a stage. It runs the stage's set-up
(body model, GL context) on first use, and again only when what the set-up is built from
changes, then builds shard after shard. The build runs one per long-lived Ray actor
(flows/stage_pool.py), or one per Ray task with ``ray.stages.<stage>.actors: 0``. Every
completion record names the worker process and how many set-ups it ran, so that the store
shows whether set-up ran once per worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import ray

from dancegen.config import DancegenConfig
from dancegen.storage.aistpp import InputRoots
from dancegen.storage.contract import ARRAYS
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.segments import Segment
from dancegen.tasks import metrics
from dancegen.tasks.stages import STAGES, ComputeFn, Stage


@dataclass(frozen=True)
class ShardUnit:
    """Everything a worker needs to build one shard of one stage (small; no arrays)."""

    store_url: str
    version: str
    inputs_url: str
    stage: str
    shard: int
    segments: list[Segment | None]  # one per row of the shard; None: tombstone or padding
    key: dict[str, str]
    pseudo_url: str | None = None  # root of EDGE pseudo-motions, when the build has them
    jukebox_cache: str | None = None  # the build's Jukebox feature cache, with that stage
    first_row: int | None = None  # the shard's first row: workers never read the table

    @property
    def unit_id(self) -> str:
        """Name of the unit in logs, failure records and summaries."""
        return f"{self.stage}/{self.shard:06d}"


@dataclass(frozen=True)
class ShardResult:
    """What travels back to the flow: counts, never arrays."""

    unit_id: str
    segments: int
    nbytes: int
    seconds: float
    worker: dict[str, int | str] = field(default_factory=dict)  # pid, setups, node
    cpu_seconds: float = 0.0  # the worker process's CPU time in the unit


_NOT_SET_UP = object()


def _scatter(values: np.ndarray, rows: list[int], count: int, fill: float | int) -> np.ndarray:
    """``values`` of the live ``rows`` placed in a shard of ``count`` rows of ``fill``."""
    out = np.full((count, *values.shape[1:]), fill, dtype=values.dtype)
    out[rows] = values
    return out


class StageWorker:
    """One process's copy of a stage: set up once, then shard after shard (a Ray actor)."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.setups = 0
        self._identity: Hashable = _NOT_SET_UP
        self._compute: ComputeFn | None = None

    def ready(self) -> int:
        """The worker's process id, once it is up (the pool waits for it before timing units)."""
        return os.getpid()

    def _computer(self, roots: InputRoots, config: DancegenConfig) -> ComputeFn:
        identity = self.stage.identity(roots, config)
        if self._compute is None or identity != self._identity:
            self.close()
            self._compute = self.stage.set_up(roots, config)
            self._identity = identity
            self.setups += 1
        return self._compute

    def build_shard(self, unit: ShardUnit, config: DancegenConfig) -> ShardResult:
        """Compute the unit's stage for its shard and write arrays + completion record."""
        started, cpu_started = time.perf_counter(), time.process_time()
        roots = InputRoots.parse(unit.inputs_url, unit.pseudo_url, unit.jukebox_cache)
        live = [i for i, s in enumerate(unit.segments) if s is not None]
        arrays = self._computer(roots, config)([unit.segments[i] for i in live], roots, config)
        if len(live) < len(unit.segments):  # dead rows hold fill values: never read as data
            arrays = {name: _scatter(values, live, len(unit.segments), ARRAYS[name].fill_value)
                      for name, values in arrays.items()}
        worker: dict[str, int | str] = {"pid": os.getpid(), "setups": self.setups}
        if ray.is_initialized():  # in a Ray worker: which node of the cluster ran it
            worker["node"] = ray.get_runtime_context().get_node_id()
        dataset = DatasetStore(unit.store_url, unit.version)
        rows = None if unit.first_row is None else range(
            unit.first_row, unit.first_row + len(unit.segments))
        nbytes = dataset.write_shard(unit.stage, unit.shard, arrays,
                                     {**unit.key, "worker": worker}, rows,
                                     [s.id if s else None for s in unit.segments])
        frames = len(live) * config.dataset.segment_frames
        metrics.record_shard(unit.stage, len(live), frames, nbytes)
        return ShardResult(unit.unit_id, len(live), nbytes,
                           time.perf_counter() - started, worker,
                           time.process_time() - cpu_started)

    def close(self) -> None:
        """Release what the set-up holds (a GL context), if anything."""
        close = getattr(self._compute, "close", None)
        if close is not None:
            close()
        self._compute = None

    def __repr__(self) -> str:  # the actor's name on the Ray dashboard
        return f"StageWorker({self.stage.name})"


_PROCESS_WORKERS: dict[str, StageWorker] = {}


def build_shard_now(unit: ShardUnit, config: DancegenConfig,
                    stage: Stage | None = None) -> ShardResult:
    """Build one shard in this process, with this process's worker for the stage (one Ray
    task per shard runs this; so do benchmarks and tests in-process)."""
    stage = stage or STAGES[unit.stage]
    worker = _PROCESS_WORKERS.get(stage.name)
    if worker is None or worker.stage != stage:
        worker = _PROCESS_WORKERS[stage.name] = StageWorker(stage)
    return worker.build_shard(unit, config)
