"""A lease on a store: one dataset build at a time, and a dead builder's lease expires.

Two builds started on the same store would both see the same shards pending and compute them
twice. The build therefore holds ``<store>/_lease/build.json`` while it runs: created with an
exclusive write (``O_EXCL``-style link locally, ``If-None-Match: *`` on S3), renewed by a
heartbeat thread, removed at the end. A second build waits for it (``storage.lease_wait_seconds``)
and then finds every shard complete. A lease is *stale*, and is taken over, when its heartbeat
is older than ``storage.lease_ttl_seconds`` (a holder that died on another machine), or when its
holder was a process on this machine that no longer runs (a killed flow: no need to wait).

Shard writes stay idempotent (one writer per shard, record after the data), so even a lease
lost to a stalled heartbeat costs duplicated work, never a corrupt shard.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from dancegen.errors import StoreError
from dancegen.storage.location import StoreLocation

BUILD_LEASE = "_lease/build.json"
_HELD_HERE: set[str] = set()  # tokens of the leases this process holds right now


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def stale_reason(holder: dict[str, Any], ttl_seconds: float, now: float) -> str | None:
    """Why a lease document no longer protects anything, or None while its holder is live."""
    age = now - float(holder.get("heartbeat_at", 0))
    if age > ttl_seconds:
        return f"no heartbeat for {age:.0f} s (ttl {ttl_seconds:.0f} s)"
    if holder.get("host") == socket.gethostname():
        pid = int(holder.get("pid", -1))
        if not _process_alive(pid):
            return f"its process {pid} on this machine is gone"
        if pid == os.getpid() and holder.get("token") not in _HELD_HERE:
            return "left behind by an earlier run in this process"
    return None


def describe(holder: dict[str, Any]) -> str:
    """Who holds a lease, for messages."""
    return (f"{holder.get('owner', '?')} (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"since {time.strftime('%H:%M:%S', time.localtime(holder.get('acquired_at', 0)))})")


class StoreLease:
    """An exclusive, expiring lease on one key of a store: ``acquire``, then ``release``."""

    def __init__(self, location: StoreLocation, owner: str, ttl_seconds: float,
                 wait_seconds: float, key: str = BUILD_LEASE, poll_seconds: float = 1.0) -> None:
        self.location, self.key, self.owner = location, key, owner
        self.ttl_seconds = ttl_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.token = uuid.uuid4().hex
        self.lost: str | None = None  # set by the heartbeat when another holder took over
        self.waited_for: list[str] = []  # holders waited for, for the flow's log
        self.took_over: str | None = None  # the stale holder replaced, with the reason
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._acquired_at = 0.0

    def _document(self) -> dict[str, Any]:
        return {"token": self.token, "owner": self.owner, "host": socket.gethostname(),
                "pid": os.getpid(), "acquired_at": self._acquired_at,
                "heartbeat_at": time.time(), "ttl_seconds": self.ttl_seconds}

    def acquire(self, on_wait: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Take the lease, waiting up to ``wait_seconds`` for a live holder to finish."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            self._acquired_at = time.time()
            if self.location.create_json(self.key, self._document()):
                _HELD_HERE.add(self.token)
                self._start_heartbeat()
                return
            holder = self.location.read_json(self.key)
            if holder is None:  # released between our attempt and the read: try again
                continue
            reason = stale_reason(holder, self.ttl_seconds, time.time())
            if reason is not None:
                self.took_over = f"{describe(holder)}: {reason}"
                self.location.delete(self.key)
                continue
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"{self.location.url} is being built by {describe(holder)}; waited "
                    f"{self.wait_seconds:.0f} s (storage.lease_wait_seconds). Its lease expires "
                    f"{self.ttl_seconds:.0f} s after its last heartbeat if it died.")
            if describe(holder) not in self.waited_for:
                self.waited_for.append(describe(holder))
                if on_wait is not None:
                    on_wait(holder)
            time.sleep(self.poll_seconds)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="store-lease-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 4):
            with contextlib.suppress(Exception):  # a store hiccup: the next beat tries again
                self.renew()

    def renew(self) -> None:
        """Refresh the heartbeat, unless the lease was taken over (then ``lost`` says why)."""
        holder = self.location.read_json(self.key)
        if holder is None or holder.get("token") != self.token:
            self.lost = ("the lease was taken over by " + describe(holder)) if holder else \
                "the lease was removed"
            self._stop.set()
            return
        self.location.write_json(self.key, self._document())

    def check(self) -> None:
        """Raise if the lease was lost (a stalled build whose heartbeat expired)."""
        if self.lost is not None:
            raise StoreError(f"{self.location.url}: {self.lost}; stopping this build")

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours.

        Never raises: on an unreachable store the lease stays and expires (or is seen as
        stale by the next build on this machine), and the build's own error is what counts.
        """
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        _HELD_HERE.discard(self.token)
        with contextlib.suppress(Exception):
            holder = self.location.read_json(self.key)
            if holder is not None and holder.get("token") == self.token:
                self.location.delete(self.key)
