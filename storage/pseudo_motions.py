"""The pseudo-motion root: EDGE samples for new music, kept in the AIST++ layout in the store.

``<store>/pseudo-motions/`` holds ``motions/<sequence>.npz`` (no pickle: stores written before
that hold ``motions/<sequence>.pkl``, which the reader still takes, without running code from
it, until the track is synthesised again), ``music/<music id>.<ext>``,
``splits/crossmodal_train.txt`` (every pseudo-motion is training data), ``cameras/`` (the
primary inputs' most used camera setting, so pseudo-motions are rendered through the same
camera as AIST++), ``pseudo.json`` (marks the root) and ``records/<music id>.json`` (one per
finished track, written by its worker). Only the build's driver writes the shared files.
Names from the records and from the primary inputs' ``cameras/mapping.txt`` pass
storage/paths.py's guard before they are joined into keys, so nothing is written outside the
root.
"""

from __future__ import annotations

import collections
import posixpath

from dancegen.storage.aistpp import MOTION_SUFFIXES, PSEUDO_MANIFEST, AistppInputs
from dancegen.storage.audio import AUDIO_SUFFIXES
from dancegen.storage.location import StoreLocation
from dancegen.storage.paths import is_safe_name, safe_key, safe_name

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
        where = f"{self.location.url}/records/{music_id}.json"
        sequence = safe_name(record.get("sequence"), "sequence", where)
        music_file = safe_key(record.get("music_file"), "music file", where)
        self.location.delete(f"records/{music_id}.json")
        for suffix in MOTION_SUFFIXES:  # .npz, or .pkl in stores written before it
            self.location.delete(f"motions/{sequence}{suffix}")
        self.location.delete(music_file)

    def finalize(self, primary: AistppInputs) -> list[str]:
        """Write the shared files for the finished tracks; returns their sequence names."""
        sequences = sorted(safe_name(r.get("sequence"), "sequence",
                                     f"{self.location.url}/records/{music_id}.json")
                           for music_id, r in self.records().items())
        self.location.write_json(PSEUDO_MANIFEST, {
            "source": "edge", "description": "EDGE pseudo-motions written by dancegen"})
        self.location.write_bytes("splits/crossmodal_train.txt",
                                  "".join(f"{s}\n" for s in sequences).encode())
        setting = _main_camera_setting(primary)
        if setting is not None:
            key = primary.camera_setting_key(setting)
            self.location.write_bytes(key, primary.read_bytes(key))
            self.location.write_bytes("cameras/mapping.txt",
                                      "".join(f"{s} {setting}\n" for s in sequences).encode())
        return sequences


def _main_camera_setting(primary: AistppInputs) -> str | None:
    """The camera setting most sequences of the primary inputs use (None without cameras).

    Only safe setting names count: a line naming ``../../x`` cannot be copied (reading that
    sequence's cameras refuses it), and must not decide the camera of every pseudo-motion.
    """
    mapping = primary.camera_mapping()
    settings = collections.Counter(s for s in mapping.values() if is_safe_name(s))
    return settings.most_common(1)[0][0] if settings else None


def music_files(music_root: str) -> list[str]:
    """Audio files directly in a music folder (path or s3://), by name."""
    location = StoreLocation.parse(music_root)
    try:
        names = location.ls("")
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(n) for n in names if n.lower().endswith(AUDIO_SUFFIXES))
