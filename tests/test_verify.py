"""`dataset verify` finds incomplete and damaged shards in a store damaged on purpose."""

from __future__ import annotations

from pathlib import Path

from storage_helpers import layout, make_segments, shard_data
from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.config import DancegenConfig
from dancegen.storage import DatasetStore
from dancegen.storage.verify import verify_dataset


def build_store(root: Path, config: DancegenConfig) -> DatasetStore:
    dataset = DatasetStore(root, "v1")
    dataset.prepare(make_segments(12), ("motion",), layout(config))
    for shard, rows in enumerate(dataset.shard_ranges()):
        dataset.write_shard("motion", shard, shard_data(config, "motion", len(rows), shard), {})
    return dataset


def test_a_healthy_store_verifies(tmp_path: Path, config: DancegenConfig) -> None:
    report = verify_dataset(build_store(tmp_path / "s.zarr", config))
    assert report.ok and report.checked == 3
    result = CliRunner().invoke(app, ["dataset", "verify", str(tmp_path / "s.zarr")])
    assert result.exit_code == 0  # incremental: nothing was written since the check above
    assert "3 shards checked, 0 read back, 0 incomplete, 0 damaged" in result.output


def test_an_incremental_check_reads_only_what_was_written_since(tmp_path: Path,
                                                                config: DancegenConfig) -> None:
    dataset = build_store(tmp_path / "s.zarr", config)
    assert verify_dataset(dataset, full=False).read == 3  # never checked: everything
    assert verify_dataset(dataset, full=False).read == 0
    rows = dataset.shard_ranges()[1]
    dataset.write_shard("motion", 1, shard_data(config, "motion", len(rows), 7), {})
    again = verify_dataset(dataset, full=False)
    assert again.ok and again.read == 1
    # damage to a shard found intact before is only seen by a full sweep (bit rot)
    raw = tmp_path / "s.zarr/v1/motion/smpl_poses/c/2/0/0"
    data = bytearray(raw.read_bytes())
    data[100:108] = bytes(8)
    raw.write_bytes(bytes(data))
    assert verify_dataset(dataset, full=False).ok
    full = CliRunner().invoke(app, ["dataset", "verify", str(tmp_path / "s.zarr"), "--full"])
    assert full.exit_code == 1 and "damaged motion/000002" in full.output
    assert "3 read back" in full.output


def test_damage_is_found_and_named(tmp_path: Path, config: DancegenConfig) -> None:
    root = tmp_path / "s.zarr"
    dataset = build_store(root, config)
    # 1: flip bytes inside a shard file -> the chunk's crc32c fails on read
    shard_file = root / "v1/motion/smpl_poses/c/1/0/0"
    raw = bytearray(shard_file.read_bytes())
    raw[100:108] = bytes(8)
    shard_file.write_bytes(bytes(raw))
    # 2: a shard file lost -> reads back fill values, which differ from the recorded checksum
    (root / "v1/motion/smpl_trans/c/2/0/0").unlink()
    # 3: a completion record lost -> incomplete
    dataset.invalidate("motion", 0)

    report = verify_dataset(dataset)
    assert report.incomplete == ["motion/000000"]
    assert set(report.damaged) == {"motion/000001", "motion/000002"}
    assert "unreadable" in report.damaged["motion/000001"]
    assert "checksum" in report.damaged["motion/000002"]
    result = CliRunner().invoke(app, ["dataset", "verify", str(root)])
    assert result.exit_code == 1
    assert "damaged motion/000001" in result.output and "incomplete motion/000000" in result.output

