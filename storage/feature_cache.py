"""Per-track feature cache in the store, keyed by the audio's content hash.

``<store>/cache/<name>/<settings key>/<audio sha256>.npy``: one array per track, written whole
by one writer (temp + rename, or one PUT). The settings key covers everything the features
depend on besides the audio (weights, layer, chunking, rate), so regenerating a dataset never
recomputes the features of music it has seen, and a change of settings never reuses stale ones.
"""

from __future__ import annotations

import io

import numpy as np

from dancegen.storage.location import StoreLocation


class FeatureCache:
    """Features of whole tracks, by audio content hash."""

    def __init__(self, store: str | StoreLocation, name: str, key: str) -> None:
        store = store if isinstance(store, StoreLocation) else StoreLocation.parse(store)
        self.location = store.child("cache", name, key)

    @property
    def url(self) -> str:
        """Where this cache lives (what workers are given)."""
        return self.location.url

    def has(self, sha256: str) -> bool:
        """True when the track's features are cached."""
        return self.location.fs.exists(self.location.path(f"{sha256}.npy"))

    def get(self, sha256: str) -> np.ndarray | None:
        """The track's features, or None."""
        data = self.location.read_bytes(f"{sha256}.npy")
        return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)

    def put(self, sha256: str, features: np.ndarray) -> int:
        """Store a track's features; returns the bytes written."""
        buffer = io.BytesIO()
        np.save(buffer, features, allow_pickle=False)
        self.location.write_bytes(f"{sha256}.npy", buffer.getvalue())
        return buffer.tell()

    @classmethod
    def at(cls, url: str) -> FeatureCache:
        """The cache at a URL given by :attr:`url` (on workers)."""
        cache = cls.__new__(cls)
        cache.location = StoreLocation.parse(url)
        return cache
