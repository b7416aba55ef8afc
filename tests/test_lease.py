"""The store lease: exclusive on a local disk and on S3, waits for a live holder, takes over a
dead one's, and never removes another holder's lease."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

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
    now = time.time()
    here = {"host": socket.gethostname(), "pid": 1, "token": "t", "heartbeat_at": now}
    assert stale_reason(here, 60, now) is None  # pid 1 is alive
    assert "no heartbeat for 120 s" in stale_reason({**here, "heartbeat_at": now - 120}, 60, now)
    elsewhere = {**here, "host": "another-machine", "pid": 999_999_999}
    assert stale_reason(elsewhere, 60, now) is None  # another machine: only the TTL counts


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
