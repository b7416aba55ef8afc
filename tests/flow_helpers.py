"""Running the build flow in tests: on the session's Prefect server and Ray."""

from __future__ import annotations

from pathlib import Path

from prefect.states import State
from prefect_ray import RayTaskRunner

from dancegen.config import DancegenConfig
from dancegen.flows.build_dataset import build_dataset
from dancegen.storage import DatasetStore


def build(inputs: Path | str, out: Path | str, config: DancegenConfig) -> State:
    """Run build-dataset and return its final state (never raises for a failed run)."""
    flow = build_dataset.with_options(task_runner=RayTaskRunner())  # reuses the session's Ray
    return flow(inputs=str(inputs), out=str(out), config=config, return_state=True)


def summary_of(state: State) -> dict:
    """The build's summary (BuildSummary.as_dict) from its final state."""
    return state.result(raise_on_failure=False)


def shards_with_sequence(dataset: DatasetStore, sequence: str) -> set[int]:
    """Shards holding at least one live segment of ``sequence``."""
    table = dataset.table()
    return {k for k, rows in enumerate(dataset.shard_ranges())
            if any(table.is_live(i) and table.rows[i].sequence == sequence for i in rows)}
