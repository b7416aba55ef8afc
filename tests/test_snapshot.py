"""Snapshots: published only when complete, immutable, unchanged by later builds."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from storage_helpers import layout, make_segments, shard_data

from dancegen.config import DancegenConfig
from dancegen.errors import StoreError
from dancegen.storage import DatasetStore
from dancegen.storage.segments import assign_rows
from dancegen.storage.snapshot import (
    DatasetSnapshot,
    current_snapshot_id,
    publish_snapshot,
    snapshot_ids,
)


def _write_missing(dataset: DatasetStore, config: DancegenConfig) -> int:
    """Write every motion shard that has a live row and no record (as a build would)."""
    table, written = dataset.table(), 0
    for shard, rows in enumerate(table.shard_rows(config.storage.shard_segments)):
        if shard in dataset.records("motion") or not any(table.is_live(r) for r in rows):
            continue
        data = shard_data(config, "motion", len(rows), seed=100 + shard)
        ids = [table.rows[r].id if table.is_live(r) else None for r in rows]
        dataset.write_shard("motion", shard, data, {"key": f"k{shard}"}, rows, ids)
        written += 1
    return written


def test_snapshot_stays_readable_while_the_version_changes(tmp_path: Path,
                                                           config: DancegenConfig) -> None:
    dataset = DatasetStore(tmp_path / "s.zarr", "v1")
    segments = make_segments(6, "gBR_sBM_cAll_d01_mBR0_ch01")
    dataset.prepare(segments, ["motion"], layout(config))
    with pytest.raises(StoreError, match="2 shards are not complete"):
        publish_snapshot(dataset, ["motion"])
    assert current_snapshot_id(dataset) is None
    with pytest.raises(StoreError, match="has no snapshot yet"):
        DatasetSnapshot.open(str(tmp_path / "s.zarr"), "v1")
    assert _write_missing(dataset, config) == 2
    first = publish_snapshot(dataset, ["motion"])
    assert first.new and current_snapshot_id(dataset) == first.id
    assert publish_snapshot(dataset, ["motion"]) == type(first)(first.id, new=False)
    old = DatasetSnapshot.open(str(tmp_path / "s.zarr"), "v1")
    before = {row: old.read("motion/smpl_poses", row) for row, _ in old.segments()}

    # a rebuild: segment 1 removed, a new sequence of 3 windows added
    added = make_segments(3, "gLO_sBM_cAll_d01_mLO0_ch01")
    table = assign_rows(dataset.table(), [segments[0], *segments[2:], *added],
                        config.storage.shard_segments)
    dataset.prepare(table, ["motion"], layout(config))
    assert _write_missing(dataset, config) == 1  # only the new rows' shard: rows 8..10
    second = publish_snapshot(dataset, ["motion"])
    assert second.new and snapshot_ids(dataset) == sorted([first.id, second.id])

    # the old snapshot reads exactly what it read before; the new one sees the change
    again = DatasetSnapshot.open(str(tmp_path / "s.zarr"), "v1", first.id)
    assert [row for row, _ in again.segments()] == list(range(6))
    for row, values in before.items():
        np.testing.assert_array_equal(again.read("motion/smpl_poses", row), values)
    new = DatasetSnapshot.open(str(tmp_path / "s.zarr"), "v1")
    assert new.id == second.id
    assert [row for row, _ in new.segments()] == [0, 2, 3, 4, 5, 8, 9, 10]
    with pytest.raises(StoreError, match="row 1 is not a live segment"):
        new.read("motion/smpl_poses", 1)
    np.testing.assert_array_equal(new.read("motion/smpl_poses", 4, slice(2, 5)),
                                  before[4][2:5])

    # it travels to DataLoader workers and Ray tasks as its manifest
    copy = pickle.loads(pickle.dumps(new))
    assert copy.id == new.id
    np.testing.assert_array_equal(copy.read("motion/smpl_trans", 9),
                                  new.read("motion/smpl_trans", 9))
    with pytest.raises(StoreError, match="has no stage render"):
        copy.read("video/frames", 0)
    with pytest.raises(StoreError, match="no snapshot 'nope'"):
        DatasetSnapshot.open(str(tmp_path / "s.zarr"), "v1", "nope")


def test_snapshot_reads_from_s3(s3_bucket: str, config: DancegenConfig) -> None:
    """The snapshot reader (tensorstore's s3 driver) finds the same endpoint as the writers."""
    url = f"{s3_bucket}/datasets/s.zarr"
    dataset = DatasetStore(url, "v1")
    dataset.prepare(make_segments(3), ["motion"], layout(config))
    data = shard_data(config, "motion", 3, seed=7)
    dataset.write_shard("motion", 0, data, {"key": "k"})
    snapshot = DatasetSnapshot.open(url, "v1", publish_snapshot(dataset, ["motion"]).id)
    np.testing.assert_array_equal(snapshot.read("motion/smpl_poses", 2, slice(10, 20)),
                                  data["motion/smpl_poses"][2, 10:20])
    first, scale = snapshot.read_many([("motion/smpl_trans", 0, None),
                                       ("motion/smpl_scaling", 1, None)])
    np.testing.assert_array_equal(first, data["motion/smpl_trans"][0])
    np.testing.assert_array_equal(scale, data["motion/smpl_scaling"][1])
