"""The pseudo-motion root: EDGE samples for new music, kept in the AIST++ layout in the store.

``<store>/pseudo-motions/`` holds ``motions/<sequence>.pkl``, ``music/<music id>.<ext>``,
``splits/crossmodal_train.txt`` (every pseudo-motion is training data), ``cameras/`` (the
primary inputs' most used camera setting, so pseudo-motions are rendered through the same
camera as AIST++), ``pseudo.json`` (marks the root) and ``records/<music id>.json`` (one per
finished track, written by its worker). Only the build's driver writes the shared files.
"""

from __future__ import annotations

import collections
import posixpath

from dancegen.storage.aistpp import PSEUDO_MANIFEST, AistppInputs
from dancegen.storage.audio import AUDIO_SUFFIXES
from dancegen.storage.location import StoreLocation

PSEUDO_ROOT = "pseudo-motions"


class PseudoMotionRoot:
    """Driver-side view of a store's pseudo-motion root."""

    def __init__(self, store: str | StoreLocation) -> None:
        store = store if isinstance(store, StoreLocation) else StoreLocation.parse(store)
        self.location = store.child(PSEUDO_ROOT)

    @property
    def url(self) -> str:
        """URL of the root (what segments of source ``edge`` are read from)."""
        return self.location.url

    def records(self) -> dict[str, dict]:
        """Completion records of finished tracks, by music id."""
        return {name.removesuffix(".json"): record
                for name, record in self.location.list_json("records").items()}

    def remove(self, music_id: str) -> None:
        """Drop a track whose music left the music folder (record first: then it is gone)."""
        record = self.records().get(music_id)
        if record is None:
            return
        self.location.delete(f"records/{music_id}.json")
        self.location.delete(f"motions/{record['sequence']}.pkl")
        self.location.delete(record["music_file"])

    def finalize(self, primary: AistppInputs) -> list[str]:
        """Write the shared files for the finished tracks; returns their sequence names."""
        sequences = sorted(r["sequence"] for r in self.records().values())
        self.location.write_json(PSEUDO_MANIFEST, {
            "source": "edge", "description": "EDGE pseudo-motions written by dancegen"})
        self.location.write_bytes("splits/crossmodal_train.txt",
                                  "".join(f"{s}\n" for s in sequences).encode())
        setting = _main_camera_setting(primary)
        if setting is not None:
            self.location.write_bytes(f"cameras/{setting}.json",
                                      primary.read_bytes(f"cameras/{setting}.json"))
            self.location.write_bytes("cameras/mapping.txt",
                                      "".join(f"{s} {setting}\n" for s in sequences).encode())
        return sequences


def _main_camera_setting(primary: AistppInputs) -> str | None:
    """The camera setting most sequences of the primary inputs use (None without cameras)."""
    if "cameras/mapping.txt" not in primary.camera_files():
        return None
    lines = primary.read_bytes("cameras/mapping.txt").decode().split("\n")
    settings = collections.Counter(line.split()[1] for line in lines if len(line.split()) >= 2)
    return settings.most_common(1)[0][0] if settings else None


def music_files(music_root: str) -> list[str]:
    """Audio files directly in a music folder (path or s3://), by name."""
    location = StoreLocation.parse(music_root)
    try:
        names = location.ls("")
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(n) for n in names if n.lower().endswith(AUDIO_SUFFIXES))
