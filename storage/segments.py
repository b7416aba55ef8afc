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


def to_columns(segments: list[Segment | None]) -> dict[str, list[Any]]:
    """Column-oriented form stored in the version group's attributes (None: a padding row)."""
    rows = [asdict(s) if s is not None else dict.fromkeys(COLUMNS) for s in segments]
    return {name: [row[name] for row in rows] for name in COLUMNS}


def from_columns(columns: dict[str, list[Any]]) -> list[Segment | None]:
    """Inverse of :func:`to_columns`."""
    if not columns:
        return []
    count = len(columns["id"])
    return [None if columns["id"][i] is None else
            Segment(**{name: columns[name][i] for name in COLUMNS}) for i in range(count)]


@dataclass(frozen=True)
class SegmentTable:
    """The rows of a dataset version; row i describes index i of every array.

    Rows are append-only, so a shard, once complete, is never rewritten and a snapshot of the
    version stays readable while later builds run. ``rows[i]`` is the segment assigned to row
    i when it was added, ``None`` for a padding row (new segments start a new shard);
    ``dead`` are tombstoned rows: their segment was removed, or changed and appended anew.
    """

    rows: tuple[Segment | None, ...] = ()
    dead: frozenset[int] = frozenset()

    @classmethod
    def of(cls, segments: list[Segment]) -> SegmentTable:
        """A fresh table of ``segments`` in order."""
        return cls(tuple(segments))

    def live(self) -> list[tuple[int, Segment]]:
        """(row, segment) of every live row, in row order."""
        return [(i, s) for i, s in enumerate(self.rows) if s is not None and i not in self.dead]

    def live_segments(self) -> list[Segment]:
        """The live segments, in row order."""
        return [s for _, s in self.live()]

    def assigned(self, rows: range) -> list[Segment]:
        """The segments once assigned to ``rows``, tombstoned ones included, padding not:
        what a shard of these rows was built from (its key), whatever was removed since."""
        return [s for s in self.rows[rows.start:rows.stop] if s is not None]

    def is_live(self, row: int) -> bool:
        """Whether row ``row`` holds a live segment."""
        return self.rows[row] is not None and row not in self.dead

    def shard_rows(self, shard_segments: int) -> list[range]:
        """Rows of each shard."""
        return shard_ranges(len(self.rows), shard_segments)

    def to_attrs(self) -> dict[str, Any]:
        """The table as JSON-able attributes."""
        return {"segments": to_columns(list(self.rows)), "dead": sorted(self.dead)}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> SegmentTable:
        """Inverse of :meth:`to_attrs`."""
        return cls(tuple(from_columns(attrs.get("segments", {}))),
                   frozenset(attrs.get("dead", [])))


def assign_rows(previous: SegmentTable, planned: list[Segment], shard_segments: int,
                stale_rows: frozenset[int] = frozenset()) -> SegmentTable:
    """The table for ``planned`` given the one in the store: rows are never moved or reused.

    A live row stays live while its segment is planned unchanged (same windows and input
    digests) and it is not in ``stale_rows`` (its shard was built from other inputs or config
    and must not be rewritten under a snapshot). Every other previous row is tombstoned.
    Planned segments without a live row are appended in plan order, from the next shard
    boundary, so that no complete shard changes: removing a sequence computes nothing,
    adding one computes only the new shards.
    """
    wanted = {s.id: s for s in planned}
    dead, kept = set(previous.dead), set()
    for row, segment in enumerate(previous.rows):
        if segment is None or row in dead:
            continue
        if wanted.get(segment.id) == segment and row not in stale_rows:
            kept.add(segment.id)
        else:
            dead.add(row)
    new = [s for s in planned if s.id not in kept]
    rows = list(previous.rows)
    if new and len(rows) % shard_segments:
        rows += [None] * (shard_segments - len(rows) % shard_segments)
    return SegmentTable(tuple(rows + new), frozenset(dead))


def shard_ranges(count: int, shard_segments: int) -> list[range]:
    """Row ranges of each shard: consecutive blocks of ``shard_segments`` rows."""
    return [range(i, min(i + shard_segments, count)) for i in range(0, count, shard_segments)]
