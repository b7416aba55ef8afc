"""Local writes of StoreLocation: whole or not at all, no temp file left behind when a write,
rename or link fails, and the mode the umask gives any new file (not 0600)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dancegen.storage.location import StoreLocation

KEY = "_x/doc.json"


def write_bytes(location: StoreLocation) -> None:
    location.write_bytes(KEY, b'{"v": 2}')


def create_json(location: StoreLocation) -> None:
    location.create_json("_x/new.json", {"v": 2})


def replace_json_if(location: StoreLocation) -> None:
    version = location.read_versioned(KEY)[1]
    assert location.replace_json_if(KEY, {"v": 2}, version)


WRITERS = {"write_bytes": write_bytes, "create_json": create_json,
           "replace_json_if": replace_json_if}


@pytest.fixture
def location(tmp_path: Path) -> StoreLocation:
    """A store holding one document, {"v": 1}, at KEY."""
    location = StoreLocation.parse(tmp_path / "store")
    location.write_json(KEY, {"v": 1})
    return location


def entries(location: StoreLocation) -> set[str]:
    """The folder's files, less the lock file that compare-and-swap keeps on purpose."""
    return {p.name for p in Path(location.path("_x")).iterdir() if not p.name.endswith(".lock")}


class FullDisk:
    """A file whose writes fail as on a full disk (the temp file exists by then)."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def failing(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make ``os.<name>`` fail; ``fdopen`` returns a file on a full disk."""
    if name == "fdopen":
        real = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real(fd, mode)))
        return

    def fail(*args: object) -> None:
        raise PermissionError(errno.EACCES, f"os.{name} failed (injected)")

    monkeypatch.setattr(os, name, fail)


@pytest.mark.parametrize(("writer", "fails"), [
    ("write_bytes", "replace"), ("write_bytes", "fdopen"), ("create_json", "link"),
    ("create_json", "fdopen"), ("replace_json_if", "replace"), ("replace_json_if", "fdopen"),
])
def test_a_failed_write_leaves_no_temp_file(location: StoreLocation,
                                             monkeypatch: pytest.MonkeyPatch,
                                             writer: str, fails: str) -> None:
    before = entries(location)
    failing(monkeypatch, fails)
    with pytest.raises(OSError, match=r"injected|No space left"):
        WRITERS[writer](location)
    monkeypatch.undo()
    assert entries(location) == before  # no temp file, no half-written target
    assert location.read_json(KEY) == {"v": 1}  # the old document is untouched


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for the test; the old one comes back afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["umask-022", "umask-077", "umask-002"])
def test_written_files_get_the_mode_the_umask_implies(tmp_path: Path, umask: Callable[[int], None],
                                                      writer: str, mask: int, mode: int) -> None:
    location = StoreLocation.parse(tmp_path / "store")
    location.write_json(KEY, {"v": 1})
    umask(mask)
    WRITERS[writer](location)
    written = Path(location.path("_x/new.json" if writer == "create_json" else KEY))
    assert stat.S_IMODE(written.stat().st_mode) == mode
    assert written.read_bytes().startswith(b"{")  # whole, and in place
