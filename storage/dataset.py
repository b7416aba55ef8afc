"""One dataset version in a store: its Zarr v3 group, segment table, shards and their records.

Writers: the flow driver alone creates groups and arrays, resizes them and writes the segment
table (:meth:`DatasetStore.prepare`); each shard of each stage is then written by exactly one
task (:meth:`DatasetStore.write_shard`), which writes every array of its stage for its rows and
only then the shard's completion record. A shard is complete exactly when its record exists.
Rows are append-only (storage/segments.py), so a complete shard is never rewritten by a build:
only a shard without a record (never finished, or dropped as damaged by ``verify --repair``)
is written, and a partially written shard can never be read as complete.

Layout below the store root (see docs/data-contract.md)::

    zarr.json                         root group; attrs["dancegen"]["versions"]
    <version>/zarr.json               version group; attrs["dancegen"] incl. the segment table
    <version>/<array path>/...        Zarr v3 sharded arrays (chunk = a few frames of a segment)
    <version>/_records/<stage>/<shard>.json   completion record of one shard
    <version>/_snapshots/<id>.json            an immutable snapshot (storage/snapshot.py)
    <version>/_failures/<unit>.json           last failure of a unit, with its reason
                                              (long unit ids: shortened, see unit_file_name)
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
import zarr
import zarr.codecs

from dancegen.errors import StoreError
from dancegen.storage.contract import ARRAYS, CONTRACT_VERSION, ArraySpec, arrays_of
from dancegen.storage.location import StoreLocation
from dancegen.storage.paths import safe_name
from dancegen.storage.segments import Segment, SegmentTable, shard_ranges

RECORDS = "_records"
FAILURES = "_failures"
# File systems allow 255 bytes per name (some, e.g. eCryptfs, fewer): unit ids are built from
# names found in the inputs and the store, so longer file names are shortened (with a hash).
MAX_NAME_BYTES = 200
MAX_REASON_CHARS = 600  # a reason is read in logs, the CLI and a markdown table


def _record_key(stage: str, shard: int) -> str:
    return f"{RECORDS}/{stage}/{shard:06d}.json"


def unit_file_name(unit: str, suffix: str = ".json") -> str:
    """File name of a per-unit document: the unit id with ``/`` as ``--``, and when that is
    longer than :data:`MAX_NAME_BYTES`, its start plus a hash of the whole id (unique, and
    short enough for any file system). Documents keep the full id inside."""
    name = unit.replace("/", "--")
    if len((name + suffix).encode()) <= MAX_NAME_BYTES:
        return name + suffix  # short names as before: records of existing stores stay found
    digest = hashlib.sha256(unit.encode()).hexdigest()[:16]
    room = MAX_NAME_BYTES - len(suffix.encode()) - len(digest) - 1
    start = name.encode()[:room].decode(errors="ignore")  # never half a UTF-8 character
    return f"{start}-{digest}{suffix}"


def _failure_key(unit: str) -> str:
    return f"{FAILURES}/{unit_file_name(unit)}"


def one_line(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """``reason`` as one line of at most ``limit`` characters: its non-empty lines joined with
    " | "; when too long, its start (what failed) and its end (what the tool said last)."""
    text = " | ".join(line.strip() for line in reason.splitlines() if line.strip())
    if len(text) <= limit:
        return text
    keep = (limit - 5) // 2
    return f"{text[:keep]} ... {text[-keep:]}"


def array_checksum(data: np.ndarray) -> str:
    """Content checksum of one shard of an array (independent of codecs and chunking).

    crc32c, hardware-accelerated: it detects damage at memory speed, where sha256 cost ~11 %
    of a shard write in benchmarks/storage.py.
    """
    return f"crc32c:{google_crc32c.value(np.ascontiguousarray(data).tobytes()):08x}"


@dataclass(frozen=True)
class Layout:
    """What :meth:`DatasetStore.prepare` needs besides the segments: resolved sizes."""

    dims: dict[str, int]
    shard_segments: int
    compression_level: int
    attrs: dict[str, Any]
    chunk_frames: int = 5


class DatasetStore:
    """A dataset version (``<store>/<version>``) in the data contract's layout."""

    def __init__(self, store: StoreLocation | str, version: str) -> None:
        self.store = store if isinstance(store, StoreLocation) else StoreLocation.parse(store)
        # a version name comes from the config, the CLI or the store: it must not leave the store
        self.version = safe_name(version, "dataset version", self.store.url)
        self.location = self.store.child(self.version)

    # --- opening -------------------------------------------------------------------------

    @staticmethod
    def versions(store: StoreLocation | str) -> list[str]:
        """Dataset versions present in a store (empty when there is no dancegen root)."""
        store = store if isinstance(store, StoreLocation) else StoreLocation.parse(store)
        try:
            root = zarr.open_group(store=store.zarr_store(read_only=True), mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return []
        return list(root.attrs.get("dancegen", {}).get("versions", []))

    def group(self, mode: str = "r") -> zarr.Group:
        """The version's zarr group."""
        try:
            return zarr.open_group(
                store=self.store.zarr_store(read_only=mode == "r"), path=self.version, mode=mode
            )
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            raise StoreError(f"no dataset version {self.version!r} in {self.store.url}") from None

    @property
    def attrs(self) -> dict[str, Any]:
        """The version's dancegen attributes (layout, dims, segment table)."""
        return dict(self.group().attrs["dancegen"])

    def table(self) -> SegmentTable:
        """The segment table as the last build left it (readers use a snapshot instead)."""
        return SegmentTable.from_attrs(self.attrs)

    def segments(self) -> list[Segment]:
        """The live segments, in row order (not indexed by row: see :meth:`table`)."""
        return self.table().live_segments()

    def shard_ranges(self) -> list[range]:
        """Rows of each shard."""
        attrs = self.attrs
        return shard_ranges(len(attrs["segments"]["id"]), attrs["shard_segments"])

    # --- driver side: layout ---------------------------------------------------------------

    def prepare(self, table: SegmentTable | list[Segment], stages: Iterable[str],
                layout: Layout) -> None:
        """Create or update the version group so that it holds ``table`` for ``stages`` (a
        list of segments: a table of exactly those rows).

        Arrays grow to the table's row count (rows are append-only: see
        :func:`~dancegen.storage.segments.assign_rows`, so no complete shard changes).
        Changing a per-segment shape, the chunking or the shard size needs a new version.
        """
        if not isinstance(table, SegmentTable):
            table = SegmentTable.of(table)
        self.store.check_reachable()
        root = zarr.open_group(store=self.store.zarr_store(), mode="a")
        meta = dict(root.attrs.get("dancegen", {"contract_version": CONTRACT_VERSION}))
        meta["versions"] = sorted({*meta.get("versions", []), self.version})
        root.attrs["dancegen"] = meta
        group = root.require_group(self.version)
        for stage in stages:
            for spec in arrays_of(stage):
                self._ensure_array(group, spec, len(table.rows), layout)
        group.attrs["dancegen"] = {
            **layout.attrs,
            "contract_version": CONTRACT_VERSION,
            "dims": layout.dims,
            "shard_segments": layout.shard_segments,
            "chunk_frames": layout.chunk_frames,
            **table.to_attrs(),
        }

    def _ensure_array(self, group: zarr.Group, spec: ArraySpec, count: int, layout: Layout):
        per_segment = spec.resolve(layout.dims)
        shards = (layout.shard_segments, *per_segment)
        chunks = (1, layout.chunk_frames, *per_segment[1:]) if spec.per_frame else \
            (1, *per_segment)
        if spec.name in group:
            array = group[spec.name]
            if array.shape[1:] != per_segment or array.shards != shards \
                    or array.chunks != chunks:
                raise StoreError(
                    f"{self.location.url}/{spec.name} has per-segment shape {array.shape[1:]}, "
                    f"shards {array.shards} and chunks {array.chunks}; the config asks for "
                    f"{per_segment}, {shards} and {chunks}. Use a new dataset.version for a "
                    "different layout."
                )
            if array.shape[0] != count:
                array.resize((count, *per_segment))
            return
        shuffle = "bitshuffle" if np.dtype(spec.dtype).itemsize == 1 else "shuffle"
        group.create_array(
            spec.name,
            shape=(count, *per_segment),
            dtype=spec.dtype,
            chunks=chunks,
            shards=shards,
            compressors=[
                zarr.codecs.BloscCodec(
                    cname="zstd", clevel=layout.compression_level, shuffle=shuffle
                ),
                zarr.codecs.Crc32cCodec(),  # per-chunk checksum: corruption fails loudly
            ],
            fill_value=spec.fill_value,
            attributes={"description": spec.description, "stage": spec.stage},
            dimension_names=spec.dimension_names,
        )

    def _record_stages(self) -> list[str]:
        try:
            entries = self.location.ls(RECORDS)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def open_array(self, name: str, mode: str = "r") -> zarr.Array:
        """One array of the version, opened without reading the group's metadata (which
        holds the segment table: megabytes at paper scale, for every reader and writer)."""
        try:
            return zarr.open_array(store=self.store.zarr_store(read_only=mode == "r"),
                                   path=f"{self.version}/{name}", mode=mode)
        except (FileNotFoundError, zarr.errors.ArrayNotFoundError):
            raise StoreError(f"no array {name} in dataset version {self.version!r} of "
                             f"{self.store.url}") from None

    # --- shard records ---------------------------------------------------------------------

    def record(self, stage: str, shard: int) -> dict[str, Any] | None:
        """The completion record of a shard, or None when it is not complete."""
        return self.location.read_json(_record_key(stage, shard))

    def records(self, stage: str) -> dict[int, dict[str, Any]]:
        """All completion records of a stage, by shard index."""
        found = self.location.list_json(f"{RECORDS}/{stage}")
        return {int(name.removesuffix(".json")): rec for name, rec in found.items()}

    def invalidate(self, stage: str, shard: int) -> None:
        """Mark a shard incomplete before it is rewritten."""
        self.location.delete(_record_key(stage, shard))

    def record_failure(self, unit: str, reason: str, details: dict[str, Any]) -> None:
        """Persist the last failure of a unit (a shard of a stage, or an input); the reason is
        stored as one line (:func:`one_line`), the unit id in full whatever its length."""
        document = {"unit": unit, "reason": one_line(reason), "at": time.time(), **details}
        self.location.write_json(_failure_key(unit), document)

    def clear_failure(self, unit: str) -> None:
        """Forget a unit's failure once it succeeded."""
        self.location.delete(_failure_key(unit))

    def failures(self) -> dict[str, dict[str, Any]]:
        """Recorded failures by unit."""
        return {doc["unit"]: doc for doc in self.location.list_json(FAILURES).values()}

    # --- worker side: data -----------------------------------------------------------------

    def write_shard(
        self, stage: str, shard: int, data: dict[str, np.ndarray], record: dict[str, Any],
        rows: range | None = None, ids: list[str | None] | None = None,
    ) -> int:
        """Write every array of ``stage`` for one shard, then its completion record.

        ``data`` maps each contract array of the stage to an array of the shard's rows. Each
        array's shard is written in one assignment covering the whole shard, so zarr encodes
        and stores it as one object (temp file + rename locally, one PUT on S3). ``rows`` and
        ``ids`` are the shard's rows and segment ids as the build planned them (None for a
        tombstoned or padding row, written as fill values): a worker
        passes its unit's, so that it never reads the segment table (the version group's
        metadata, megabytes at paper scale); without them they are read from the table.
        """
        if rows is None or ids is None:
            meta = self.attrs
            table_ids = meta["segments"]["id"]
            rows = shard_ranges(len(table_ids), meta["shard_segments"])[shard]
            ids = [table_ids[i] for i in rows]
        expected = {spec.name for spec in arrays_of(stage)}
        if set(data) != expected:
            raise StoreError(f"stage {stage} must write {sorted(expected)}, got {sorted(data)}")
        if len(ids) != len(rows):
            raise StoreError(f"shard {shard}: {len(ids)} segment ids for {len(rows)} rows")
        checksums, written = {}, 0
        for name, values in data.items():
            array = self.open_array(name, mode="r+")
            want = (len(rows), *array.shape[1:])
            if values.shape != want:
                raise StoreError(f"{name} shard {shard}: shape {values.shape}, expected {want}")
            values = np.ascontiguousarray(values, dtype=array.dtype)
            array[rows.start : rows.stop] = values
            checksums[name] = array_checksum(values)
            written += values.nbytes
        self.location.write_json(
            _record_key(stage, shard),
            {
                **record,
                "stage": stage,
                "shard": shard,
                "segments": list(ids),
                "checksums": checksums,
                "nbytes": written,
                "host": socket.gethostname(),
                "written_at": time.time(),
            },
        )
        return written

    def read(self, name: str, rows: slice | int) -> np.ndarray:
        """Read rows of an array, refusing rows whose shard is not complete."""
        spec = ARRAYS[name]
        array = self.open_array(name)
        index = range(array.shape[0])[rows]
        wanted = [index] if isinstance(index, int) else list(index)
        # only the records of the shards these rows fall in: a reader asks per segment
        for shard in sorted({row // array.shards[0] for row in wanted}):
            if self.record(spec.stage, shard) is None:
                raise StoreError(f"{name}: shard {shard} of stage {spec.stage} is not complete")
        return array[rows]
