"""Training publishes its progress while it runs: the EDGE flow updates a progress artifact and
its loss table at each checkpoint, read back from the session's Prefect server (an LDM stage
under Ray Train does the same: tests/test_ldm_training.py::test_flow_trains_a_stage_...)."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow
from prefect_ray import RayTaskRunner
from progress_helpers import assert_published_while_running

from dancegen.config import load_config
from dancegen.flows import reports
from dancegen.flows.reports import TrainingProgress, percent_done
from dancegen.flows.train_edge import train_edge

# a flow run on the session's Prefect server and Ray
flow_test = pytest.mark.usefixtures("prefect_server", "ray_cluster")


@pytest.fixture(autouse=True)
def _poll_often(monkeypatch: pytest.MonkeyPatch) -> None:
    # checkpoints a second or more apart, read ten times a second: each of them is published
    monkeypatch.setattr(reports, "PROGRESS_SECONDS", 0.1)


def test_percent_done_is_bounded() -> None:
    assert percent_done(0, 12) == 0 and percent_done(4, 12) == 33.3
    assert percent_done(15, 12) == 100 and percent_done(3, 0) == 100


@pytest.mark.usefixtures("prefect_server")
def test_an_unreadable_progress_file_does_not_stop_training(caplog) -> None:
    def unreadable() -> None:
        raise OSError("store unreachable")

    @flow
    def training() -> UUID | None:
        with TrainingProgress("unreadable", "a run", 10, unreadable, every=0.05) as progress:
            time.sleep(0.3)  # several polls, each failing
        return progress.artifact_id

    assert training() is None  # nothing published, and the run completed
    assert "training progress not published: OSError: store unreachable" in caplog.text


@pytest.mark.slow
@flow_test
def test_edge_flow_publishes_progress_at_each_checkpoint(fixtures_dir: Path,
                                                         tmp_path: Path) -> None:
    config = load_config("configs/local-cpu.yaml", [
        "edge.train.window_stride_seconds=5", "edge.train.steps=6",
        "edge.train.checkpoint_every=2", "edge.train.log_every=1", "edge.train.batch_size=4"])
    run_flow = train_edge.with_options(task_runner=RayTaskRunner())  # the session's Ray
    state = run_flow(inputs=str(fixtures_dir), out=str(tmp_path / "store"), config=config,
                 return_state=True)
    assert state.is_completed(), state.message
    # created at step 0, then checkpoints at steps 2, 4 and 6; 2 loss rows per checkpoint
    assert_published_while_running(state, "edge-training", [33.3, 66.7, 100.0], final_rows=6)
