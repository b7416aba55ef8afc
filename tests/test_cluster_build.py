"""A build of a few hundred segments on a Ray cluster of several nodes (``ray start``, as a
deployment joins one by address): every shard complete once, work on every node, and a
second build with nothing to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dancegen.fixtures import write_fixtures
from dancegen.fixtures.layout import scaled_sequences
from dancegen.ray_cluster import LocalCluster
from dancegen.storage import DatasetStore
from dancegen.storage.verify import verify_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_a_multi_node_cluster_builds_every_shard_once_and_a_rebuild_writes_nothing(
        tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    # the session's Prefect server, as a deployment's flow runs report to a standing one
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}

    def dancegen(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dancegen", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    write_fixtures(tmp_path / "in", scaled_sequences(10, 156.0))  # 300 segments
    with LocalCluster(workers=1, cpus=1, env={"RAY_AUTH_MODE": "disabled"}) as cluster:
        build = ["dataset", "build", "--inputs", "in", "--out", "store.zarr",
                 "--set", "stages=[motion,edge_repr]", "--set", f"ray.address={cluster.address}"]
        first = dancegen(*build)
        assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
        second = dancegen(*build)
        assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    dataset = DatasetStore(tmp_path / "store.zarr", "v1")
    segments, shards = dataset.segments(), dataset.shard_ranges()
    assert len(segments) >= 300
    ids = [s.id for s in segments]
    nodes = set()
    for stage in ("motion", "edge_repr"):
        records = dataset.records(stage)
        assert sorted(records) == list(range(len(shards)))
        for shard, rows in enumerate(shards):
            assert records[shard]["segments"] == [ids[i] for i in rows]
        nodes |= {r["worker"]["node"] for r in records.values()}
    assert len(nodes) == cluster.nodes  # work landed on every node
    assert verify_dataset(dataset).ok
    assert "shards written 0, skipped" in second.stdout + second.stderr
    assert not cluster.processes()  # the cluster's daemons are gone, and only they
