"""The CLI's processes: each command its own embedded Prefect server, and everything it started
(the server, the local Ray) gone with it, even after ``kill -9``.

Only processes these tests start are signalled: other Ray sessions run on this machine too.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from dancegen import local_prefect
from dancegen.local_prefect import prefect_api, serves_as_ours


def _environment() -> dict[str, str]:
    """This session's environment without a configured API: commands start their own server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        time.sleep(0.2)


def _kill_all(pids: list[int]) -> None:
    """Clean-up after a failed assertion: only the processes this test started."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the watchdog, with stand-in processes (fast) ---------------------------------------------

COMMAND = textwrap.dedent("""
    import subprocess, sys, time
    from pathlib import Path
    from dancegen import watchdog

    session = Path(sys.argv[1])  # stands in for a Ray session directory
    (session / "logs").mkdir(parents=True)
    def sleeper(log, **kwargs):
        with open(log, "w") as out:
            return subprocess.Popen(["sleep", "300"], stdout=out, **kwargs)
    group = sleeper("/dev/null", start_new_session=True)   # stands in for the Prefect server
    in_session = sleeper(session / "logs/worker.out")      # a Ray worker: logs in the session
    elsewhere = sleeper(Path(sys.argv[2]) / "other.out")   # another session's process
    watchdog.guard("group", group.pid)
    watchdog.guard("ray", str(session))
    if sys.argv[3] == "release":  # a clean command stopped it itself
        watchdog.release("group", group.pid)
        watchdog.release("ray", str(session))
    print(group.pid, in_session.pid, elsewhere.pid, watchdog._WATCHDOG.process
          and watchdog._WATCHDOG.process.pid, flush=True)
    time.sleep(300 if sys.argv[3] == "hold" else 0)
""")


def _command(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, list[int]]:
    process = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(tmp_path / "session"), str(tmp_path), mode],
        stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, [int(p) for p in process.stdout.readline().split() if p != "None"]


def test_the_watchdog_stops_what_a_killed_command_registered(tmp_path: Path) -> None:
    process, pids = _command(tmp_path, "hold")
    group, in_session, elsewhere, guard = pids
    try:
        assert not any(_gone(p) for p in pids)
        process.kill()  # SIGKILL: no clean-up of its own
        process.wait()
        _wait_until(lambda: _gone(group) and _gone(in_session) and _gone(guard), 15,
                    "the registered group and the session's process stopped")
        assert not _gone(elsewhere)  # a process of another session is left alone
    finally:
        _kill_all(pids)


def test_what_a_command_released_outlives_it_and_the_watchdog_exits(tmp_path: Path) -> None:
    process, pids = _command(tmp_path, "release")
    try:
        assert len(pids) == 3  # no watchdog left once nothing is registered
        assert process.wait(timeout=30) == 0
        time.sleep(1.0)  # what a watchdog would have stopped by now
        assert not any(_gone(p) for p in pids)
    finally:
        _kill_all(pids)


# --- the embedded Prefect server: one per command, known by its auth string -------------------

class _AnyPathOk(http.server.BaseHTTPRequestHandler):
    """A foreign server that answers 200 to everything (a health check must not be fooled)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _foreign_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnyPathOk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _first_port(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """The embedded server's first free-port choice is ``port`` (a lost race, forced)."""
    real, ports = local_prefect._free_port, iter([port])
    monkeypatch.setattr(local_prefect, "_free_port", lambda: next(ports, None) or real())


@pytest.mark.slow
def test_a_foreign_server_on_the_port_is_not_taken_for_ours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):
        monkeypatch.delenv(name, raising=False)
    with _foreign_server() as port:
        foreign = f"http://127.0.0.1:{port}/api"
        assert not serves_as_ours(foreign, "dancegen:anything")
        _first_port(monkeypatch, port)
        with prefect_api(tmp_path / "prefect") as url:
            auth = os.environ["PREFECT_API_AUTH_STRING"]
            assert urllib.parse.urlsplit(url).port != port  # moved on to a port of its own
            assert serves_as_ours(url, auth)  # refuses requests without the run's auth string
            assert not serves_as_ours(url, "dancegen:another-run")
    assert "PREFECT_API_URL" not in os.environ and "PREFECT_API_AUTH_STRING" not in os.environ


RUN_ONE_FLOW = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from prefect import flow
    from dancegen import local_prefect

    real, ports = local_prefect._free_port, iter([int(sys.argv[2])])
    local_prefect._free_port = lambda: next(ports, None) or real()  # both pick the same port

    @flow
    def ping() -> int:
        return 1

    with local_prefect.prefect_api(Path(sys.argv[1])) as url:
        state = ping(return_state=True)
        print(url, state.state_details.flow_run_id, state.name, flush=True)
        release = Path(sys.argv[3])  # each server stays up until all of them are
        while not release.exists():
            time.sleep(0.2)
""")


@pytest.mark.slow
def test_commands_started_at_once_each_get_their_own_server(tmp_path: Path) -> None:
    """Three at once, all trying one port first: two in one folder (one home: they start one
    after the other) and one in another folder, which races the first for the port."""
    port, release = local_prefect._free_port(), tmp_path / "release"
    homes = [tmp_path / "a/prefect", tmp_path / "a/prefect", tmp_path / "b/prefect"]
    commands = [subprocess.Popen(
        [sys.executable, "-c", RUN_ONE_FLOW, str(home), str(port), str(release)],
        env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for home in homes]
    try:
        lines = []
        for command in commands:
            assert command.stdout is not None
            lines.append(command.stdout.readline().split())  # "" when it failed
    finally:
        release.touch()
    results = [command.communicate(timeout=120) for command in commands]
    for command, (_, err) in zip(commands, results, strict=True):
        assert command.returncode == 0, err[-3000:]
    urls = {url for url, _, _ in lines}
    assert len(urls) == 3 and f"http://127.0.0.1:{port}/api" in urls  # one won, two moved on
    assert [state for _, _, state in lines] == ["Completed"] * 3
    for home in set(homes):
        with contextlib.closing(sqlite3.connect(home / "prefect.db")) as db:
            recorded = {row[0].replace("-", "") for row in
                        db.execute("SELECT id FROM flow_run WHERE state_name = 'Completed'")}
        runs = {run.replace("-", "") for (_, run, _), h in zip(lines, homes, strict=True)
                if h == home}
        assert runs <= recorded  # each run on record in its own folder's database


# --- kill -9 of a real command ----------------------------------------------------------------

def _lines(process: subprocess.Popen) -> queue.Queue[str]:
    """The command's output lines, read on a thread (a pipe read would block the test)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[str], text: str, seconds: float) -> None:
    deadline, seen = time.monotonic() + seconds, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} within {seconds:.0f} s: {''.join(seen)[-3000:]}")


def _family(pid: int) -> dict[int, str]:
    """The descendants of ``pid``: pid -> command line."""
    family = {}
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            family[child.pid] = " ".join(child.cmdline())
    return family


def _ray_running(family: dict[int, str]) -> bool:
    names = " ".join(family.values())
    return all(part in names for part in ("prefect server start", "gcs_server", "raylet",
                                          "dashboard/agent.py", "runtime_env/agent/main.py"))


@pytest.mark.slow
def test_kill_9_of_the_cli_takes_its_prefect_server_and_ray_along(fixtures_dir: Path,
                                                                   tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dancegen", "dataset", "build", "--inputs", str(fixtures_dir),
         "--out", str(tmp_path / "store.zarr")],
        cwd=tmp_path, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    family: dict[int, str] = {}

    def started_all() -> bool:
        family.update(_family(process.pid))
        return _ray_running(family)

    try:
        _wait_for_line(_lines(process), "Prefect API http://127.0.0.1:", 300)  # after ray.init
        _wait_until(started_all, 60, "the server, Ray's gcs_server, raylet and agents running")
        assert process.poll() is None, "the build ended before it could be killed"
        process.kill()
        process.wait()
        with contextlib.suppress(AssertionError):
            _wait_until(lambda: all(_gone(pid) for pid in family), 30, "all gone")
        survivors = {pid: line for pid, line in family.items() if not _gone(pid)}
        assert not survivors, f"left running 30 s after kill -9: {survivors}"
    finally:
        _kill_all(list(family))
