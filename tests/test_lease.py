"""The store lease: exclusive on a local disk and on S3, waits for a live holder, takes over a
dead one's, and never removes another holder's lease. Every change is a compare-and-swap: a
stalled holder that wakes up after a takeover cannot renew, and of racing takeovers one wins.
Staleness is judged by the waiter's own monotonic clock, whatever the holder's clock says."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from dancegen.errors import StoreError
from dancegen.storage.lease import BUILD_LEASE, StoreLease, stale_reason
from dancegen.storage.location import StoreLocation


def lease(location: StoreLocation, owner: str, wait: float = 0.0,
          ttl: float = 60.0) -> StoreLease:
    return StoreLease(location, owner, ttl_seconds=ttl, wait_seconds=wait, poll_seconds=0.05)


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path) -> StoreLocation:
    if request.param == "local":
        return StoreLocation.parse(tmp_path / "store.zarr")
    return StoreLocation.parse(f"{request.getfixturevalue('s3_bucket')}/store.zarr")


def test_create_json_is_exclusive(location: StoreLocation) -> None:
    assert location.create_json("_lease/x.json", {"n": 1})
    assert not location.create_json("_lease/x.json", {"n": 2})
    assert location.read_json("_lease/x.json") == {"n": 1}


def test_a_live_lease_makes_the_next_builder_wait_then_fail_clearly(
        location: StoreLocation) -> None:
    first = lease(location, "flow run first")
    first.acquire()
    waited = []
    second = lease(location, "flow run second", wait=0.3)
    with pytest.raises(StoreError, match=r"being built by flow run first .*waited 0 s"):
        second.acquire(on_wait=waited.append)
    assert [holder["owner"] for holder in waited] == ["flow run first"]  # told once
    first.release()
    second.acquire()  # free now
    assert location.read_json(BUILD_LEASE)["owner"] == "flow run second"
    first.release()  # not first's any more: must leave second's lease alone
    assert location.read_json(BUILD_LEASE)["token"] == second.token
    second.release()
    assert location.read_json(BUILD_LEASE) is None


def test_a_dead_holders_lease_is_taken_over(tmp_path) -> None:
    location = StoreLocation.parse(tmp_path / "store.zarr")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    location.create_json(BUILD_LEASE, {"token": "t", "owner": "killed build",
                                       "host": socket.gethostname(), "pid": int(gone.stdout),
                                       "acquired_at": time.time(), "heartbeat_at": time.time()})
    taker = lease(location, "re-run")
    taker.acquire()
    assert taker.took_over and "killed build" in taker.took_over and "is gone" in taker.took_over
    taker.release()


def test_staleness_rules() -> None:
    here = {"host": socket.gethostname(), "pid": 1, "token": "t", "heartbeat_at": 0.0}
    assert stale_reason(here, 60, 0) is None  # pid 1 is alive; the wall-clock time is ignored
    assert "no heartbeat seen for 120 s" in stale_reason(here, 60, 120)
    elsewhere = {**here, "host": "another-machine", "pid": 999_999_999}
    assert stale_reason(elsewhere, 60, 59) is None  # another machine: only the watch counts
    assert stale_reason({"owner": "a damaged lease document"}, 60, 0) is None


def test_heartbeat_renews_and_notices_a_takeover(tmp_path) -> None:
    location = StoreLocation.parse(tmp_path / "store.zarr")
    holder = lease(location, "slow build", ttl=0.4)
    holder.acquire()
    first_beat = location.read_json(BUILD_LEASE)["heartbeat_at"]
    time.sleep(0.25)
    assert location.read_json(BUILD_LEASE)["heartbeat_at"] > first_beat  # renewed
    location.write_json(BUILD_LEASE, {**location.read_json(BUILD_LEASE), "token": "other"})
    time.sleep(0.25)
    with pytest.raises(StoreError, match="taken over"):
        holder.check()
    holder.release()
    assert location.read_json(BUILD_LEASE)["token"] == "other"  # never removes another's


def test_compare_and_swap_on_a_version(location: StoreLocation) -> None:
    key = "_lease/cas.json"
    first = location.create_json(key, {"n": 1})
    assert first and location.read_versioned(key)[1] == first
    second = location.replace_json_if(key, {"n": 2}, first)
    assert second and second != first
    assert location.replace_json_if(key, {"n": 3}, first) is None  # not the version seen
    assert not location.delete_if(key, first)
    assert location.read_json(key) == {"n": 2}
    assert location.delete_if(key, second)
    assert location.read_json(key) is None and location.read_versioned(key) is None
    assert location.replace_json_if(key, {"n": 4}, second) is None  # gone: nothing to swap
    assert not location.delete_if(key, second)
    assert location.read_json(key) is None


def stall_renewals(monkeypatch: pytest.MonkeyPatch, holder: StoreLease) -> threading.Event:
    """Freeze ``holder``'s renewals just before their write reaches the store, as a process
    that stalls there would be; set the event to let the pending write go."""
    thaw, replace = threading.Event(), StoreLocation.replace_json_if

    def stalled(self: StoreLocation, key: str, document: dict, version: str) -> str | None:
        if document["token"] == holder.token:
            thaw.wait(10)
        return replace(self, key, document, version)

    monkeypatch.setattr(StoreLocation, "replace_json_if", stalled)
    return thaw


def wait_until(condition: Callable[[], object], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_stalled_holder_that_wakes_after_a_takeover_cannot_renew(
        location: StoreLocation, monkeypatch: pytest.MonkeyPatch) -> None:
    stalled = lease(location, "stalled build", ttl=0.3)
    thaw = stall_renewals(monkeypatch, stalled)
    stalled.acquire()  # its first renewal, 0.075 s later, hangs with its write pending
    taker = lease(location, "next build", wait=10, ttl=0.3)
    started = time.monotonic()
    taker.acquire()
    assert time.monotonic() - started >= 0.3  # watched it unchanged for the ttl first
    assert "stalled build" in taker.took_over and "no heartbeat seen" in taker.took_over
    thaw.set()  # the stalled process wakes up: its pending renewal is written now
    wait_until(lambda: stalled.lost)
    assert "taken over by next build" in stalled.lost
    with pytest.raises(StoreError, match=r"taken over by next build.*stopping this build"):
        stalled.check()
    stalled.release()
    assert location.read_json(BUILD_LEASE)["token"] == taker.token  # never overwritten
    taker.release()
    assert location.read_json(BUILD_LEASE) is None


def all_read_before_any_writes(monkeypatch: pytest.MonkeyPatch, racers: int,
                               serialize_writes: bool) -> None:
    """Make racing takers all read the same stale lease before any of them writes."""
    barrier, first, writes = threading.Barrier(racers), threading.local(), threading.Lock()
    read, replace = StoreLocation.read_versioned, StoreLocation.replace_json_if

    def read_then_wait(self: StoreLocation, key: str) -> tuple[bytes, str] | None:
        seen = read(self, key)
        if not getattr(first, "done", False):
            first.done = True
            barrier.wait(timeout=30)
        return seen

    def one_at_a_time(self: StoreLocation, *args: object) -> str | None:
        with writes:
            return replace(self, *args)

    monkeypatch.setattr(StoreLocation, "read_versioned", read_then_wait)
    if serialize_writes:
        monkeypatch.setattr(StoreLocation, "replace_json_if", one_at_a_time)


def dead_lease(location: StoreLocation, **fields: object) -> None:
    """A lease left by a build process of this machine that no longer runs."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert location.create_json(BUILD_LEASE, {
        "token": "dead", "owner": "killed build", "host": socket.gethostname(),
        "pid": int(gone.stdout), "acquired_at": time.time(), "heartbeat_at": time.time(),
        **fields})


def race(takers: list[StoreLease]) -> list[StoreLease]:
    """Each taker acquires in its own thread at once; the ones that got the lease."""
    won: list[StoreLease] = []
    errors: list[BaseException] = []

    def take(taker: StoreLease) -> None:
        try:
            taker.acquire()
            won.append(taker)
        except StoreError as error:
            errors.append(error)

    threads = [threading.Thread(target=take, args=(taker,)) for taker in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(won) + len(errors) == len(takers)
    assert all("being built by" in str(error) for error in errors)
    return won


def test_racing_takeovers_of_a_stale_lease_exactly_one_wins(
        location: StoreLocation, monkeypatch: pytest.MonkeyPatch) -> None:
    racers = 6
    # moto checks If-Match and then writes, without a lock (real S3 is atomic): on S3 the
    # takeovers are made one at a time, but each still with the stale version all of them read
    all_read_before_any_writes(monkeypatch, racers, serialize_writes=not location.is_local)
    dead_lease(location)
    takers = [lease(location, f"build {n}", wait=0.3) for n in range(racers)]
    won = race(takers)
    assert len(won) == 1
    assert location.read_json(BUILD_LEASE)["token"] == won[0].token
    assert "killed build" in won[0].took_over
    for taker in takers:
        if taker is not won[0]:
            taker.release()  # the losers' releases leave the winner's lease alone
    assert location.read_json(BUILD_LEASE)["token"] == won[0].token
    won[0].release()
    assert location.read_json(BUILD_LEASE) is None


def test_racing_takeovers_locally_without_help(tmp_path) -> None:
    """Threads race freely (no barrier), round after round: never two holders."""
    location = StoreLocation.parse(tmp_path / "store.zarr")
    for round_ in range(4):
        dead_lease(location)
        takers = [lease(location, f"build {round_}.{n}", wait=0.2) for n in range(6)]
        won = race(takers)
        assert len(won) == 1
        assert location.read_json(BUILD_LEASE)["token"] == won[0].token
        for taker in takers:
            taker.release()
        assert location.read_json(BUILD_LEASE) is None


def skewed_clock(monkeypatch: pytest.MonkeyPatch, skew: float,
                 threads: set[str]) -> Callable[[], float]:
    """``time.time`` off by ``skew`` seconds in the named threads only (another host)."""
    real = time.time

    def clock() -> float:
        return real() + (skew if threading.current_thread().name in threads else 0.0)

    monkeypatch.setattr(time, "time", clock)
    return real


@pytest.mark.parametrize("skew", [-1e6, 1e6], ids=["holder-clock-behind", "holder-clock-ahead"])
def test_a_live_holder_with_a_skewed_clock_is_never_taken_over(
        tmp_path, monkeypatch: pytest.MonkeyPatch, skew: float) -> None:
    location = StoreLocation.parse(tmp_path / "store.zarr")
    skewed_clock(monkeypatch, skew, {"holder", "store-lease-heartbeat"})
    holder = lease(location, "live build", ttl=0.3)
    acquiring = threading.Thread(target=holder.acquire, name="holder")
    acquiring.start()
    acquiring.join()
    beat = location.read_json(BUILD_LEASE)
    assert abs(beat["heartbeat_at"] - time.time() - skew) < 60  # the holder's clock is off
    waiter = lease(location, "next build", wait=1.0, ttl=0.3)
    with pytest.raises(StoreError, match="being built by live build"):
        waiter.acquire()
    assert location.read_json(BUILD_LEASE)["token"] == holder.token
    assert location.read_json(BUILD_LEASE)["beat"] > beat["beat"]  # it kept beating
    assert holder.lost is None and waiter.took_over is None
    holder.release()


@pytest.mark.parametrize("skew", [-1e6, 1e6], ids=["holder-clock-behind", "holder-clock-ahead"])
def test_a_dead_holder_with_a_skewed_clock_is_taken_over_after_the_ttl(
        tmp_path, skew: float) -> None:
    location = StoreLocation.parse(tmp_path / "store.zarr")
    location.create_json(BUILD_LEASE, {
        "token": "t", "owner": "build on a dead host", "host": "another-machine", "pid": 12,
        "acquired_at": time.time() + skew, "heartbeat_at": time.time() + skew, "beat": 7,
        "ttl_seconds": 0.3})
    taker = lease(location, "re-run", wait=10, ttl=0.3)
    started = time.monotonic()
    taker.acquire()
    waited = time.monotonic() - started
    assert 0.3 <= waited < 3  # watched it for the ttl, by this machine's clock, then took it
    assert "build on a dead host" in taker.took_over and "no heartbeat seen" in taker.took_over
    assert location.read_json(BUILD_LEASE)["token"] == taker.token
    taker.release()


def test_a_holder_advertising_a_longer_ttl_is_judged_by_it(tmp_path) -> None:
    """A holder beats every quarter of its own ttl: a waiter with a shorter one must not take
    over between two of its beats."""
    location = StoreLocation.parse(tmp_path / "store.zarr")
    location.create_json(BUILD_LEASE, {"token": "t", "owner": "slow beater", "host": "other",
                                       "pid": 12, "ttl_seconds": 600})
    with pytest.raises(StoreError, match="being built by slow beater"):
        lease(location, "impatient", wait=0.5, ttl=0.1).acquire()
    assert location.read_json(BUILD_LEASE)["token"] == "t"


@pytest.mark.parametrize("content", [
    b"\x00garbage{", b"[1, 2]",
    b'{"acquired_at": 1e300, "pid": "x", "host": null, "ttl_seconds": "lots"}',
], ids=["not-json", "not-an-object", "junk-fields"])
def test_a_damaged_lease_document_is_taken_over_after_the_ttl(tmp_path, content: bytes) -> None:
    location = StoreLocation.parse(tmp_path / "store.zarr")
    location.write_bytes(BUILD_LEASE, content)
    taker = lease(location, "re-run", wait=10, ttl=0.2)
    started = time.monotonic()
    taker.acquire()
    assert time.monotonic() - started >= 0.2
    assert "no heartbeat seen" in taker.took_over
    assert location.read_json(BUILD_LEASE)["token"] == taker.token
    taker.release()


def test_a_write_whose_reply_was_lost_still_counts(tmp_path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """s3fs retries a PUT whose reply timed out; the retry's 412 must not make the writer
    think another build holds the lease (it would wait for itself) or lost it."""
    location = StoreLocation.parse(tmp_path / "store.zarr")
    create, replace = StoreLocation.create_json, StoreLocation.replace_json_if
    monkeypatch.setattr(StoreLocation, "create_json",
                        lambda self, key, doc: create(self, key, doc) and None)
    monkeypatch.setattr(StoreLocation, "replace_json_if",
                        lambda self, key, doc, version: replace(self, key, doc, version) and None)
    holder = lease(location, "unlucky build", ttl=60)
    holder.acquire()  # would time out waiting for itself
    assert holder.took_over is None and holder.waited_for == []
    holder.renew()
    holder.renew()
    assert holder.lost is None and location.read_json(BUILD_LEASE)["beat"] == 2
    holder.release()
    assert location.read_json(BUILD_LEASE) is None
