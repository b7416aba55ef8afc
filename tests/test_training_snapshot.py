"""A rebuild during training: the training finishes on its snapshot with the same samples, the
rebuild computes only the shards of changed segments, the next training sees the new snapshot."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from flow_helpers import build, summary_of
from ldm_helpers import short_config

from dancegen.storage import DatasetStore
from dancegen.storage.snapshot import DatasetSnapshot, current_snapshot_id
from dancegen.tasks.ldm_data import ClipSource
from dancegen.tasks.ldm_train import train_stage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "ray_cluster")]

REMOVED = "gBR_sBM_cAll_d02_mBR0_ch02"   # a train sequence of the fixtures
COPIED, ADDED = "gPO_sBM_cAll_d03_mPO2_ch03", "gPO_sBM_cAll_d03_mPO2_ch09"


def _remove_one_add_one(inputs: Path) -> None:
    """The nightly change: one sequence's motion gone, a new train sequence (same music)."""
    (inputs / f"motions/{REMOVED}.pkl").unlink()
    shutil.copy(inputs / f"motions/{COPIED}.pkl", inputs / f"motions/{ADDED}.pkl")
    with (inputs / "splits/crossmodal_train.txt").open("a") as split:
        split.write(f"{ADDED}\n")
    mapping = (inputs / "cameras/mapping.txt").read_text().splitlines()
    camera = next(line.split()[1] for line in mapping if line.startswith(COPIED))
    (inputs / "cameras/mapping.txt").write_text("\n".join([*mapping, f"{ADDED} {camera}"]) + "\n")


def test_a_rebuild_during_training_changes_nothing_it_reads(
        built_store: Path, inputs_copy: Path, tmp_path: Path) -> None:
    store = str(shutil.copytree(built_store, tmp_path / "store.zarr"))
    # a few stage-1 steps, read by one DataLoader worker process ahead of the loop
    config = short_config("training.stage1.steps=6", "training.loader.workers=1")
    dataset = DatasetStore(store, config.dataset.version)
    before = DatasetSnapshot.open(store, config.dataset.version)
    records_before = {stage: dataset.records(stage) for stage in config.stages}
    reference = train_stage(1, store, config.model_copy(update={"ldm": config.ldm.model_copy(
        update={"run_name": "reference"})}))
    assert reference["snapshot"] == before.id

    rebuilt: dict[str, Any] = {}

    def rebuild_once(metrics: dict[str, Any]) -> None:  # at the first logged step
        if not rebuilt:
            _remove_one_add_one(inputs_copy)
            rebuilt.update(summary_of(build(inputs_copy, store, config)))

    during = train_stage(1, store, config.model_copy(update={"ldm": config.ldm.model_copy(
        update={"run_name": "during"})}), report=rebuild_once)

    # the training read its snapshot: the same samples, so bit-identical losses on CPU
    assert rebuilt and during["snapshot"] == before.id
    assert during["losses"] == reference["losses"]

    # the rebuild: the removed sequence's rows tombstoned, only the new sequence's shards built
    after = DatasetSnapshot.open(store, config.dataset.version)
    assert rebuilt["snapshot_new"] and after.id == rebuilt["snapshot"] != before.id
    removed_rows = {row for row, s in before.segments() if s.sequence == REMOVED}
    added_rows = {row for row, s in after.segments() if s.sequence == ADDED}
    assert rebuilt["tombstoned"] == len(removed_rows) > 0 and after.table.dead == removed_rows
    new_shards = {row // config.storage.shard_segments for row in added_rows}
    assert min(added_rows) == len(before.table.rows) + (-len(before.table.rows)
                                                         % config.storage.shard_segments)
    assert rebuilt["shards_written"] == len(new_shards) * len(config.stages)
    for stage in config.stages:  # no record of an old shard was rewritten or dropped
        records = dataset.records(stage)
        assert {k: records[k] for k in records_before[stage]} == records_before[stage]
    assert {s.id for _, s in after.segments()} == (
        {s.id for _, s in before.segments() if s.sequence != REMOVED}
        | {s.id for _, s in after.segments() if s.sequence == ADDED})

    # the next training run starts from the new snapshot
    assert ClipSource(store, config).snapshot.id == current_snapshot_id(dataset) == after.id
    following = train_stage(1, store, short_config(
        "training.stage1.steps=2", "ldm.run_name=following", "training.loader.workers=0"))
    assert following["snapshot"] == after.id
