"""A lease on a store: one dataset build at a time, and a dead builder's lease expires.

Two builds started on the same store would both see the same shards pending and compute them
twice. The build therefore holds ``<store>/_lease/build.json`` while it runs: created with an
exclusive write (``O_EXCL``-style link locally, ``If-None-Match: *`` on S3), renewed by a
heartbeat thread, removed at the end. A second build waits for it (``storage.lease_wait_seconds``)
and then finds every shard complete.

Every change of the lease is a compare-and-swap on the version its writer last saw (S3:
``If-Match: <ETag>``; locally: compare and rename under an ``flock``): a renewal, a takeover, a
release. A holder that stalled and wakes up after a takeover therefore fails its renewal, sets
``lost`` and stops its build at the next unit; it never overwrites the new holder's lease, and
of two builds taking over one stale lease at once exactly one wins.

A lease is *stale*, and is taken over, when the waiter has seen the same version of it, with no
heartbeat, for ``storage.lease_ttl_seconds`` of its own monotonic clock (a holder that died on
another machine), or at once when its holder was a process on this machine that no longer runs
(a killed flow). Each renewal counts up ``beat``; the wall-clock times in the document are for
people only, so hosts whose clocks disagree neither take over a live lease nor wait forever for
a dead one.

Shard writes stay idempotent (one writer per shard, record after the data), so even a lease
lost to a stalled heartbeat costs duplicated work, never a corrupt shard.
"""

from __future__ import annotations

import contextlib
import json
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
_HELD_HERE: set[str] = set()  # tokens of the leases this process holds (or is taking) now


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _number(value: Any) -> float:
    """A number from a lease document, 0 for anything else (a damaged or foreign document)."""
    return float(value) if isinstance(value, int | float) else 0.0


def _parse(data: bytes) -> dict[str, Any]:
    """The lease document; a damaged one names no holder, and only the watch judges it."""
    try:
        document = json.loads(data)
    except ValueError:
        return {"owner": "a damaged lease document"}
    return document if isinstance(document, dict) else {"owner": "a damaged lease document"}


def stale_reason(holder: dict[str, Any], ttl_seconds: float,
                 unchanged_seconds: float) -> str | None:
    """Why a lease document no longer protects anything, or None while its holder is live.

    ``unchanged_seconds``: how long the caller has seen this very version of the lease, by its
    own monotonic clock. The document's wall-clock times are never compared with this host's.
    """
    if unchanged_seconds > ttl_seconds:
        return (f"no heartbeat seen for {unchanged_seconds:.0f} s of this machine's clock "
                f"(ttl {ttl_seconds:g} s)")
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0:
        if not _process_alive(pid):
            return f"its process {pid} on this machine is gone"
        if pid == os.getpid() and holder.get("token") not in _HELD_HERE:
            return "left behind by an earlier run in this process"
    return None


def describe(holder: dict[str, Any]) -> str:
    """Who holds a lease, for messages."""
    try:
        since = time.strftime("%H:%M:%S", time.localtime(_number(holder.get("acquired_at"))))
    except (OverflowError, OSError, ValueError):  # a damaged document's time
        since = "?"
    return (f"{holder.get('owner', '?')} (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"since {since})")


class _Watch:
    """How long a waiter has seen one version of the lease unchanged, by its monotonic clock."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.since = 0.0

    def unchanged_for(self, version: str) -> float:
        now = time.monotonic()
        if version != self.version:  # a heartbeat (or a new holder): start watching again
            self.version, self.since = version, now
        return now - self.since


_CHANGED: dict[str, Any] = {}  # from _attempt: the lease changed while we looked; try again


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
        self._beats = 0  # renewals so far: every document we write differs from the last
        self._version: str | None = None  # the lease's version as we last wrote it
        self._changing = threading.Lock()  # renew and release: one change at a time

    def _document(self) -> dict[str, Any]:
        return {"token": self.token, "owner": self.owner, "host": socket.gethostname(),
                "pid": os.getpid(), "acquired_at": self._acquired_at, "beat": self._beats,
                "heartbeat_at": time.time(), "ttl_seconds": self.ttl_seconds}

    def acquire(self, on_wait: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Take the lease, waiting up to ``wait_seconds`` for a live holder to finish."""
        deadline = time.monotonic() + self.wait_seconds
        watch = _Watch()
        # before any write: a thread of this process that reads our new lease must see it live
        _HELD_HERE.add(self.token)
        try:
            while (holder := self._attempt(watch)) is not None:
                if holder is not _CHANGED:
                    self._wait_for(holder, deadline, on_wait)
        except BaseException:
            _HELD_HERE.discard(self.token)
            raise
        self._start_heartbeat()

    def _attempt(self, watch: _Watch) -> dict[str, Any] | None:
        """One try: None once the lease is ours, else the live holder's document (or
        ``_CHANGED`` when the lease changed while we looked)."""
        self._beats, self._acquired_at = 0, time.time()
        self._version = self.location.create_json(self.key, self._document())
        if self._version is not None:
            return None
        seen = self.location.read_versioned(self.key)
        if seen is None:  # released between our create and the read
            return _CHANGED
        holder, version = _parse(seen[0]), seen[1]
        if holder.get("token") == self.token:  # our create landed, though its reply was lost
            self._version = version
            return None
        # the holder promised a heartbeat every quarter of its own ttl: never judge it by less
        ttl = max(self.ttl_seconds, _number(holder.get("ttl_seconds")))
        reason = stale_reason(holder, ttl, watch.unchanged_for(version))
        if reason is None:
            return holder
        self._version = self.location.replace_json_if(self.key, self._document(), version)
        if self._version is None:  # another build took it over, or it was released, first
            return _CHANGED
        self.took_over = f"{describe(holder)}: {reason}"
        return None

    def _wait_for(self, holder: dict[str, Any], deadline: float,
                  on_wait: Callable[[dict[str, Any]], None] | None) -> None:
        if time.monotonic() >= deadline:
            raise StoreError(
                f"{self.location.url} is being built by {describe(holder)}; waited "
                f"{self.wait_seconds:.0f} s (storage.lease_wait_seconds). If it died, its lease "
                f"is taken over once no heartbeat of it has been seen for "
                f"{self.ttl_seconds:g} s (storage.lease_ttl_seconds).")
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
        """Refresh the heartbeat, unless the lease was taken over (then ``lost`` says why).

        A compare-and-swap on the version we last wrote: a holder that stalled past the ttl
        and was taken over fails here, and never overwrites the new holder's lease.
        """
        with self._changing:
            if self._version is None:
                return
            self._beats += 1
            version = self.location.replace_json_if(self.key, self._document(), self._version)
            self._version = version if version is not None else self._ours_after_all()

    def _ours_after_all(self) -> str | None:
        """After a failed renewal: the lease's version if it is still ours (an earlier renewal
        landed though its reply was lost), else None, with ``lost`` saying who has it."""
        seen = self.location.read_versioned(self.key)
        holder = {} if seen is None else _parse(seen[0])
        if seen is not None and holder.get("token") == self.token:
            return seen[1]
        self.lost = "the lease was removed" if seen is None else \
            f"the lease was taken over by {describe(holder)}"
        self._stop.set()
        return None

    def check(self) -> None:
        """Raise if the lease was lost (a stalled build whose heartbeat expired)."""
        if self.lost is not None:
            raise StoreError(f"{self.location.url}: {self.lost}; stopping this build")

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours (unchanged since our
        last write).

        Never raises: on an unreachable store the lease stays and expires (or is seen as
        stale by the next build on this machine), and the build's own error is what counts.
        """
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        _HELD_HERE.discard(self.token)
        with self._changing, contextlib.suppress(Exception):
            if self._version is not None:
                self.location.delete_if(self.key, self._version)
            self._version = None
