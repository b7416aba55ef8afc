"""Markdown pieces of the flows' Prefect artifacts, and training progress published while it runs.

Training progress is read from the store by the flow process, not sent by the training
workers: the store's progress file (EDGE's ``train.json``, an LDM stage's ``latest.json``) is
the record a resumed run continues from and the one the final summary is built from, the flow
process has the Prefect run context and API, and Ray Train workers then need no Prefect
credentials. Progress therefore moves checkpoint by checkpoint.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

# Seconds between two reads of the store's progress file; each read publishes at most once,
# and only when the step moved, so a fast run cannot flood the Prefect API.
PROGRESS_SECONDS = 5.0


def loss_table(state: dict) -> str:
    """A training run's loss curve (``loss_columns`` / ``losses`` of its state) as a Markdown
    table of at most ~20 rows."""
    columns, rows = state.get("loss_columns", []), state.get("losses", [])
    stride = max(1, len(rows) // 20)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(f"{v:.4g}" for v in row) + " |"
                              for row in rows[::stride]])


def percent_done(step: int, steps: int) -> float:
    """``step`` of ``steps`` in percent, one decimal, at most 100."""
    return round(100.0 * min(step, steps) / steps, 1) if steps > 0 else 100.0


class TrainingProgress:
    """While its ``with`` block runs, publish a training run's progress from the store.

    Two artifacts: a progress artifact (key ``<key>-progress``, percent of ``steps`` done,
    created once and then updated in place) and a Markdown artifact under ``key`` with the
    loss table so far (a new version of the key each time, which Prefect keeps). A thread
    reads ``read_state`` every ``every`` seconds (default :data:`PROGRESS_SECONDS`); the state
    is also published on entry and once more on exit, so a finished run ends at 100 %.
    Publishing is best effort: an unreachable store or API is logged, never raised, since
    training must not fail for its progress report.
    """

    def __init__(self, key: str, title: str, steps: int,
                 read_state: Callable[[], dict[str, Any] | None],
                 every: float | None = None) -> None:
        self.key, self.title, self.steps, self.read_state = key, title, steps, read_state
        self.every = PROGRESS_SECONDS if every is None else every
        self.artifact_id: UUID | None = None
        self._step: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        """Publish the store's state now, if its step moved since the last publication."""
        state = self.read_state() or {}
        step = int(state.get("step", 0))
        if step == self._step:
            return
        self._step = step
        progress = percent_done(step, self.steps)
        description = f"{self.title}: step {step}/{self.steps} ({progress:g} %)"
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(progress, key=f"{self.key}-progress",
                                                        description=description)
        else:
            update_progress_artifact(self.artifact_id, progress, description=description)
        if state.get("losses"):
            create_markdown_artifact(f"# {description}\n\n{loss_table(state)}", key=self.key,
                                     description=description)

    def _publish_quietly(self) -> None:
        try:
            self.publish()
        except Exception as error:  # the report is best effort; the training goes on
            get_run_logger().warning("training progress not published: %s: %s",
                                     type(error).__name__, error)

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self._publish_quietly()

    def __enter__(self) -> TrainingProgress:
        self._publish_quietly()
        # the copied context carries the flow run (artifacts attach to it) and the settings
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._watch,), daemon=True,
                                        name=f"progress-{self.key}")
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._publish_quietly()
