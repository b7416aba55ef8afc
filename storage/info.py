"""A readable description of a store: versions, snapshots, rows, arrays, shards, failures."""

from __future__ import annotations

from collections import Counter

from dancegen.storage.contract import ARRAYS
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.segments import SegmentTable
from dancegen.storage.snapshot import DatasetSnapshot, current_snapshot_id, snapshot_ids


def _counts(values: list[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(Counter(values).items())) or "none"


def describe_version(dataset: DatasetStore, snapshot_id: str | None = None) -> str:
    """Multi-line text describing one dataset version: the segments of its current snapshot
    (or of ``snapshot_id``), then the version's working state (rows, shards, failures)."""
    group = dataset.group()
    attrs = dict(group.attrs["dancegen"])  # one read of the group metadata for everything
    table = SegmentTable.from_attrs(attrs)
    shards = table.shard_rows(attrs["shard_segments"])
    synthetic = " (SYNTHETIC stand-in inputs)" if attrs.get("synthetic_inputs") else ""
    current, known = current_snapshot_id(dataset), snapshot_ids(dataset)
    lines = [
        f"version {dataset.version} at {dataset.location.url}{synthetic}",
        f"  config {attrs.get('config_name')}: {attrs['fps']} fps, "
        f"{attrs['segment_seconds']} s segments, {attrs['shard_segments']} segments per shard, "
        f"chunk = {attrs.get('chunk_frames')} frames",
    ]
    if snapshot_id or current:
        snapshot = DatasetSnapshot.open(dataset.store.url, dataset.version, snapshot_id)
        segments = [s for _, s in snapshot.segments()]
        lines += [
            f"  snapshot {snapshot.id}{' (current)' if snapshot.id == current else ''}, "
            f"one of {len(known)}: segments {len(segments)}, sequences "
            f"{len({s.sequence for s in segments})}",
            f"    splits  {_counts([s.split for s in segments])}",
            f"    sources {_counts([s.source for s in segments])}",
        ]
    else:
        lines.append("  no snapshot yet: no build of this version has completed")
    padding = sum(s is None for s in table.rows)
    lines += [f"  rows {len(table.rows)}: live {len(table.live())}, tombstoned "
              f"{len(table.dead)}, padding {padding}; {len(shards)} shards",
              "  arrays (segment axis first):"]
    stages = []
    for name, spec in ARRAYS.items():
        if name not in group:
            continue
        array = group[name]
        lines.append(f"    {name:<22} {array.dtype!s:<8} {array.shape!s:<22} "
                     f"chunk {array.chunks!s:<20} [{spec.stage}]")
        if spec.stage not in stages:
            stages.append(spec.stage)
    live_shards = [k for k, rows in enumerate(shards) if any(table.is_live(r) for r in rows)]
    for stage in stages:
        done = dataset.records(stage)
        lines.append(f"  stage {stage}: {sum(k in done for k in live_shards)}/"
                     f"{len(live_shards)} shards with live rows complete")
    failures = dataset.failures()
    lines.append(f"  failures {len(failures)}")
    lines += [f"    {unit}: {doc['reason']}" for unit, doc in sorted(failures.items())]
    lines.append(f"  bytes on store {dataset.location.size_bytes() / 1e6:.2f} MB")
    return "\n".join(lines)
