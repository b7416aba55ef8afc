"""The fault-injection tests' tally: per fault, units tried, lost and recomputed.

Each fault test calls :func:`record`; conftest.py prints the table at the end of the run (under
pytest-xdist each worker sends its outcomes to the controller, which prints them)
(the figures issue 10's resolution reports), and writes it as JSON when
``DANCEGEN_FAULT_REPORT`` names a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FaultOutcome:
    """What one injected fault cost."""

    fault: str
    tried: int        # units the run set out to produce
    lost: int         # units missing or damaged once the run (and its re-run) ended: must be 0
    recomputed: int   # units computed more than once because of the fault
    note: str = ""


OUTCOMES: list[FaultOutcome] = []


def record(fault: str, tried: int, lost: int, recomputed: int, note: str = "") -> None:
    """Add one fault's outcome to the run's table."""
    OUTCOMES.append(FaultOutcome(fault, tried, lost, recomputed, note))


def add_from_worker(outcomes: list[dict]) -> None:
    """Add the outcomes a pytest-xdist worker recorded (sent as dicts) to this process's."""
    OUTCOMES.extend(FaultOutcome(**outcome) for outcome in outcomes)


def table() -> list[str]:
    """The outcomes as Markdown table lines (empty when no fault test ran)."""
    if not OUTCOMES:
        return []
    lines = ["| fault | units tried | lost | recomputed | note |", "|---|---|---|---|---|"]
    lines += [f"| {o.fault} | {o.tried} | {o.lost} | {o.recomputed} | {o.note} |"
              for o in OUTCOMES]
    path = os.environ.get("DANCEGEN_FAULT_REPORT")
    if path:
        with open(path, "w") as out:
            json.dump([asdict(o) for o in OUTCOMES], out, indent=1)
    return lines
