"""Training publishes its progress while it runs: the EDGE flow and an LDM stage (Ray Train)
update a progress artifact and their loss table at each checkpoint, read back from the
session's Prefect server: the progress artifact's update events and the loss table's versions."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

import pytest
from ldm_helpers import short_config
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.objects import Artifact
from prefect.client.schemas.sorting import ArtifactSort
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.states import State
from prefect_ray import RayTaskRunner

from dancegen.config import load_config
from dancegen.flows import reports
from dancegen.flows.reports import TrainingProgress, percent_done
from dancegen.flows.train_edge import train_edge
from dancegen.flows.train_ldm import train_ldm

# a flow run on the session's Prefect server and Ray
flow_test = pytest.mark.usefixtures("prefect_server", "ray_cluster")


@pytest.fixture(autouse=True)
def _poll_often(monkeypatch: pytest.MonkeyPatch) -> None:
    # checkpoints a second or more apart, read ten times a second: each of them is published
    monkeypatch.setattr(reports, "PROGRESS_SECONDS", 0.1)


def versions(state: State, key: str) -> list[Artifact]:
    """Every version of the run's artifact ``key``, oldest first."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])),
            sort=ArtifactSort.CREATED_DESC)
    return found[::-1]


def progress_updates(artifact_id: UUID, timeout: float = 60.0) -> list[float]:
    """The values a progress artifact was updated to, in order, from its update events (the
    server persists events in batches: wait for the last one, 100)."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(filter=EventFilter(
                event=EventNameFilter(name=["prefect.artifact.updated"]),
                resource=EventResourceFilter(id=[f"prefect.artifact.{artifact_id}"])), limit=50)
        values = [event.payload["data"] for event in sorted(page.events, key=lambda e: e.occurred)]
        if (values and values[-1] == 100) or time.monotonic() > deadline:
            return values
        time.sleep(0.5)


def table_rows(markdown: str) -> int:
    """Data rows of the Markdown table in an artifact (the header row not counted)."""
    return sum(line.startswith("| ") for line in markdown.splitlines()) - 1


def assert_published_while_running(state: State, key: str, checkpoints: list[float],
                                   final_rows: int) -> None:
    """The progress artifact rose through checkpoints' percentages to 100, and the loss table
    grew version by version before the summary (the last version) closed it."""
    (progress,) = versions(state, f"{key}-progress")
    assert progress.type == "progress" and progress.data == 100
    # each update is a checkpoint's percentage, rising to 100, with one before the end at least
    updates = progress_updates(progress.id)
    assert updates == sorted(updates) and set(updates) <= set(checkpoints), updates
    assert updates[-1] == 100 and len(updates) >= 2, updates
    tables = versions(state, key)
    rows = [table_rows(t.data) for t in tables]
    assert len(tables) >= 3 and rows == sorted(rows), rows
    assert rows[0] < final_rows and rows[-1] == final_rows, rows
    assert "step" in tables[0].description and "%" in tables[0].description
    assert state.message in tables[-1].description  # the summary, as before


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


@pytest.mark.slow
@flow_test
def test_ldm_stage_publishes_progress_from_ray_train(built_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.zarr"
    store.mkdir()
    (store / "v1").symlink_to(built_store / "v1")
    config = short_config("training.stage1.steps=6", "training.checkpoint_every=2",
                          "training.log_every=1")
    run_flow = train_ldm.with_options(task_runner=RayTaskRunner())
    state = run_flow(stage=1, out=str(store), config=config, return_state=True)
    assert state.is_completed(), state.message
    assert_published_while_running(state, "ldm-stage1", [33.3, 66.7, 100.0], final_rows=6)
