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
    assert result.exit_code == 0 and "3 shards checked, 0 incomplete, 0 damaged" in result.output


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

