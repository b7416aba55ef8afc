"""The unit of work: compute one stage for one shard and write it straight to the store."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from dancegen.config import DancegenConfig
from dancegen.storage.aistpp import InputRoots
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.segments import Segment
from dancegen.tasks import metrics
from dancegen.tasks.retries import retry_unless_deterministic
from dancegen.tasks.stages import STAGES


@dataclass(frozen=True)
class ShardUnit:
    """Everything a worker needs to build one shard of one stage (small; no arrays)."""

    store_url: str
    version: str
    inputs_url: str
    stage: str
    shard: int
    segments: list[Segment]
    key: dict[str, str]
    pseudo_url: str | None = None  # root of EDGE pseudo-motions, when the build has them
    jukebox_cache: str | None = None  # the build's Jukebox feature cache, with that stage

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


def build_shard_now(unit: ShardUnit, config: DancegenConfig) -> ShardResult:
    """Compute ``unit.stage`` for the shard's segments and write arrays + completion record."""
    started = time.perf_counter()
    stage = STAGES[unit.stage]
    roots = InputRoots.parse(unit.inputs_url, unit.pseudo_url, unit.jukebox_cache)
    arrays = stage.compute(unit.segments, roots, config)
    dataset = DatasetStore(unit.store_url, unit.version)
    nbytes = dataset.write_shard(unit.stage, unit.shard, arrays, dict(unit.key))
    frames = len(unit.segments) * config.dataset.segment_frames
    metrics.record_shard(unit.stage, len(unit.segments), frames, nbytes)
    return ShardResult(unit.unit_id, len(unit.segments), nbytes, time.perf_counter() - started)


@task(
    name="build-shard",
    task_run_name="{unit.stage}-shard-{unit.shard}",
    cache_policy=NO_CACHE,       # completion records in the store are the cache
    persist_result=False,        # results are small and the arrays are already in the store
    retry_condition_fn=retry_unless_deterministic,
)
def build_shard(unit: ShardUnit, config: DancegenConfig) -> ShardResult:
    """Prefect task (run on a Ray worker): build one shard of one stage."""
    return build_shard_now(unit, config)
