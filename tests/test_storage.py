"""The data contract on a local folder and on S3: round trips, atomic shards, other readers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import zarr
from storage_helpers import STAGES, layout, make_segments, shard_data

from dancegen.config import DancegenConfig
from dancegen.errors import StoreError
from dancegen.storage import ARRAYS, DatasetStore, arrays_of, dims_for
from dancegen.storage.location import StoreLocation
from dancegen.storage.segments import SegmentTable, assign_rows, shard_ranges

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store.zarr")
    return request.getfixturevalue("s3_bucket") + "/datasets/store.zarr"


def test_round_trip_and_completion(store_url: str, config: DancegenConfig) -> None:
    segments = make_segments(10)  # shards of 4: rows 0-3, 4-7, 8-9
    ds = DatasetStore(store_url, "v1")
    ds.prepare(segments, STAGES, layout(config))
    assert DatasetStore.versions(store_url) == ["v1"]
    assert [s.id for s in ds.segments()] == [s.id for s in segments]

    written = {}
    for shard, rows in enumerate(ds.shard_ranges()):
        written[shard] = shard_data(config, "motion", len(rows), seed=shard)
        nbytes = ds.write_shard("motion", shard, written[shard], {"key": f"k{shard}"})
        assert nbytes == sum(a.nbytes for a in written[shard].values())

    for shard, rows in enumerate(ds.shard_ranges()):
        record = ds.record("motion", shard)
        assert record["key"] == f"k{shard}"
        assert record["segments"] == [segments[i].id for i in rows]
        for name, values in written[shard].items():
            np.testing.assert_array_equal(ds.read(name, slice(rows.start, rows.stop)), values)
    # a stage that never ran is not readable, and unwritten float data is NaN, not zeros
    with pytest.raises(StoreError, match="not complete"):
        ds.read("music/baseline", 0)
    assert np.isnan(ds.group()["music/baseline"][0]).all()


def test_partial_shard_is_never_complete(tmp_path: Path, config: DancegenConfig) -> None:
    ds = DatasetStore(tmp_path / "s.zarr", "v1")
    ds.prepare(make_segments(8), STAGES, layout(config))
    good = shard_data(config, "motion", 4, seed=1)
    ds.write_shard("motion", 0, good, {"key": "k"})
    # a writer that dies after the first array: simulate with a wrong second array
    broken = dict(good)
    broken["motion/smpl_trans"] = np.zeros((3, 150, 3), np.float32)
    ds.invalidate("motion", 1)
    with pytest.raises(StoreError, match="shape"):
        ds.write_shard("motion", 1, broken, {"key": "k"})
    assert ds.record("motion", 1) is None
    with pytest.raises(StoreError, match="shard 1 of stage motion is not complete"):
        ds.read("motion/smpl_poses", 5)
    np.testing.assert_array_equal(ds.read("motion/smpl_poses", slice(0, 4)),
                                  good["motion/smpl_poses"])
    with pytest.raises(StoreError, match="must write"):
        ds.write_shard("motion", 1, {"motion/smpl_poses": good["motion/smpl_poses"]}, {})


def test_other_zarr_v3_readers_open_the_store(tmp_path: Path, config: DancegenConfig) -> None:
    store = tmp_path / "s.zarr"
    ds = DatasetStore(store, "v1")
    ds.prepare(make_segments(6), STAGES, layout(config))
    data = shard_data(config, "music", 4, seed=3)
    ds.write_shard("music", 0, data, {"key": "k"})
    dims = dims_for(config)
    for spec in (s for stage in STAGES for s in arrays_of(stage)):
        opened = ts.open({"driver": "zarr3", "kvstore": f"file://{store}/v1/{spec.name}"}).result()
        assert tuple(opened.shape) == (6, *spec.resolve(dims))
        assert opened.dtype.numpy_dtype == np.dtype(spec.dtype)
    np.testing.assert_array_equal(
        ts.open({"driver": "zarr3", "kvstore": f"file://{store}/v1/music/baseline"})
        .result()[0:4].read().result(),
        data["music/baseline"],
    )
    plain = zarr.open_group(str(store / "v1"), mode="r")
    assert plain["music/audio"].shards == (4, dims["S"])
    assert plain["music/audio"].chunks == (1, dims["S"])
    assert plain.attrs["dancegen"]["segments"]["id"][0].endswith("@0000")


def test_growing_the_table_keeps_every_complete_shard(tmp_path: Path,
                                                     config: DancegenConfig) -> None:
    ds = DatasetStore(tmp_path / "s.zarr", "v1")
    first = make_segments(6)
    ds.prepare(first, STAGES, layout(config))
    for shard, rows in enumerate(ds.shard_ranges()):
        ds.write_shard("motion", shard, shard_data(config, "motion", len(rows), shard), {})
    before = ds.read("motion/smpl_poses", slice(0, 6))
    grown = assign_rows(ds.table(), make_segments(9), config.storage.shard_segments)
    ds.prepare(grown, STAGES, layout(config))
    # 6 rows in shards of 4: the 3 new rows start shard 2, after 2 padding rows
    assert [s.id if s else None for s in grown.rows] == [
        *[s.id for s in first], None, None, *[s.id for s in make_segments(9)[6:]]]
    assert ds.group()["motion/smpl_poses"].shape[0] == 11
    assert sorted(ds.records("motion")) == [0, 1]  # nothing complete was moved or dropped
    np.testing.assert_array_equal(ds.read("motion/smpl_poses", slice(0, 6)), before)


def test_layout_change_needs_a_new_version(tmp_path: Path, config: DancegenConfig) -> None:
    ds = DatasetStore(tmp_path / "s.zarr", "v1")
    ds.prepare(make_segments(4), STAGES, layout(config))
    wider = config.model_copy(update={"music": config.music.model_copy(
        update={"audio_sample_rate": 16000})})
    with pytest.raises(StoreError, match=r"new dataset\.version"):
        ds.prepare(make_segments(4), STAGES, layout(wider))


def test_rows_are_append_only_with_tombstones() -> None:
    old = make_segments(3, "gBR_sBM_cAll_d01_mBR0_ch01")
    table = assign_rows(SegmentTable(), old, 4)
    added = make_segments(2, "gAA_sBM_cAll_d01_mBR0_ch01")  # sorts before the old ones
    grown = assign_rows(table, added + old, 4)
    assert [s.id for s in grown.rows[:3]] == [s.id for s in old]  # old rows keep their index
    assert grown.rows[3] is None and [s.id for s in grown.rows[4:]] == [s.id for s in added]
    removed = assign_rows(grown, added + old[1:], 4)  # one window removed: a tombstone
    assert removed.rows == grown.rows and removed.dead == {0}
    assert [row for row, _ in removed.live()] == [1, 2, 4, 5]
    changed = dataclasses.replace(old[2], music_sha256="c" * 64)  # its input changed
    again = assign_rows(removed, [*added, old[1], changed], 4)
    assert again.dead == {0, 2} and again.rows[8] == changed  # appended, never rewritten
    stale = assign_rows(again, [*added, old[1], changed], 4, stale_rows=frozenset({4, 5}))
    assert stale.dead == {0, 2, 4, 5} and [s.id for s in stale.rows[12:]] == [
        s.id for s in added]
    assert SegmentTable.from_attrs(stale.to_attrs()) == stale
    assert shard_ranges(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]


def test_json_documents_are_atomic_and_listable(store_url: str) -> None:
    loc = StoreLocation.parse(store_url)
    loc.write_json("_x/a.json", {"v": 1})
    loc.write_json("_x/a.json", {"v": 2})
    loc.write_json("_x/b.json", {"v": 3})
    assert loc.read_json("_x/a.json") == {"v": 2}
    assert loc.list_json("_x") == {"a.json": {"v": 2}, "b.json": {"v": 3}}
    loc.delete("_x/a.json")
    loc.delete("_x/a.json")  # deleting twice is fine
    assert loc.read_json("_x/a.json") is None
    if loc.is_local:
        assert not [p for p in Path(loc.url, "_x").iterdir() if not p.name.endswith(".json")]


def test_unreachable_store_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreError, match="unsupported store URL"):
        StoreLocation.parse("gs://bucket/x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    loc = StoreLocation.parse("s3://nobucket/x")
    with pytest.raises(StoreError, match=re.escape("cannot reach store s3://nobucket/x")):
        loc.check_reachable()


def test_contract_doc_lists_every_array() -> None:
    doc = (REPO / "docs/data-contract.md").read_text()
    for name, spec in ARRAYS.items():
        assert f"`{name}`" in doc, f"{name} missing from docs/data-contract.md"
        assert spec.dtype in doc
