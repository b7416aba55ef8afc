"""The segment table: what each row of every per-segment array is, and where it came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

SOURCES = ("aistpp", "synthetic", "edge")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Segment:
    """One fixed-length window of a dance sequence and its music.

    ``source`` is ``aistpp`` for real AIST++ motion, ``synthetic`` for the procedural stand-in
    written by ``dancegen fixtures`` and ``edge`` for pseudo-motions. File paths are relative to
    the inputs root; the sha256 digests make a changed input visible to the shard records.
    """

    id: str
    sequence: str
    source: str
    split: str
    window: int
    start_s: float
    end_s: float
    music_file: str
    music_sha256: str
    motion_file: str
    motion_sha256: str
    motion_fps: float

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"segment {self.id}: source {self.source!r} not in {SOURCES}")
        if self.split not in SPLITS:
            raise ValueError(f"segment {self.id}: split {self.split!r} not in {SPLITS}")


COLUMNS = tuple(f.name for f in fields(Segment))


def segment_id(sequence: str, window: int) -> str:
    """Stable id of a window: the sequence name and the window number."""
    return f"{sequence}@{window:04d}"


def to_columns(segments: list[Segment]) -> dict[str, list[Any]]:
    """Column-oriented form stored in the version group's attributes."""
    rows = [asdict(s) for s in segments]
    return {name: [row[name] for row in rows] for name in COLUMNS}


def from_columns(columns: dict[str, list[Any]]) -> list[Segment]:
    """Inverse of :func:`to_columns`."""
    if not columns:
        return []
    count = len(columns["id"])
    return [Segment(**{name: columns[name][i] for name in COLUMNS}) for i in range(count)]


def stable_order(previous: list[Segment], planned: list[Segment]) -> list[Segment]:
    """Order ``planned`` so that rows already in the store keep their index.

    Segments of the previous table that are still planned keep their relative order at the
    front (their shards stay valid when their inputs did not change); new segments follow in
    plan order. Only a removed segment shifts the rows after it, and the shard records catch
    that because a shard's key covers its segment ids.
    """
    by_id = {s.id: s for s in planned}
    kept = [by_id[s.id] for s in previous if s.id in by_id]
    kept_ids = {s.id for s in kept}
    return kept + [s for s in planned if s.id not in kept_ids]


def shard_ranges(count: int, shard_segments: int) -> list[range]:
    """Row ranges of each shard: consecutive blocks of ``shard_segments`` rows."""
    return [range(i, min(i + shard_segments, count)) for i in range(0, count, shard_segments)]
