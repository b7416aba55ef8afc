"""Reader for inputs in the AIST++ layout (real AIST++, or the stand-in of ``dancegen fixtures``).

Expected below the inputs root (local folder or ``s3://``)::

    motions/<sequence>.pkl        dict: smpl_poses (N, 72), smpl_trans (N, 3), smpl_scaling (1,)
                                  (AIST++ is 60 fps); read without running code from the file
    motions/<sequence>.npz        the same keys plus ``fps``, no pickle (dancegen's pseudo-motions)
    splits/crossmodal_{train,val,test}.txt   sequence names, one per line (optional)
    ignore_list.txt               sequences to drop (optional)
    cameras/mapping.txt, cameras/<setting>.json   (optional; used by rendering)
    videos/<sequence with cAll -> camera>.mp4     (optional; real frames instead of rendered)
    music/<music id>.<wav|flac|ogg|mp3|...>      the AIST Dance DB track named in the sequence
    fixture.json                  present only in the synthetic stand-in ({"synthetic": true})
    pseudo.json                   present only in a root of EDGE pseudo-motions ({"source": "edge"})

Every malformed or missing file raises :class:`InputError` naming the file and what was
expected, so that the one unit reading it fails and the rest of a build goes on. Names read
from files (sequence names, music ids, camera settings) and keys pass storage/paths.py's guard
before they are joined into a key, so nothing outside the root is read. Motion files are the
files directly in ``motions/`` (AIST++'s layout is flat): files in sub-folders (a backup copy
in ``motions/old/``) and hidden files are ignored and reported by :meth:`ignored_motions`, so
they never give a sequence twice; two files for one sequence name are an InputError.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial.transform import Rotation

from dancegen.errors import InputError
from dancegen.storage.audio import AUDIO_SUFFIXES, audio_seconds, decode_audio
from dancegen.storage.location import StoreLocation
from dancegen.storage.paths import safe_key, safe_name
from dancegen.storage.safe_pickle import safe_loads
from dancegen.storage.segments import Segment

CAMERA_MAPPING = "cameras/mapping.txt"  # sequence -> camera setting, one per line

AISTPP_FPS = 60.0
PSEUDO_MANIFEST = "pseudo.json"  # marks a root of EDGE pseudo-motions (see tasks/edge_synthesis)
SPLIT_FILES = {"train": "crossmodal_train.txt", "val": "crossmodal_val.txt",
               "test": "crossmodal_test.txt"}
MOTION_SUFFIXES = (".pkl", ".npz")  # AIST++'s pickles; dancegen's pickle-free pseudo-motions
MOTION_KEYS = ("smpl_poses", "smpl_trans", "smpl_scaling")


@dataclass(frozen=True)
class Motion:
    """SMPL parameters of one sequence at its source frame rate."""

    poses: np.ndarray    # (N, 72) float32 axis-angle
    trans: np.ndarray    # (N, 3) float32, AIST++ units
    scaling: float
    fps: float

    @property
    def seconds(self) -> float:
        """Duration of the sequence."""
        return len(self.poses) / self.fps


@dataclass(frozen=True)
class Camera:
    """One AIST++ camera: intrinsics K and world-to-camera extrinsics (OpenCV convention)."""

    name: str
    size: tuple[int, int]       # (width, height) in pixels
    matrix: np.ndarray          # (3, 3) K
    rotation: np.ndarray        # (3,) Rodrigues vector, world -> camera
    translation: np.ndarray     # (3,) world -> camera, AIST++ units
    distortions: np.ndarray     # (5,) OpenCV k1 k2 p1 p2 k3

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 3) world points to camera coordinates."""
        rot = Rotation.from_rotvec(self.rotation).as_matrix()
        return points @ rot.T + self.translation


@dataclass(frozen=True)
class SequenceInputs:
    """One dance sequence and the files it needs (paths relative to the inputs root)."""

    name: str
    split: str
    motion_file: str
    music_id: str
    music_file: str | None


def music_id_of(sequence: str) -> str:
    """AIST++ names carry the music id as the 5th field: gBR_sBM_cAll_d04_mBR0_ch01 -> mBR0."""
    fields = sequence.split("_")
    if len(fields) < 6 or not fields[4].startswith("m"):
        expected = "gXX_sXX_cAll_dXX_mXXX_chXX"
        raise InputError(f"sequence name {sequence!r} is not AIST++ style ({expected})")
    return safe_name(fields[4], "music id", f"sequence {sequence!r}")


def _motion_from(data: object, where: str) -> Motion:
    """Validate the content of a motion file (a dict of AIST++ keys, from a .pkl or .npz)."""
    if not isinstance(data, dict) or not set(MOTION_KEYS) <= set(data):
        got = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{where}: expected {'/'.join(MOTION_KEYS)}; got {got}")
    poses, trans, scaling = (_float_array(data[key], key, where) for key in MOTION_KEYS)
    poses = poses.reshape(len(poses), -1) if poses.ndim == 3 else poses
    scaling = scaling.reshape(-1)
    if poses.ndim != 2 or poses.shape[1] != 72 or len(poses) == 0:
        raise InputError(f"{where}: smpl_poses must be (N, 72) with N > 0, got {poses.shape}")
    if trans.shape != (len(poses), 3):
        raise InputError(f"{where}: smpl_trans must be ({len(poses)}, 3), got {trans.shape}")
    if scaling.size != 1 or not scaling[0] > 0 or not np.isfinite(scaling[0]):
        raise InputError(f"{where}: smpl_scaling must be one positive number, got {scaling}")
    if not (np.isfinite(poses).all() and np.isfinite(trans).all()):
        raise InputError(f"{where}: smpl_poses/smpl_trans contain NaN or inf")
    fps = _float_array(data.get("fps", AISTPP_FPS), "fps", where).reshape(-1)
    if fps.size != 1 or not (np.isfinite(fps[0]) and fps[0] > 0):  # pseudo-motions record it
        raise InputError(f"{where}: fps must be one positive number, got {fps}")
    return Motion(poses, trans, float(scaling[0]), float(fps[0]))


def _float_array(value: object, key: str, where: str) -> np.ndarray:
    """``value`` as a float32 array; anything but numbers (objects, strings) is an InputError."""
    if isinstance(value, np.ndarray) and value.dtype.kind not in "biuf":
        raise InputError(f"{where}: {key} must hold numbers, got a {value.dtype} array")
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: {key} must hold numbers ({error})") from None


class AistppInputs:
    """Read-only view of an inputs root in the AIST++ layout."""

    def __init__(self, root: str | StoreLocation) -> None:
        self.location = root if isinstance(root, StoreLocation) else StoreLocation.parse(root)

    # --- layout ----------------------------------------------------------------------------

    def _text_lines(self, key: str) -> list[str] | None:
        try:
            text = self.location.fs.cat_file(self.location.path(key)).decode()
        except FileNotFoundError:
            return None
        return [line.strip() for line in text.splitlines() if line.strip()]

    @cached_property
    def synthetic(self) -> bool:
        """True for the procedural stand-in (``fixture.json`` says so)."""
        manifest = self.location.read_json("fixture.json")
        return bool(manifest and manifest.get("synthetic"))

    @cached_property
    def source(self) -> str:
        """Segment source of this root: ``edge`` (pseudo-motions), ``synthetic`` or ``aistpp``."""
        if (self.location.read_json(PSEUDO_MANIFEST) or {}).get("source") == "edge":
            return "edge"
        return "synthetic" if self.synthetic else "aistpp"

    @cached_property
    def _listing(self) -> dict[str, str]:
        """Every file under the root -> its cheap version, from one listing (size + mtime
        locally, size + ETag on S3): what planning keys its kept facts on."""
        try:
            return self.location.listed_versions()
        except FileNotFoundError:
            raise InputError(f"inputs folder {self.location.url} does not exist") from None

    @cached_property
    def _files(self) -> list[str]:
        return list(self._listing)

    def file_keys(self) -> list[str]:
        """Every file under the root, relative to it."""
        return list(self._files)

    def file_version(self, key: str) -> str | None:
        """The listed version of ``key`` (None when it is not listed)."""
        return self._listing.get(key)

    def _music_file(self, music_id: str) -> str | None:
        for suffix in AUDIO_SUFFIXES:
            candidate = f"music/{music_id}{suffix}"
            if candidate in self._files:
                return candidate
        return None

    @cached_property
    def _motions(self) -> tuple[dict[str, str], list[str], dict[str, str]]:
        """(sequence name -> its motion file directly in motions/, files ignored, files
        refused with the reason: an unsafe name fails that file alone, not the whole root)."""
        found: dict[str, str] = {}
        ignored = []
        refused: dict[str, str] = {}
        for path in self._files:
            if not (path.startswith("motions/") and path.endswith(MOTION_SUFFIXES)):
                continue
            base = path.removeprefix("motions/")
            if "/" in base or base.startswith("."):  # a sub-folder copy, or an OS's metadata
                ignored.append(path)
                continue
            try:
                name = safe_name(posixpath.splitext(base)[0], "sequence name",
                                 f"{self.location.url}/{path}")
            except InputError as error:
                refused[path] = str(error)
                continue
            if name in found:
                raise InputError(f"{self.location.url}: {found[name]} and {path} both give "
                                 f"sequence {name}; keep one")
            found[name] = path
        return found, ignored, refused

    def ignored_motions(self) -> list[str]:
        """Motion-like files that are not sequences: in sub-folders of motions/, or hidden."""
        return self._motions[1]

    def refused_motions(self) -> dict[str, str]:
        """Motion files whose name cannot be a sequence (unsafe, or not AIST++ style), with
        the reason: each is an input failure of its own, the other sequences are planned."""
        return self._motions[2]

    def sequences(self) -> list[SequenceInputs]:
        """Sequences with a motion file, in a split (when splits exist), not ignored; sorted."""
        motions = self._motions[0]
        if not motions:
            raise InputError(f"no motions/*.pkl (or .npz) under {self.location.url}: not an AIST++ "
                             "layout")
        ignored = set(self._text_lines("ignore_list.txt") or [])
        split_of: dict[str, str] = {}
        for split, filename in SPLIT_FILES.items():
            for name in self._text_lines(f"splits/{filename}") or []:
                split_of.setdefault(name, split)
        use_splits = bool(split_of)
        result = []
        for name, motion_file in sorted(motions.items()):
            if name in ignored or (use_splits and name not in split_of):
                continue
            try:
                music_id = music_id_of(name)
            except InputError as error:
                self._motions[2][motion_file] = str(error)
                continue
            result.append(SequenceInputs(name, split_of.get(name, "train"), motion_file,
                                         music_id, self._music_file(music_id)))
        return result

    def video_file(self, name: str) -> str | None:
        """``videos/<name>.mp4`` when the inputs carry AIST++ videos, else None."""
        key = f"videos/{safe_name(name, 'video name', self.location.url)}.mp4"
        return key if key in self._files else None

    def video_listing(self) -> list[tuple[str, int]]:
        """(file, size) of every video: a cheap change detector for large files."""
        videos = [f for f in self._files if f.startswith("videos/")]
        return [(f, int(self.location.fs.size(self.location.path(f)))) for f in videos]

    def camera_files(self) -> list[str]:
        """The camera setting files (mapping and settings), relative to the root."""
        return [f for f in self._files if f.startswith("cameras/")]

    def camera_mapping(self) -> dict[str, str]:
        """Sequence -> camera setting, as cameras/mapping.txt gives them (settings unchecked;
        lines without two fields give nothing); empty without the file."""
        lines = self._text_lines(CAMERA_MAPPING) or []
        return {fields[0]: fields[1] for fields in map(str.split, lines) if len(fields) >= 2}

    def camera_setting_key(self, setting: str) -> str:
        """``cameras/<setting>.json`` for a setting named in cameras/mapping.txt."""
        where = f"{self.location.url}/{CAMERA_MAPPING}"
        return f"cameras/{safe_name(setting, 'camera setting', where)}.json"

    def cameras(self, sequence: str) -> dict[str, Camera]:
        """The cameras of a sequence's setting (cameras/mapping.txt -> cameras/<setting>.json)."""
        mapping = self.camera_mapping()
        if sequence not in mapping:
            raise InputError(f"{self.location.url}/cameras/mapping.txt has no entry for {sequence}")
        key = self.camera_setting_key(mapping[sequence])
        try:
            entries = json.loads(self.read_bytes(key))
            return {
                e["name"]: Camera(
                    e["name"], tuple(e["size"]),
                    np.asarray(e["matrix"], dtype=np.float64).reshape(3, 3),
                    np.asarray(e["rotation"], dtype=np.float64).reshape(3),
                    np.asarray(e["translation"], dtype=np.float64).reshape(3),
                    np.asarray(e.get("distortions", [0.0] * 5), dtype=np.float64),
                )
                for e in entries
            }
        except InputError:
            raise
        except Exception as error:
            where = f"{self.location.url}/{key}"
            raise InputError(f"{where}: not an AIST++ camera file ({error})") from None

    # --- file contents ---------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        """Bytes of one input file; a missing file is an InputError. ``key`` may come from the
        store (a segment's motion or music file), so it must be a safe relative key."""
        safe_key(key, "input file", self.location.url)
        try:
            return self.location.fs.cat_file(self.location.path(key))
        except FileNotFoundError:
            raise InputError(f"input file missing: {self.location.url}/{key}") from None

    def sha256(self, key: str) -> str:
        """Content hash of an input file (what shard records compare)."""
        return hashlib.sha256(self.read_bytes(key)).hexdigest()

    def load_motion(self, key: str) -> Motion:
        """Load and validate a motion file: an AIST++ pickle (read without running code from
        it) or dancegen's pickle-free ``.npz``."""
        return self._parse_motion(key, self.read_bytes(key))

    def _parse_motion(self, key: str, data: bytes) -> Motion:
        where = f"{self.location.url}/{key}"
        if key.endswith(".npz"):
            return _motion_from(_npz_motion(data, where), where)
        return _motion_from(safe_loads(data, where, "motion pickle"), where)

    def audio_seconds(self, key: str) -> float:
        """Duration of an audio file; corrupt files are InputErrors."""
        return audio_seconds(self.read_bytes(key), f"{self.location.url}/{key}")

    def motion_facts(self, key: str) -> dict[str, float | str]:
        """What planning needs of a motion file, from one read: its sha256, length in
        seconds, fps and body scale (the file is validated as :meth:`load_motion` does)."""
        data = self.read_bytes(key)
        motion = self._parse_motion(key, data)
        return {"sha256": hashlib.sha256(data).hexdigest(), "seconds": motion.seconds,
                "fps": motion.fps, "scaling": motion.scaling}

    def music_facts(self, key: str) -> dict[str, float | str]:
        """Its sha256 and duration (the whole file decoded and checked), from one read."""
        data = self.read_bytes(key)
        return {"sha256": hashlib.sha256(data).hexdigest(),
                "seconds": audio_seconds(data, f"{self.location.url}/{key}")}

    def load_audio(self, key: str) -> tuple[np.ndarray, int]:
        """Decode a whole audio file (any common format) to mono float32 at its native rate."""
        return decode_audio(self.read_bytes(key), f"{self.location.url}/{key}")


def _npz_motion(data: bytes, where: str) -> dict[str, np.ndarray]:
    """The motion keys (and fps) of an .npz motion file; object arrays are refused by numpy."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in (*MOTION_KEYS, "fps") if key in npz.files}
    except Exception as error:
        raise InputError(f"{where}: not a readable motion npz ({error})") from None


@dataclass(frozen=True)
class InputRoots:
    """The roots one build reads: the AIST++-layout inputs and, when pseudo-motions were
    synthesised, their root (same layout). A segment's ``source`` says which root it is in."""

    primary: AistppInputs
    pseudo: AistppInputs | None = None
    jukebox_cache: str | None = None  # the build's Jukebox feature cache (FeatureCache URL)

    @classmethod
    def parse(cls, inputs_url: str, pseudo_url: str | None = None,
              jukebox_cache: str | None = None) -> InputRoots:
        """Roots from URLs (what travels to workers)."""
        return cls(AistppInputs(inputs_url), AistppInputs(pseudo_url) if pseudo_url else None,
                   jukebox_cache)

    def of(self, segment: Segment) -> AistppInputs:
        """The root holding the segment's motion and music files."""
        if segment.source != "edge":
            return self.primary
        if self.pseudo is None:
            raise InputError(f"segment {segment.id} is an EDGE pseudo-motion, but this build "
                             "has no pseudo-motion root")
        return self.pseudo

    def all(self) -> list[AistppInputs]:
        """Every root, primary first."""
        return [self.primary] + ([self.pseudo] if self.pseudo else [])

