"""Check a dataset version: every shard complete, and its data equal to what was written.

For each stage present in the version and each shard: a missing completion record means
*incomplete*; a shard whose arrays cannot be decoded (zarr's per-chunk crc32c fails, a file
is truncated or gone) or whose content checksum differs from its record means *damaged*.

Reading a shard back is the expensive part (terabytes at paper scale), so a check can be
*incremental*: the version keeps ``_verified.json``, the ``written_at`` of every record that
a check found intact, and an incremental check reads only shards written since (new or
rewritten records). Completeness is always checked for every shard (records only). A full
check (``full=True``) reads everything again, which also catches bit rot in shards that were
intact once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dancegen.storage.contract import ARRAYS, arrays_of
from dancegen.storage.dataset import DatasetStore, array_checksum

VERIFIED = "_verified.json"  # in the version: {"<stage>/<shard>": written_at found intact}


@dataclass
class VerifyReport:
    """Outcome per unit (``<stage>/<shard>``)."""

    version: str
    checked: int = 0     # shards whose completeness was checked (all of them)
    read: int = 0        # shards read back and compared with their checksums
    incomplete: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No unit is damaged or incomplete."""
        return not self.incomplete and not self.damaged

    def repair(self, dataset: DatasetStore) -> list[str]:
        """Drop the completion records of the damaged shards, so that the next build
        recomputes exactly those (their inputs are unchanged, so nothing else is redone).
        Returns the units marked incomplete."""
        for unit in self.damaged:
            stage, shard = unit.split("/")
            dataset.invalidate(stage, int(shard))
        return list(self.damaged)

    def summary(self) -> str:
        """One line."""
        return (f"version {self.version}: {self.checked} shards checked, {self.read} read "
                f"back, {len(self.incomplete)} incomplete, {len(self.damaged)} damaged")


@dataclass(frozen=True)
class ShardCheck:
    """One complete shard to read back (small: travels to a Ray task)."""

    unit: str
    stage: str
    start: int
    stop: int
    checksums: dict[str, str]
    written_at: float


def _stages_present(dataset: DatasetStore) -> list[str]:
    group = dataset.group()
    return sorted({spec.stage for name, spec in ARRAYS.items() if name in group})


def plan_checks(dataset: DatasetStore, full: bool) -> tuple[VerifyReport, list[ShardCheck]]:
    """Completeness of every shard (into the report) and the shards to read back: all
    complete ones when ``full``, else those written since they were last found intact."""
    report = VerifyReport(dataset.version)
    verified = {} if full else (dataset.location.read_json(VERIFIED) or {})
    table = dataset.table()
    shards = table.shard_rows(dataset.attrs["shard_segments"])
    checks = []
    for stage in _stages_present(dataset):
        records = dataset.records(stage)  # one listing per stage
        for shard, rows in enumerate(shards):
            unit = f"{stage}/{shard:06d}"
            record = records.get(shard)
            if record is None and not any(table.is_live(r) for r in rows):
                continue  # tombstones and padding only: never needed
            report.checked += 1
            if record is None:
                report.incomplete.append(unit)
            elif verified.get(unit) != record.get("written_at"):
                checks.append(ShardCheck(unit, stage, rows.start, rows.stop,
                                         record.get("checksums", {}), record.get("written_at")))
    return report, checks


def check_shards(dataset: DatasetStore, checks: Iterable[ShardCheck]) -> dict[str, str | None]:
    """Read each shard back: unit -> why it is damaged, or None when it is intact."""
    outcome: dict[str, str | None] = {}
    for check in checks:
        outcome[check.unit] = None
        for spec in arrays_of(check.stage):
            try:
                data = dataset.open_array(spec.name)[check.start:check.stop]
            except Exception as error:  # decoding failed: crc32c, truncated or lost file
                outcome[check.unit] = (f"{spec.name}: unreadable ({type(error).__name__}: "
                                       f"{error})")
                break
            if array_checksum(data) != check.checksums.get(spec.name):
                outcome[check.unit] = f"{spec.name}: checksum differs from its record"
                break
    return outcome


def finish(dataset: DatasetStore, report: VerifyReport, checks: list[ShardCheck],
           outcome: dict[str, str | None], full: bool) -> VerifyReport:
    """Fold the read-back outcomes into the report and remember the intact shards."""
    report.read = len(outcome)
    report.damaged = {unit: reason for unit, reason in outcome.items() if reason is not None}
    verified = {} if full else dict(dataset.location.read_json(VERIFIED) or {})
    for check in checks:
        if outcome.get(check.unit) is None and check.unit in outcome:
            verified[check.unit] = check.written_at
        else:
            verified.pop(check.unit, None)
    for unit in report.incomplete:
        verified.pop(unit, None)
    dataset.location.write_json(VERIFIED, verified)
    return report


Checker = Callable[[list[ShardCheck]], dict[str, Any]]


def verify_dataset(dataset: DatasetStore, full: bool = True,
                   checker: Checker | None = None) -> VerifyReport:
    """Check the version; ``full=False`` reads back only shards written since the last
    check. ``checker`` reads the shards (default: here, one after another; the verify flow
    passes one that fans them out as Ray tasks)."""
    report, checks = plan_checks(dataset, full)
    outcome = (checker or (lambda todo: check_shards(dataset, todo)))(checks)
    return finish(dataset, report, checks, outcome, full)
