"""A readable description of a store: versions, segments, arrays, shard completion, failures."""

from __future__ import annotations

from collections import Counter

from dancegen.storage.contract import ARRAYS
from dancegen.storage.dataset import DatasetStore
from dancegen.storage.segments import from_columns, shard_ranges


def describe_version(dataset: DatasetStore) -> str:
    """Multi-line text describing one dataset version."""
    group = dataset.group()
    attrs = dict(group.attrs["dancegen"])  # one read of the group metadata for everything
    segments = from_columns(attrs["segments"])
    shards = shard_ranges(len(segments), attrs["shard_segments"])
    synthetic = " (SYNTHETIC stand-in inputs)" if attrs.get("synthetic_inputs") else ""
    lines = [
        f"version {dataset.version} at {dataset.location.url}{synthetic}",
        f"  config {attrs.get('config_name')}: {attrs['fps']} fps, "
        f"{attrs['segment_seconds']} s segments, {attrs['shard_segments']} segments per shard",
        f"  segments {len(segments)} in {len(shards)} shards; sequences "
        f"{len({s.sequence for s in segments})}",
        "  splits  " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(
            s.split for s in segments).items())),
        "  sources " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(
            s.source for s in segments).items())),
        "  arrays (segment axis first; chunk = 1 segment):",
    ]
    stages = []
    for name, spec in ARRAYS.items():
        if name not in group:
            continue
        array = group[name]
        lines.append(f"    {name:<22} {array.dtype!s:<8} {array.shape!s:<22} "
                     f"shard {array.shards!s:<20} [{spec.stage}]")
        if spec.stage not in stages:
            stages.append(spec.stage)
    for stage in stages:
        done = dataset.records(stage)
        lines.append(f"  stage {stage}: {len(done)}/{len(shards)} shards complete")
    failures = dataset.failures()
    lines.append(f"  failures {len(failures)}")
    lines += [f"    {unit}: {doc['reason']}" for unit, doc in sorted(failures.items())]
    lines.append(f"  bytes on store {dataset.location.size_bytes() / 1e6:.2f} MB")
    return "\n".join(lines)
