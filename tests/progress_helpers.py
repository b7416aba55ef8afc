"""Reading a training run's progress back from the Prefect server: the progress artifact's
update events and the loss table's versions (tests/test_training_progress.py and the Ray Train
flow test in tests/test_ldm_training.py)."""

from __future__ import annotations

import time
from uuid import UUID

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
