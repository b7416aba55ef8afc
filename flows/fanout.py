"""Fan units of work out to the task runner in a bounded window.

Ray has no limit on pending tasks (a flow that submitted 15k at once hung), so at most
``window`` units are submitted and unfinished at any time; outcomes come back as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.futures import as_completed
from prefect_ray.context import remote_options

from dancegen.config import DancegenConfig
from dancegen.storage.dataset import DatasetStore, one_line

Unit = TypeVar("Unit")


def run_bounded(
    units: list[Unit], submit: Callable[[Unit], Any], window: int
) -> Iterator[tuple[Unit, Any | BaseException]]:
    """Submit each unit, ``window`` at a time; yield (unit, its result or its error)."""
    pending, in_flight = list(reversed(units)), {}
    while pending or in_flight:
        while pending and len(in_flight) < window:
            unit = pending.pop()
            in_flight[submit(unit)] = unit
        future = next(as_completed(list(in_flight)))
        unit = in_flight.pop(future)
        try:
            yield unit, future.result()
        except BaseException as error:  # a failed unit must never stop the others
            yield unit, error


def run_per_track(units: list[Unit], task: Any, stage: str, config: DancegenConfig,
                  dataset: DatasetStore, failures: dict[str, str],
                  kind: str) -> Iterator[tuple[Unit, Any]]:
    """One ``task`` per track unit, with ``ray.stages.<stage>`` resources and the config's
    retries; a failure is recorded in the store (and in ``failures``) and the others go on, a
    success clears the unit's old failure. A unit past the stage's ``timeout_s`` fails with
    a timeout. Yields (unit, result) of the successes."""
    logger = get_run_logger()
    resources = config.ray.resources(stage)
    task = task.with_options(retries=config.ray.retries, timeout_seconds=resources.timeout_s)

    def submit(unit: Any) -> Any:
        with remote_options(**resources.ray_options()):
            return task.submit(unit, config)

    for unit, result in run_bounded(units, submit, config.ray.max_in_flight):
        if isinstance(result, BaseException):
            reason = one_line(f"{type(result).__name__}: {result}")
            failures[unit.unit_id] = reason
            dataset.record_failure(unit.unit_id, reason, {"kind": kind,
                                                          "music_file": unit.music_file})
            logger.error("%s failed: %s", unit.unit_id, reason)
        else:
            dataset.clear_failure(unit.unit_id)
            yield unit, result
