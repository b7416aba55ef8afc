"""The embedded default's Prefect: one local ``prefect server start`` for the length of a run.

Prefect's ephemeral mode (no server, no PREFECT_API_URL) must not be used with Ray: every Ray
worker would start a temporary server of its own and the runs would be invisible. So a
command that runs flows either uses the PREFECT_API_URL it is given, or starts a local server
(SQLite under ``home``) on a free loopback port, points this process and the Ray workers it
starts at it, and stops it afterwards.

Several commands may run at once on one machine, even in one ``home`` (there, one server starts
at a time, since first starts race in the database migrations): each server gets a
random per-run API auth string (PREFECT_SERVER_API_AUTH_STRING; the clients and the Ray
workers get it as PREFECT_API_AUTH_STRING), so a server is only taken for ours when it accepts
that string and refuses a request without it. A port picked free can be taken before our
server binds it; that server then exits and the next attempt uses another port. The server is
registered with :mod:`dancegen.watchdog`, so it dies with the command even on SIGKILL.
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from dancegen import watchdog
from dancegen.errors import DancegenError

HEALTH_TIMEOUT_S = 90.0
START_ATTEMPTS = 4  # each lost port race costs ~3 s (the server checks the port first)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_taken(port: int) -> bool:
    """Whether something listens on the loopback ``port`` (bound as the server binds it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _status(url: str, auth: str | None) -> int | None:
    """HTTP status of GET ``url`` (with basic auth ``auth``), None if nothing answers HTTP."""
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, http.client.HTTPException):
        return None


def _identify(url: str, auth: str) -> Literal["ours", "other", "nothing"]:
    """Who answers at ``url``: the server started with ``auth`` (it accepts the auth string
    and refuses the same request without it), another HTTP server, or nothing."""
    probe = f"{url}/admin/version"
    status = _status(probe, auth)
    if status is None:
        return "nothing"
    return "ours" if status == 200 and _status(probe, None) == 401 else "other"


def serves_as_ours(url: str, auth: str) -> bool:
    """Whether the API at ``url`` is the server started with ``auth`` (a 200 is not enough)."""
    return _identify(url, auth) == "ours"


def _wait_ours(url: str, port: int, auth: str, process: subprocess.Popen, log: Path) -> bool:
    """Wait until our server answers at ``url``: True; False when it exited because another
    process holds ``port`` (try another one); a DancegenError on any other failure."""
    deadline, taken = time.monotonic() + HEALTH_TIMEOUT_S, False
    while time.monotonic() < deadline:
        found = _identify(url, auth)
        if found == "ours":
            return True
        # ours answers only once it is up: another answer means another process has the port
        # (remembered: that one may have stopped by the time ours gives up and exits)
        taken = taken or found == "other"
        if process.poll() is not None:
            if taken or _port_taken(port):
                return False
            raise DancegenError(f"prefect server exited with {process.returncode}; see {log}")
        time.sleep(0.5)
    raise DancegenError(f"prefect server not healthy after {HEALTH_TIMEOUT_S:.0f} s; see {log}")


def server_environment(home: Path, auth: str) -> dict[str, str]:
    """Environment of the local server: its own PREFECT_HOME and auth string, no analytics,
    no UI build."""
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_URL": "",
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_API_AUTH_STRING": auth,  # the server's own clients (its services)
    }


def _spawn(home: Path, port: int, auth: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start",
             "--host", "127.0.0.1", "--port", str(port)],
            env=server_environment(home, auth), stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us first; we stop the server ourselves
        )
    watchdog.guard("group", process.pid)  # and if we are killed, the watchdog does
    return process


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    watchdog.release("group", process.pid)


@contextmanager
def _startup_lock(home: Path) -> Iterator[None]:
    """One server of ``home`` starts at a time: first starts at once race in the database
    migrations ("duplicate column name"); once up, servers share the SQLite file (WAL)."""
    with (home / "server.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
        yield


def _start_server(home: Path, auth: str) -> tuple[subprocess.Popen, str]:
    """A healthy server of ours and its API URL, on a free port (another after a lost race)."""
    with _startup_lock(home):
        return _start_unlocked(home, auth)


def _start_unlocked(home: Path, auth: str) -> tuple[subprocess.Popen, str]:
    log = home / "server.log"
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        process = _spawn(home, port, auth, log)
        try:
            if _wait_ours(url, port, auth, process, log):
                return process, url
        except BaseException:
            _stop(process)
            raise
        _stop(process)  # lost the port to another process: it has exited; try another port
    raise DancegenError(f"prefect server lost its port to another process {START_ATTEMPTS} "
                        f"times; see {log}")


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
    auth = f"dancegen:{secrets.token_urlsafe(24)}"
    process, url = _start_server(home, auth)
    outer_auth = os.environ.get("PREFECT_API_AUTH_STRING")
    try:
        # inherited by the Ray workers this run starts
        os.environ.update(PREFECT_API_URL=url, PREFECT_API_AUTH_STRING=auth)
        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: auth}):
            yield url
    finally:
        _drain_prefect_clients()
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.pop("PREFECT_API_AUTH_STRING", None)
        if outer_auth is not None:
            os.environ["PREFECT_API_AUTH_STRING"] = outer_auth
        _stop(process)
