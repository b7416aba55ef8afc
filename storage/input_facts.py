"""What planning learnt about each input file, kept in the store and keyed on file versions.

Planning needs, per motion and music file, its sha256 (what shard keys compare) and a few
facts only a full read gives (a track's duration, a motion's length, fps and body scale). At
paper scale that is reading and hashing every input on every nightly build. The facts of a
file are stored with its cheap version (size + mtime locally, size + ETag on S3, from one
listing of the inputs), and reused for as long as the version is unchanged: a rebuild reads
only new or changed files. Only files that planned successfully are kept, so a bad file is
read (and refused with its reason) again each time.

Layout: ``<store>/_input_facts/<sha256 of the inputs URL>.json`` =
``{"inputs": url, "files": {key: {"version": ..., <facts>}}}``. A lost or unreadable file
only costs a full re-read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from dancegen.storage.location import StoreLocation

PREFIX = "_input_facts"


@dataclass
class InputFacts:
    """The facts of one inputs root's files, as far as they are still current."""

    store: StoreLocation | None
    inputs_url: str
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    _changed: bool = False

    @classmethod
    def load(cls, store: StoreLocation | None, inputs_url: str) -> InputFacts:
        """The facts kept in ``store`` for ``inputs_url`` (none without a store)."""
        facts = cls(store, inputs_url)
        if store is not None:
            try:
                document = store.read_json(_key(inputs_url)) or {}
            except (OSError, ValueError):  # unreadable: plan from the files themselves
                document = {}
            if document.get("inputs") == inputs_url:
                facts.files = dict(document.get("files", {}))
        return facts

    def get(self, file: str, version: str | None) -> dict[str, Any] | None:
        """The facts of ``file`` if they were learnt from this very ``version``."""
        entry = self.files.get(file)
        if version is not None and entry is not None and entry.get("version") == version:
            self.hits += 1
            return entry
        self.misses += 1
        return None

    def put(self, file: str, version: str | None, **facts: Any) -> None:
        """Keep what a full read of ``file`` at ``version`` showed."""
        if version is None:
            return
        entry = {**self.files.get(file, {}), **facts, "version": version}
        if self.files.get(file) != entry:
            self.files[file] = entry
            self._changed = True

    def save(self, listed: set[str]) -> None:
        """Write the facts back (dropping files no longer ``listed``) if anything changed."""
        gone = set(self.files) - listed
        for file in gone:
            del self.files[file]
        if self.store is not None and (self._changed or gone):
            self.store.write_json(_key(self.inputs_url),
                                  {"inputs": self.inputs_url, "files": self.files})
            self._changed = False


def _key(inputs_url: str) -> str:
    return f"{PREFIX}/{hashlib.sha256(inputs_url.encode()).hexdigest()[:32]}.json"
