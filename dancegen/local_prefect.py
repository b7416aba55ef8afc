"""The embedded default's Prefect: one local ``prefect server start`` for the length of a run.

Prefect's ephemeral mode (no server, no PREFECT_API_URL) must not be used with Ray: every Ray
worker would start a temporary server of its own and the runs would be invisible. So a
command that runs flows either uses the PREFECT_API_URL it is given, or starts a local server
(SQLite under ``home``) on a free loopback port, points this process and the Ray workers it
starts at it, and stops it afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.settings import PREFECT_API_URL, temporary_settings

from dancegen.errors import DancegenError

HEALTH_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DancegenError(f"prefect server exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise DancegenError(f"prefect server not healthy after {HEALTH_TIMEOUT_S:.0f} s; see {log}")


def server_environment(home: Path) -> dict[str, str]:
    """Environment of the local server: its own PREFECT_HOME, no analytics, no UI build."""
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_URL": "",
    }


def _drain_prefect_clients() -> None:
    """Send buffered logs and events before the server goes away (else ~70 s of retries)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)


@contextmanager
def prefect_api(home: Path) -> Iterator[str]:
    """Yield a Prefect API URL: the configured one, or a local server started for the block."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = home / "server.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start",
             "--host", "127.0.0.1", "--port", str(port)],
            env=server_environment(home), stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us first; we stop the server ourselves
        )
    try:
        _wait_healthy(url, process, log)
        os.environ["PREFECT_API_URL"] = url  # inherited by the Ray workers this run starts
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        _drain_prefect_clients()
        os.environ.pop("PREFECT_API_URL", None)
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
