"""Fan units of work out to the task runner in a bounded window.

Ray has no limit on pending tasks (a flow that submitted 15k at once hung), so at most
``window`` units are submitted and unfinished at any time; outcomes come back as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prefect.futures import as_completed

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
