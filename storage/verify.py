"""Check a dataset version: every shard complete, and its data equal to what was written.

For each stage present in the version and each shard: a missing completion record means
*incomplete*; a shard whose arrays cannot be decoded (zarr's per-chunk crc32c fails, a file
is truncated or gone) or whose content checksum differs from its record means *damaged*.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dancegen.storage.contract import ARRAYS, arrays_of
from dancegen.storage.dataset import DatasetStore, array_checksum


@dataclass
class VerifyReport:
    """Outcome per unit (``<stage>/<shard>``)."""

    version: str
    checked: int = 0
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
        return (f"version {self.version}: {self.checked} shards checked, "
                f"{len(self.incomplete)} incomplete, {len(self.damaged)} damaged")


def _stages_present(dataset: DatasetStore) -> list[str]:
    group = dataset.group()
    return sorted({spec.stage for name, spec in ARRAYS.items() if name in group})


def verify_dataset(dataset: DatasetStore) -> VerifyReport:
    """Read every complete shard back and compare it with its completion record."""
    report = VerifyReport(dataset.version)
    group = dataset.group()
    shards = dataset.shard_ranges()
    for stage in _stages_present(dataset):
        records = dataset.records(stage)
        for shard, rows in enumerate(shards):
            unit = f"{stage}/{shard:06d}"
            report.checked += 1
            record = records.get(shard)
            if record is None:
                report.incomplete.append(unit)
                continue
            for spec in arrays_of(stage):
                try:
                    data = group[spec.name][rows.start : rows.stop]
                except Exception as error:  # decoding failed: crc32c, truncated or lost file
                    report.damaged[unit] = f"{spec.name}: unreadable ({type(error).__name__}: "\
                                           f"{error})"
                    break
                if array_checksum(data) != record["checksums"].get(spec.name):
                    report.damaged[unit] = f"{spec.name}: checksum differs from its record"
                    break
    return report
