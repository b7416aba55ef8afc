"""Helpers shared by the benchmark scripts: environments, timing, JSON, machine facts, tables.

Imported by scripts run as ``python benchmarks/<name>.py`` (their folder is on ``sys.path``).
Nothing here imports Prefect or Ray: :func:`use_local_stack_environment` must run before they
are imported, because Prefect reads its settings at import and Ray workers inherit the
environment of the process that starts the local cluster.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Thread pools each library would otherwise size to the machine; a benchmark that compares
# one worker with two must keep every worker on one core (LP_NUM_THREADS: Mesa's llvmpipe).
SINGLE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                           "NUMBA_NUM_THREADS", "LP_NUM_THREADS")


def local_stack_environment(home: Path) -> dict[str, str]:
    """Variables for a throwaway local Prefect server and local Ray (as tests/conftest.py sets)."""
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "RAY_AUTH_MODE": "disabled",  # a local cluster on loopback only, for this run
        "RAY_DEDUP_LOGS": "0",
    }


def use_local_stack_environment(single_threaded: bool = True) -> None:
    """Point this process (and the Ray workers it will start) at a private Prefect home.

    Variables already set (e.g. by ``run_all.py``) win; without a PREFECT_HOME, a temporary
    one is made and removed at exit. PREFECT_API_URL is dropped so that a server configured in
    the shell is never used: the benchmark starts its own, like the CLI without one.
    """
    if "PREFECT_HOME" not in os.environ:
        home = Path(tempfile.mkdtemp(prefix="dancegen-bench-home-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        os.environ.update(local_stack_environment(home))
    for key, value in local_stack_environment(Path(os.environ["PREFECT_HOME"]).parent).items():
        os.environ.setdefault(key, value)
    os.environ.pop("PREFECT_API_URL", None)
    if single_threaded:
        for key in SINGLE_THREAD_VARIABLES:
            os.environ[key] = "1"


def positive(text: str) -> int:
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0")
    return value


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def write_json(path: Path | None, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` when one was given (the scripts' ``--json``)."""
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")


# --- the machine ------------------------------------------------------------------------------


def run_in_temp_folder(prefix: str, args: argparse.Namespace,
                       measure: Callable[[argparse.Namespace, Path], Any],
                       report: Callable[[Any], None]) -> int:
    """The body of a benchmark's ``main``: measure in a fresh temporary folder (removed
    afterwards, whatever happens), print the figures, write them to ``args.json`` if given."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        result = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(result)
    write_json(args.json, result)
    return 0


def _first_line_with(path: str, prefix: str) -> str | None:
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip() if ":" in line else line
    except OSError:
        pass
    return None


def _os_name() -> str:
    pretty = _first_line_with("/etc/os-release", "PRETTY_NAME=")
    name = pretty.split("=", 1)[1].strip('"\n') if pretty else platform.system()
    return f"{name} (kernel {platform.release()})"


def _ram_gib() -> float | None:
    total = _first_line_with("/proc/meminfo", "MemTotal")
    return int(total.split()[0]) / 2**20 if total else None  # kB -> GiB


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, RAM, OS, Python, torch, GPU, GL platform."""
    import torch

    from dancegen.tasks.renderer import choose_platform

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": _first_line_with("/proc/cpuinfo", "model name") or platform.processor()
        or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": _os_name(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "gpu": gpu,
        "render_platform": choose_platform(),
    }


# --- tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the results table: ``ratio`` is always ``value / baseline_value``."""

    benchmark: str
    figure: str
    baseline: str
    value: float
    baseline_value: float
    unit: str
    value_note: str = ""  # a second figure shown beside the value (e.g. steps/s)
    baseline_note: str = ""

    @property
    def ratio(self) -> float:
        """The figure against its in-run baseline."""
        return self.value / self.baseline_value

    def cells(self) -> list[str]:
        """benchmark | figure | baseline | value | ratio, as text."""
        def shown(value: float, note: str) -> str:
            return f"{number(value)} {self.unit}" + (f" ({note})" if note else "")

        return [self.benchmark, self.figure,
                f"{self.baseline}: {shown(self.baseline_value, self.baseline_note)}",
                shown(self.value, self.value_note), f"{self.ratio:.2f}x"]


COLUMNS = ("benchmark", "figure", "baseline (same run)", "value", "ratio")


def number(value: float) -> str:
    """Three significant figures, no exponent for the magnitudes these benchmarks produce."""
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2e}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table aligned for a terminal."""
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(cells, widths,
                                                                         strict=True)).rstrip()
                     for cells in [header, *rows])
