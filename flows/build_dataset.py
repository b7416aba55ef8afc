"""The dataset build: plan segments, skip finished shards, fan the rest out to Ray workers.

    new music --synthesize_track per track on a Ray worker (EDGE)--> <store>/pseudo-motions
    inputs (AIST++ layout) + pseudo-motions --plan--> segment table --prepare--> Zarr v3 group
        --for each stage x shard not complete--> the stage's Ray actors --> store

Every stage runs at once on workers of its own, set up once each (flows/stage_pool.py).
Each worker writes its shard straight to the store; only counts come back. A unit that fails
(bad input, lost worker) is recorded in the store with its reason and the others go on; the
flow then ends Failed with a message that says how many failed. A re-run recomputes only what
is missing or stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.states import Completed, Failed, State
from prefect_ray import RayTaskRunner

from dancegen.config import DancegenConfig, RayConfig, load_config
from dancegen.errors import InputError, StoreError
from dancegen.flows.features import extract_jukebox_features
from dancegen.flows.stage_pool import run_stage_units
from dancegen.flows.synthesis import synthesize_pseudo_motions
from dancegen.storage.aistpp import AistppInputs, InputRoots
from dancegen.storage.contract import dims_for
from dancegen.storage.dataset import DatasetStore, Layout, one_line
from dancegen.storage.lease import StoreLease, describe
from dancegen.storage.segments import SegmentTable, assign_rows
from dancegen.storage.snapshot import current_snapshot_id, publish_snapshot
from dancegen.tasks import metrics
from dancegen.tasks.plan import Plan, plan_segments
from dancegen.tasks.shard import ShardResult, ShardUnit
from dancegen.tasks.stages import STAGES, SharedInputs


@dataclass
class BuildSummary:
    """What a build did; the flow's return value and its summary artifact."""

    store: str
    version: str
    segments: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    shards_failed: int = 0
    inputs_failed: int = 0
    tracks_synthesized: int = 0
    tracks_skipped: int = 0
    tracks_failed: int = 0
    features_extracted: int = 0
    features_cached: int = 0
    features_failed: int = 0
    bytes_written: int = 0
    tombstoned: int = 0  # rows this build tombstoned (removed or changed segments)
    snapshot: str | None = None  # the snapshot current after the build
    snapshot_new: bool = False  # whether this build published it
    seconds: float = 0.0
    unit_seconds: float = 0.0  # time spent inside the shard units, summed over workers
    unit_cpu_seconds: float = 0.0  # the workers' CPU time in them
    phases: dict[str, float] = field(default_factory=dict)  # plan_s, prepare_s, fan_out_s
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Units that failed: unreadable sequences, failed tracks and failed shards."""
        return self.inputs_failed + self.tracks_failed + self.features_failed + self.shards_failed

    def as_dict(self) -> dict:
        """Plain data for the flow's final state (includes the derived ``failed`` count)."""
        return {**asdict(self), "failed": self.failed}

    def headline(self) -> str:
        """One line for logs, the CLI and the flow's final state message."""
        tracks = (f"pseudo-motion tracks {self.tracks_synthesized} new, {self.tracks_skipped} "
                  f"kept, {self.tracks_failed} failed; ")
        return (
            tracks + f"{self.segments} segments; shards written {self.shards_written}, skipped "
            f"{self.shards_skipped}, failed {self.shards_failed}; inputs failed "
            f"{self.inputs_failed}; {self.bytes_written / 1e6:.1f} MB in {self.seconds:.1f} s; "
            f"snapshot {self.snapshot or 'none'}{' (new)' if self.snapshot_new else ''}"
        )

    def markdown(self) -> str:
        """The summary artifact."""
        lines = [
            f"# Dataset build `{self.store}` / `{self.version}`", "",
            "| segments | shards written | skipped | failed | inputs failed | pseudo-motion "
            "tracks new / kept / failed | MB | seconds |",
            "|---|---|---|---|---|---|---|---|",
            f"| {self.segments} | {self.shards_written} | {self.shards_skipped} | "
            f"{self.shards_failed} | {self.inputs_failed} | {self.tracks_synthesized} / "
            f"{self.tracks_skipped} / {self.tracks_failed} | {self.bytes_written / 1e6:.2f} | "
            f"{self.seconds:.1f} |",
        ]
        if self.features_extracted or self.features_cached or self.features_failed:
            lines += ["", f"Jukebox features: {self.features_extracted} tracks extracted, "
                          f"{self.features_cached} cached, {self.features_failed} failed"]
        if self.failures:
            lines += ["", "## Failed units", "", "| unit | reason |", "|---|---|"]
            lines += [f"| `{u}` | {r} |" for u, r in sorted(self.failures.items())]
        return "\n".join(lines)


def ray_init_kwargs(ray: RayConfig) -> dict:
    """``ray.init`` arguments for the config: a local Ray for the run, or an existing cluster."""
    init: dict = {"include_dashboard": ray.include_dashboard}
    if ray.address is None:
        # "local": always a new Ray for this run, never a cluster that happens to be running
        init["address"] = "local"
        if ray.num_cpus is not None:
            init["num_cpus"] = ray.num_cpus
        if ray.num_gpus is not None:
            init["num_gpus"] = ray.num_gpus
        return init
    init["address"] = ray.address  # "auto" or ray://...; fails loudly if nothing is there
    return init


def ray_task_runner(ray: RayConfig) -> RayTaskRunner:
    """A task runner that starts (or joins) the config's Ray, unless one is initialised."""
    return RayTaskRunner(init_kwargs=ray_init_kwargs(ray))


def store_layout(config: DancegenConfig, synthetic: bool) -> Layout:
    """The version group's layout for the config (sizes, shard size, descriptive attributes)."""
    data = config.dataset
    return Layout(
        dims=dims_for(config),
        shard_segments=config.storage.shard_segments,
        compression_level=config.storage.compression_level,
        chunk_frames=config.storage.chunk_frames,
        attrs={
            "config_name": config.name,
            "fps": data.fps,
            "segment_seconds": data.segment_seconds,
            "stride_seconds": data.stride_seconds,
            "audio_sample_rate": config.music.audio_sample_rate,
            "music_backend": config.music.backend,
            "synthetic_inputs": synthetic,
        },
    )


def shared_inputs(roots: InputRoots, config: DancegenConfig,
                  input_failures: dict[str, str]) -> dict[str, SharedInputs]:
    """Each stage's shared inputs; a stage whose shared inputs fail (e.g. no body model)
    goes to ``input_failures`` instead: it fails, the others run."""
    shared = {}
    for stage_name in config.stages:
        try:
            shared[stage_name] = STAGES[stage_name].shared(roots, config)
        except InputError as error:
            input_failures[f"inputs/{stage_name}-shared"] = str(error)
    return shared


def stale_rows(table: SegmentTable, records: dict[str, dict[int, dict[str, Any]]],
               shared: dict[str, SharedInputs], config: DancegenConfig) -> frozenset[int]:
    """Rows of complete shards built from other inputs, config or code than now: they are
    tombstoned and their segments appended anew, never rewritten under a snapshot."""
    stale: set[int] = set()
    shard_rows = table.shard_rows(config.storage.shard_segments)
    for stage_name, digest in shared.items():
        for shard, record in records[stage_name].items():
            rows = shard_rows[shard] if shard < len(shard_rows) else range(0)
            key = STAGES[stage_name].key(table.assigned(rows), config, digest)
            if record.get("key") != key["key"]:
                stale.update(rows)
    return frozenset(stale)


def pending_units(
    dataset: DatasetStore, table: SegmentTable, roots: InputRoots, config: DancegenConfig,
    shared: dict[str, SharedInputs], records: dict[str, dict[int, dict[str, Any]]],
    summary: BuildSummary,
) -> list[ShardUnit]:
    """The shard units a build must compute: every (stage, shard) with a live row and no
    completion record of the shard's current key. Counts skipped shards in ``summary``."""
    units = []
    for stage_name, digest in shared.items():
        stage = STAGES[stage_name]
        for shard, rows in enumerate(table.shard_rows(config.storage.shard_segments)):
            if not any(table.is_live(i) for i in rows):
                continue  # tombstones and padding only: nothing to read there
            key = stage.key(table.assigned(rows), config, digest)
            record = records[stage_name].get(shard)
            if record is not None and record.get("key") == key["key"]:
                summary.shards_skipped += 1
                continue
            if record is not None:  # stale rows are tombstoned first: only a record of
                dataset.invalidate(stage_name, shard)  # a repaired stage's inputs is here
            segments = [table.rows[i] if table.is_live(i) else None for i in rows]
            units.append(ShardUnit(dataset.store.url, dataset.version,
                                   roots.primary.location.url, stage_name, shard,
                                   segments, key,
                                   roots.pseudo.location.url if roots.pseudo else None,
                                   roots.jukebox_cache, rows.start))
    return units


def pending_units_of(dataset: DatasetStore, table: SegmentTable, roots: InputRoots,
                     config: DancegenConfig, summary: BuildSummary,
                     input_failures: dict[str, str]) -> list[ShardUnit]:
    """:func:`pending_units` of a prepared table, with the stages' shared inputs and the
    store's records looked up (benchmarks and tools; the build shares them with planning)."""
    shared = shared_inputs(roots, config, input_failures)
    records = {stage: dataset.records(stage) for stage in shared}
    return pending_units(dataset, table, roots, config, shared, records, summary)


@contextlib.contextmanager
def _build_lease(dataset: DatasetStore, config: DancegenConfig) -> Iterator[StoreLease]:
    """Hold the store's build lease (storage/lease.py) for the block; waits for another build."""
    logger = get_run_logger()
    flow_run = get_run_context().flow_run
    lease = StoreLease(dataset.store, f"flow run {flow_run.name}" if flow_run else "a build",
                       config.storage.lease_ttl_seconds, config.storage.lease_wait_seconds)
    lease.acquire(on_wait=lambda holder: logger.warning(
        "waiting for the build already running on %s: %s", dataset.store.url, describe(holder)))
    if lease.took_over:
        logger.warning("took over a stale build lease of %s", lease.took_over)
    try:
        yield lease
    finally:
        lease.release()


def _prepare(dataset: DatasetStore, source: AistppInputs, plan: Plan,
             config: DancegenConfig, summary: BuildSummary
             ) -> tuple[list[ShardUnit], dict[str, dict[int, str]]]:
    """Synthesis, features, the store's layout; the pending shard units and the record keys
    of the shards already complete. Records input failures in the store (and clears the
    ones that were repaired)."""
    logger = get_run_logger()
    input_failures = dict(plan.failed)
    synthesis = synthesize_pseudo_motions(dataset, source, plan.median_smpl_scaling, config)
    pseudo_url = synthesis.root
    summary.tracks_synthesized, summary.tracks_skipped = synthesis.synthesized, synthesis.skipped
    track_failures = {u: r for u, r in synthesis.failures.items() if u.startswith("synthesis/")}
    summary.tracks_failed = len(track_failures)
    summary.failures.update(track_failures)
    input_failures.update({u: r for u, r in synthesis.failures.items() if u not in track_failures})
    planned = list(plan.segments)
    if pseudo_url is not None:
        pseudo_plan = plan_segments(pseudo_url, config, dataset.store)
        planned += pseudo_plan.segments
        input_failures.update(pseudo_plan.failed)
    roots = InputRoots(source, AistppInputs(pseudo_url) if pseudo_url else None)
    features = extract_jukebox_features(dataset, roots, planned, config)
    summary.features_extracted, summary.features_cached = features.extracted, features.cached
    summary.features_failed = len(features.failures)
    summary.failures.update(features.failures)
    roots = dataclasses.replace(roots, jukebox_cache=features.cache_url)
    exists = dataset.version in DatasetStore.versions(dataset.store)
    previous = dataset.table() if exists else SegmentTable()
    shared = shared_inputs(roots, config, input_failures)
    records = {stage: dataset.records(stage) if exists else {} for stage in shared}
    table = assign_rows(previous, planned, config.storage.shard_segments,
                        stale_rows(previous, records, shared, config))
    dataset.prepare(table, config.stages, store_layout(config, source.synthetic))
    summary.segments = len(table.live())
    summary.tombstoned = len(table.dead - previous.dead)
    units = pending_units(dataset, table, roots, config, shared, records, summary)
    pending = {(unit.stage, unit.shard) for unit in units}
    complete = {stage: {shard: record["key"] for shard, record in done.items()
                        if (stage, shard) not in pending} for stage, done in records.items()}
    for unit_id, reason in input_failures.items():
        logger.error("input unit %s failed: %s", unit_id, reason)
        dataset.record_failure(unit_id, reason, {"kind": "input"})
    summary.inputs_failed = len(input_failures)
    summary.failures.update(input_failures)
    for unit_id in dataset.failures():
        if unit_id.startswith("inputs/") and unit_id not in input_failures:
            dataset.clear_failure(unit_id)
    logger.info("%d sequences, %d segments (%d rows tombstoned now): %d shard units to build, "
                "%d already complete", plan.sequences, summary.segments, summary.tombstoned,
                len(units), summary.shards_skipped)
    return units, complete


def _write_or_stop(dataset: DatasetStore, summary: BuildSummary,
                   write: Callable[..., None], *args: Any) -> None:
    """One store write of the fan-out; if the store went away, stop the build with a message
    that says what is kept and that a re-run resumes."""
    try:
        write(*args)
    except Exception as error:
        raise StoreError(
            f"lost the store {dataset.store.url} during the build ({type(error).__name__}: "
            f"{error}). {summary.shards_written} shards finished in this run and "
            f"{summary.shards_skipped} earlier ones are kept; run the build again once the "
            "store is back: it resumes with the shards that are missing.") from error


def _fan_out(dataset: DatasetStore, units: list[ShardUnit], config: DancegenConfig,
             summary: BuildSummary, lease: StoreLease,
             complete: dict[str, dict[int, str]]) -> None:
    """Run the shard units on Ray; record each outcome in the store as it comes back, and
    each finished unit's key in ``complete``."""
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, key="dataset-build-progress",
                                        description="Shards of this build finished")
    total = Counter(unit.stage for unit in units)
    failed_before = set(dataset.failures())  # one listing, not a delete per finished unit
    with contextlib.closing(run_stage_units(units, config, logger)) as outcomes:
        _record_outcomes(dataset, outcomes, len(units), summary, lease, progress, total,
                         failed_before, complete)


PROGRESS_EVERY_S = 2.0  # progress artifacts are API calls: at most one per stage this often


def _record_outcomes(dataset: DatasetStore, outcomes: Iterator[tuple[ShardUnit, Any]],
                     count: int, summary: BuildSummary, lease: StoreLease, progress: Any,
                     total: Counter, failed_before: set[str],
                     complete: dict[str, dict[int, str]]) -> None:
    logger, finished, shown = get_run_logger(), Counter(), {}
    stage_progress = {stage: create_progress_artifact(
        0.0, key=f"dataset-build-{stage.replace('_', '-')}",
        description=f"{stage}: shards of this build finished") for stage in total}
    for done, (unit, outcome) in enumerate(outcomes, start=1):
        lease.check()
        metrics.set_queue_depth(dataset.store.url, count - done)
        if isinstance(outcome, ShardResult):
            if unit.unit_id in failed_before:
                _write_or_stop(dataset, summary, dataset.clear_failure, unit.unit_id)
            summary.shards_written += 1
            complete.setdefault(unit.stage, {})[unit.shard] = unit.key["key"]
            summary.bytes_written += outcome.nbytes
            summary.unit_seconds += outcome.seconds
            summary.unit_cpu_seconds += outcome.cpu_seconds
            logger.info("[%d/%d] %s: %d segments, %.2f MB in %.1f s (worker %s, set-ups %s)",
                        done, count, unit.unit_id, outcome.segments, outcome.nbytes / 1e6,
                        outcome.seconds, outcome.worker.get("pid"), outcome.worker.get("setups"))
        else:
            reason = one_line(f"{type(outcome).__name__}: {outcome}")
            _write_or_stop(dataset, summary, dataset.record_failure, unit.unit_id, reason,
                           {"kind": "shard", "segments": [s.id for s in unit.segments]})
            summary.shards_failed += 1
            summary.failures[unit.unit_id] = reason
            metrics.record_failure(unit.stage)
            logger.error("[%d/%d] %s failed: %s", done, count, unit.unit_id, reason)
        finished[unit.stage] += 1
        now = time.monotonic()
        for key, artifact, part in ((unit.stage, stage_progress[unit.stage],
                                     finished[unit.stage] / total[unit.stage]),
                                    ("", progress, done / count)):
            if part == 1.0 or now - shown.get(key, 0.0) >= PROGRESS_EVERY_S:
                update_progress_artifact(artifact, 100.0 * part)
                shown[key] = now


@flow(name="build-dataset", task_runner=RayTaskRunner())
def build_dataset(
    inputs: str,
    out: str,
    config: DancegenConfig | str = "configs/local-cpu.yaml",
    overrides: list[str] | None = None,
) -> State:
    """Build (or bring up to date) dataset version ``config.dataset.version`` in ``out``.

    ``config`` is a config object or a YAML path (with ``overrides``, as deployments pass it).
    Run from the CLI, the flow's Ray comes from ``config.ray``; deployed, from the worker's
    environment (RAY_ADDRESS), since a task runner is fixed when the flow is loaded.
    """
    if isinstance(config, str):
        config = load_config(config, overrides)
    started = time.perf_counter()
    logger = get_run_logger()
    dataset = DatasetStore(out, config.dataset.version)
    summary = BuildSummary(store=dataset.store.url, version=dataset.version)

    dataset.store.check_reachable()
    plan = plan_segments(inputs, config, dataset.store)  # reads only new or changed files
    summary.phases["plan_s"] = time.perf_counter() - started
    with _build_lease(dataset, config) as lease:  # one build of a store at a time
        phase = time.perf_counter()
        units, complete = _prepare(dataset, AistppInputs(inputs), plan, config, summary)
        summary.phases["prepare_s"] = time.perf_counter() - phase
        phase = time.perf_counter()
        _fan_out(dataset, units, config, summary, lease, complete)
        summary.phases["fan_out_s"] = time.perf_counter() - phase
        _publish(dataset, config, summary, complete)
    summary.seconds = time.perf_counter() - started
    create_markdown_artifact(summary.markdown(), key="dataset-build-summary",
                             description=summary.headline())
    logger.info("build finished: %s", summary.headline())
    if summary.failed:
        return Failed(message=f"{summary.failed} units failed: {summary.headline()}",
                      data=summary.as_dict())
    if summary.snapshot_new:
        _announce_update(dataset, summary)
    return Completed(message=summary.headline(), data=summary.as_dict())


def _publish(dataset: DatasetStore, config: DancegenConfig, summary: BuildSummary,
             complete: dict[str, dict[int, str]]) -> None:
    """Publish the finished version as a snapshot (storage/snapshot.py) from the keys of its
    complete shards (no second listing of the records); an incomplete one keeps the previous
    snapshot current, so training never sees a half-built version."""
    try:
        published = publish_snapshot(dataset, list(config.stages), complete)
    except StoreError as error:
        get_run_logger().warning("%s; the current snapshot stays %s", error,
                                 current_snapshot_id(dataset))
        summary.snapshot = current_snapshot_id(dataset)
        return
    summary.snapshot, summary.snapshot_new = published.id, published.new


UPDATED_EVENT = "dancegen.dataset.updated"


def _announce_update(dataset: DatasetStore, summary: BuildSummary) -> None:
    """Emit ``dancegen.dataset.updated`` for this flow run: the verify deployment (and,
    through it, training) is triggered by it, so a nightly build that published no new
    snapshot triggers nothing downstream. Prefect relates the event to the run's flow and
    deployment."""
    flow_run = get_run_context().flow_run
    if flow_run is None:
        return
    emit_event(event=UPDATED_EVENT,
               resource={"prefect.resource.id": f"prefect.flow-run.{flow_run.id}"},
               payload={"store": dataset.store.url, "version": dataset.version,
                        "snapshot": summary.snapshot, "shards_written": summary.shards_written})
