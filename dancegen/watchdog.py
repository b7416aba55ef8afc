"""What a dancegen command starts dies with it, even when the command is killed with SIGKILL.

A command that starts long-lived helpers (the embedded Prefect server, a local Ray) starts one
small watchdog process first: ``python -m dancegen.watchdog``, in a session of its own (Ctrl-C
and a closing terminal do not reach it). Its stdin is a pipe whose only writer is the command
(Python's file descriptors are not inherited across exec), and the command registers on it what
the watchdog must stop:

    +group PGID        a process group (the Prefect server runs in its own session)
    +ray SESSION_DIR   a local Ray session: every process with a file open under its directory
                       (gcs_server, raylet, dashboard, agents, workers: each writes its logs there)
    -group PGID / -ray SESSION_DIR   stopped by the command itself: forget it

When the command exits in any way the pipe reaches end of file and the watchdog stops what is
still registered: SIGTERM, then SIGKILL for what is left after a grace period. A clean command
releases everything first, so its watchdog exits without touching anything. Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["group", "ray"]
KINDS: tuple[Kind, ...] = ("group", "ray")
GRACE_S = 5.0  # SIGTERM to SIGKILL: time for the Prefect server and Ray to stop cleanly


# --- the watchdog process ---------------------------------------------------------------------

def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie is dead: its parent is gone and nobody may reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def session_pids(session_dir: str) -> set[int]:
    """The processes (other than this one) with a file open under ``session_dir``."""
    prefix, own, found = session_dir.rstrip("/") + "/", os.getpid(), set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:  # gone, or not ours to inspect
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry.name}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                found.add(int(entry.name))
                break
    return found


def _signal(pids: Iterable[int], groups: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, sig)
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, sig)


def stop(groups: set[int], sessions: set[str]) -> int:
    """Stop the process groups and the Ray sessions' processes; returns how many were running.

    Group ids are their leaders' pids (start_new_session). SIGKILL goes only to leaders still
    running and to processes found in the sessions again, never to a pid that may have been
    reused meanwhile."""
    pids = set().union(*(session_pids(s) for s in sessions))
    running = {g for g in groups if _alive(g)} | pids
    _signal(pids, groups, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_alive(p) for p in running):
        time.sleep(0.1)
    _signal(set().union(*(session_pids(s) for s in sessions)),
            {g for g in groups if _alive(g)}, signal.SIGKILL)
    return len(running)


def main() -> None:
    """Read registrations from stdin until end of file, then stop what is still registered."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    registered: dict[str, set[str]] = {kind: set() for kind in KINDS}
    parent = os.getppid()
    for line in sys.stdin:
        sign, _, rest = line.rstrip("\n").partition(" ")
        kind, target = sign[1:], rest
        if sign[:1] == "+" and kind in registered:
            registered[kind].add(target)
        elif sign[:1] == "-" and kind in registered:
            registered[kind].discard(target)
    if not any(registered.values()):
        return
    stopped = stop({int(g) for g in registered["group"]}, registered["ray"])
    if stopped:
        print(f"dancegen watchdog: command {parent} is gone; stopped the {stopped} processes it "
              "left (embedded Prefect server, local Ray)", file=sys.stderr)


# --- the command's side -----------------------------------------------------------------------

@dataclass
class _Watchdog:
    """This process's watchdog: started on the first registration, ended with the last."""

    process: subprocess.Popen | None = None
    registered: set[tuple[str, str]] = field(default_factory=set)

    def send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dancegen.watchdog"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, start_new_session=True)

    def close(self) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()  # nothing registered: it exits without stopping anything
        self.process.wait(timeout=10)
        self.process = None


_WATCHDOG = _Watchdog()


def guard(kind: Kind, target: str | int) -> None:
    """Have the watchdog stop ``target`` (a process group id, or a local Ray session's
    directory) if this process ends before calling :func:`release` for it."""
    if _WATCHDOG.process is None:
        _WATCHDOG.start()
    _WATCHDOG.registered.add((kind, str(target)))
    _WATCHDOG.send(f"+{kind} {target}")


def release(kind: Kind, target: str | int) -> None:
    """``target`` was stopped by this process: the watchdog forgets it (and exits when it
    guards nothing more)."""
    if (kind, str(target)) not in _WATCHDOG.registered:
        return
    _WATCHDOG.registered.discard((kind, str(target)))
    _WATCHDOG.send(f"-{kind} {target}")
    if not _WATCHDOG.registered:
        _WATCHDOG.close()


if __name__ == "__main__":
    main()
