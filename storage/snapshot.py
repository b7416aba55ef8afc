"""Immutable snapshots of a dataset version: what training, evaluation and ``dataset info`` read.

A build that leaves every shard with a live row complete in every stage publishes a snapshot:
a manifest written once, at ``<version>/_snapshots/<id>.json``, holding the segment table
(live rows, tombstones), the layout and each complete shard's record key; then the pointer
``_snapshots/current.json`` is moved to it. Rows are append-only and a complete shard is never
rewritten (storage/segments.py), so every array region a snapshot names keeps its content
while later builds add rows, tombstone others and write new shards: a training run that opened
a snapshot reads exactly the same samples however many builds run meanwhile.

A build whose result equals the current snapshot (a no-op nightly rebuild) publishes nothing.
Old snapshots stay readable until their rows' shards are deleted, which no build does.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorstore as ts
import zarr

from dancegen.errors import StoreError
from dancegen.storage.contract import ARRAYS
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.segments import Segment, SegmentTable

SNAPSHOTS = "_snapshots"
CURRENT = f"{SNAPSHOTS}/current.json"
LAYOUT_KEYS = ("dims", "shard_segments", "chunk_frames", "fps", "segment_seconds",
               "audio_sample_rate", "music_backend", "synthetic_inputs", "config_name")


@dataclass(frozen=True)
class Published:
    """What :func:`publish_snapshot` did."""

    id: str
    new: bool  # False: the build changed nothing, the current snapshot stands


def incomplete_units(table: SegmentTable, shard_segments: int,
                     keys: dict[str, dict[int, str]]) -> list[str]:
    """``<stage>/<shard>`` of every shard with a live row that has no completion record."""
    return [f"{stage}/{shard:06d}" for stage, done in keys.items()
            for shard, rows in enumerate(table.shard_rows(shard_segments))
            if shard not in done and any(table.is_live(r) for r in rows)]


def publish_snapshot(dataset: DatasetStore, stages: list[str],
                     keys: dict[str, dict[int, str]] | None = None) -> Published:
    """Publish the version's state as a snapshot, if every live row is complete in every
    stage of ``stages``; raises StoreError naming the incomplete shards otherwise.

    ``keys``: the record key of every complete shard per stage, when the caller knows them
    (the build does: what it skipped and what it wrote); else the records are listed."""
    attrs = dataset.attrs
    table = SegmentTable.from_attrs(attrs)
    if keys is None:
        keys = {stage: {shard: record["key"] for shard, record in dataset.records(stage).items()}
                for stage in stages}
    keys = {stage: keys.get(stage, {}) for stage in stages}  # a failed stage: none complete
    missing = incomplete_units(table, attrs["shard_segments"], keys)
    if missing:
        raise StoreError(f"no snapshot of {dataset.location.url}: {len(missing)} shards are "
                         f"not complete ({', '.join(missing[:5])}{' ...' * (len(missing) > 5)})")
    content = {
        "version": dataset.version,
        "layout": {key: attrs.get(key) for key in LAYOUT_KEYS},
        "stages": {stage: {str(shard): key for shard, key in sorted(done.items())}
                   for stage, done in keys.items()},
        "table": table.to_attrs(),
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    current = current_snapshot_id(dataset)
    if current is not None and (_manifest(dataset, current) or {}).get("digest") == digest:
        return Published(current, new=False)
    snapshot_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{digest[:10]}"
    dataset.location.write_json(f"{SNAPSHOTS}/{snapshot_id}.json",
                                {"id": snapshot_id, "digest": digest,
                                 "created_at": time.time(), **content})
    dataset.location.write_json(CURRENT, {"id": snapshot_id})  # only once the manifest is there
    return Published(snapshot_id, new=True)


def current_snapshot_id(dataset: DatasetStore) -> str | None:
    """The id of the version's current snapshot, or None before its first complete build."""
    pointer = dataset.location.read_json(CURRENT)
    return None if pointer is None else pointer["id"]


def snapshot_ids(dataset: DatasetStore) -> list[str]:
    """Every snapshot of the version, oldest first."""
    try:
        names = dataset.location.ls(SNAPSHOTS)
    except FileNotFoundError:
        return []
    ids = [n.rsplit("/", 1)[-1].removesuffix(".json") for n in names if n.endswith(".json")]
    return sorted(i for i in ids if i != "current")


def _manifest(dataset: DatasetStore, snapshot_id: str) -> dict[str, Any] | None:
    return dataset.location.read_json(f"{SNAPSHOTS}/{snapshot_id}.json")


class DatasetSnapshot:
    """A read-only view of one snapshot of a dataset version.

    Picklable (DataLoader workers, Ray tasks): it carries the manifest, and each process
    opens the arrays it reads once. Reads go through tensorstore's zarr3 driver and never
    touch the segment table or shard records.
    """

    def __init__(self, dataset: DatasetStore, manifest: dict[str, Any]) -> None:
        self.dataset = dataset
        self.manifest = manifest
        self.table = SegmentTable.from_attrs(manifest["table"])
        self._arrays: dict[str, zarr.Array] = {}
        self._readers: dict[str, ts.TensorStore] = {}

    @classmethod
    def open(cls, store: str, version: str, snapshot_id: str | None = None) -> DatasetSnapshot:
        """Snapshot ``snapshot_id`` of ``store``/``version``, by default the current one."""
        dataset = DatasetStore(store, version)
        snapshot_id = snapshot_id or current_snapshot_id(dataset)
        if snapshot_id is None:
            raise StoreError(f"dataset version {version!r} of {dataset.store.url} has no "
                             "snapshot yet: run `dancegen dataset build` until it completes")
        manifest = _manifest(dataset, snapshot_id)
        if manifest is None:
            raise StoreError(f"no snapshot {snapshot_id!r} of dataset version {version!r} in "
                             f"{dataset.store.url} (have: {', '.join(snapshot_ids(dataset))})")
        return cls(dataset, manifest)

    @property
    def id(self) -> str:
        """The snapshot id (recorded in checkpoints and evaluation reports)."""
        return self.manifest["id"]

    @property
    def layout(self) -> dict[str, Any]:
        """Sizes and descriptive attributes of the version when the snapshot was taken."""
        return self.manifest["layout"]

    @property
    def stages(self) -> list[str]:
        """The stages whose arrays the snapshot holds."""
        return list(self.manifest["stages"])

    def segments(self, split: str | None = None) -> list[tuple[int, Segment]]:
        """(row, segment) of the snapshot's live rows, of one split if given."""
        return [(row, s) for row, s in self.table.live() if split is None or s.split == split]

    def _check_stage(self, name: str) -> None:
        if ARRAYS[name].stage not in self.manifest["stages"]:
            raise StoreError(f"snapshot {self.id} has no stage {ARRAYS[name].stage} (array "
                             f"{name}); it has {', '.join(self.stages)}")

    def array(self, name: str) -> zarr.Array:
        """One array as a zarr array (its metadata: chunks, dtype), opened once per process."""
        if name not in self._arrays:
            self._check_stage(name)
            self._arrays[name] = self.dataset.open_array(name)
        return self._arrays[name]

    def _reader(self, name: str) -> ts.TensorStore:
        """One array opened read-only with tensorstore, once per process: per read it costs
        a quarter of zarr-python's and reads run concurrently (benchmarks/frame_sampling.py)."""
        if name not in self._readers:
            self._check_stage(name)
            key = f"{self.dataset.version}/{name}"
            spec = {"driver": "zarr3", "kvstore": self.dataset.store.tensorstore_kvstore(key)}
            try:
                self._readers[name] = ts.open(spec, read=True, open=True).result()
            except ValueError as error:  # tensorstore reports a missing array this way
                raise StoreError(f"cannot open {name} of snapshot {self.id} in "
                                 f"{self.dataset.store.url}: {error}") from None
        return self._readers[name]

    def read(self, name: str, row: int, frames: slice | int | None = None) -> np.ndarray:
        """Row ``row`` of array ``name`` (only ``frames`` of it, if given): decodes only the
        chunks those frames lie in."""
        return self.read_many([(name, row, frames)])[0]

    def read_many(self, reads: list[tuple[str, int, slice | int | None]]) -> list[np.ndarray]:
        """Several ``(name, row, frames)`` reads at once (concurrently), in order."""
        pending = []
        for name, row, frames in reads:
            if not 0 <= row < len(self.table.rows) or not self.table.is_live(row):
                raise StoreError(f"row {row} is not a live segment of snapshot {self.id}")
            reader = self._reader(name)
            pending.append(reader[row] if frames is None else reader[row, frames])
        futures = [view.read() for view in pending]
        return [future.result() for future in futures]

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.dataset.store.url, "version": self.dataset.version,
                "manifest": self.manifest}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(DatasetStore(state["store"], state["version"]), state["manifest"])
