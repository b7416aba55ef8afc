"""Reader for SMPL body model files (the released ``.pkl`` files, or smplx-style ``.npz``).

The released SMPL pickles were written by Python 2 and hold some values as chumpy objects;
chumpy does not import on Python 3.11, so they are read with dancegen's restricted unpickler
(storage/safe_pickle.py), which runs no code from the file and maps every ``chumpy.*`` class to
a stand-in that only keeps the pickled state; the arrays are taken out of that state. The
file may live on local disk or under ``s3://``.

Every missing, unreadable or malformed file raises :class:`InputError` naming the file and what
was expected, as the other input readers do.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from dancegen.errors import InputError
from dancegen.storage.location import StoreLocation, file_version, split_url
from dancegen.storage.safe_pickle import ChumpyStandIn, safe_loads

NUM_VERTICES = 6890
NUM_JOINTS = 24
NUM_FACES = 13776
NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)  # (R - I) of the 23 non-root joints
MIN_BETAS = 10
SUFFIXES = (".pkl", ".npz")


@dataclass(frozen=True, eq=False)
class BodyModelData:
    """The arrays of an SMPL model, as plain read-only numpy arrays."""

    v_template: np.ndarray     # (6890, 3) float32, rest pose, metres
    shapedirs: np.ndarray      # (6890, 3, B) float32, B >= 10
    posedirs: np.ndarray       # (6890, 3, 207) float32
    J_regressor: np.ndarray    # (24, 6890) float32, dense
    weights: np.ndarray        # (6890, 24) float32, rows sum to 1
    kintree_table: np.ndarray  # (2, 24) int64; row 0 = parents, -1 for the root
    faces: np.ndarray          # (13776, 3) int64
    source: str                # where it was loaded from

    @property
    def parents(self) -> np.ndarray:
        """(24,) int64 parent of each joint, -1 for the root."""
        return self.kintree_table[0]


# --- arrays out of the unpickled values ----------------------------------------------------


def _chumpy_array(value: ChumpyStandIn) -> np.ndarray | None:
    """The array of a chumpy object: state['x'] (plain Ch), else 'r', else any array in it."""
    state = getattr(value, "state", None)
    if not isinstance(state, dict):
        return None
    for key in ("x", "r"):
        if key in state:
            return _as_array(state[key])
    for item in state.values():
        found = _as_array(item)
        if found is not None:
            return found
    return None


def _as_array(value: Any) -> np.ndarray | None:
    """A dense ndarray for an ndarray, a scipy sparse matrix or a chumpy stand-in; else None."""
    if isinstance(value, ChumpyStandIn):
        return _chumpy_array(value)
    if sp.issparse(value):
        return value.toarray()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    return None


# --- reading and validating ----------------------------------------------------------------------

# key -> (expected shape with None for "any"; dtype kept)
_SPEC: dict[str, tuple[tuple[int | None, ...], type]] = {
    "v_template": ((NUM_VERTICES, 3), np.float32),
    "shapedirs": ((NUM_VERTICES, 3, None), np.float32),
    "posedirs": ((NUM_VERTICES, 3, NUM_POSE_BASIS), np.float32),
    "J_regressor": ((NUM_JOINTS, NUM_VERTICES), np.float32),
    "weights": ((NUM_VERTICES, NUM_JOINTS), np.float32),
    "kintree_table": ((2, NUM_JOINTS), np.int64),
    "f": ((NUM_FACES, 3), np.int64),
}


def _split(location: str | Path) -> tuple[StoreLocation, str, str]:
    """(folder location, file name, display name) of a local path or s3:// URL."""
    store, name = split_url(location)
    return store, name, posixpath.join(store.url, name)


def _read_bytes(location: str | Path) -> tuple[bytes, str]:
    """The file's bytes and its display name; InputError when it is missing or unreadable."""
    store, name, where = _split(location)
    if not name.endswith(SUFFIXES):
        raise InputError(f"{where}: not a body model file (expected .pkl or .npz)")
    try:
        return store.fs.cat_file(store.path(name)), where
    except FileNotFoundError:
        raise InputError(f"body model file missing: {where}") from None
    except Exception as error:  # permissions, network: one clear line with the cause
        raise InputError(f"{where}: cannot read body model file ({error})") from None


def _parse(data: bytes, where: str) -> dict[str, Any]:
    """The key -> value mapping stored in a .pkl or .npz body model file."""
    if where.endswith(".npz"):
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                # Only the SMPL keys: extra entries may be object arrays that need pickle.
                content = {key: npz[key] for key in npz.files if key in _SPEC}
        except Exception as error:
            raise InputError(f"{where}: not a readable npz archive ({error})") from None
    else:
        content = safe_loads(data, where, "SMPL pickle")  # runs no code from the file
    if not isinstance(content, dict):
        raise InputError(f"{where}: expected a dict of SMPL arrays, got {type(content).__name__}")
    return content


def _checked(content: dict[str, Any], key: str, where: str) -> np.ndarray:
    """One array converted to its dtype, with its shape checked against ``_SPEC``."""
    shape, dtype = _SPEC[key]
    if key not in content:
        raise InputError(f"{where}: missing key {key!r} (SMPL keys: {', '.join(_SPEC)})")
    try:
        array = _as_array(content[key])
    except Exception as error:  # e.g. a sparse matrix from an incompatible scipy
        raise InputError(f"{where}: key {key!r} cannot be read as an array ({error})") from None
    if array is None:
        raise InputError(f"{where}: key {key!r} holds {type(content[key]).__name__}, "
                         "expected an array")
    if not _shape_matches(array.shape, shape):
        expected = tuple("B" if n is None else n for n in shape)
        raise InputError(f"{where}: key {key!r} has shape {array.shape}, expected "
                         f"({', '.join(map(str, expected))})")
    array = np.array(array, dtype=dtype)  # a private, contiguous copy
    if key == "kintree_table":
        # The released files store the root's parent as uint32(-1) = 4294967295; the root
        # has no parent whatever is stored there.
        array[0, 0] = -1
    return array


def _shape_matches(actual: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """True when the shapes agree; None in ``expected`` matches any length."""
    return len(actual) == len(expected) and all(
        n is None or n == m for n, m in zip(expected, actual, strict=True))


def _validate(arrays: dict[str, np.ndarray], where: str) -> None:
    """Checks beyond shapes: enough betas, weights summing to 1, a valid tree and faces."""
    betas = arrays["shapedirs"].shape[2]
    if betas < MIN_BETAS:
        raise InputError(f"{where}: key 'shapedirs' has {betas} shape directions, "
                         f"expected at least {MIN_BETAS}")
    sums = arrays["weights"].sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        worst = float(np.abs(sums - 1.0).max())
        raise InputError(f"{where}: key 'weights' rows must sum to 1 (off by up to {worst:.3g})")
    parents = arrays["kintree_table"][0]
    if not (parents[1:] < np.arange(1, NUM_JOINTS)).all() or (parents[1:] < 0).any():
        raise InputError(f"{where}: key 'kintree_table' is not a tree with parents before "
                         f"children (parents {parents.tolist()})")
    faces = arrays["f"]
    if faces.min() < 0 or faces.max() >= NUM_VERTICES:
        raise InputError(f"{where}: key 'f' has vertex indices outside 0..{NUM_VERTICES - 1}")


def load_body_model(location: str | Path) -> BodyModelData:
    """Load an SMPL model file (.pkl as released, or .npz) from a local path or s3:// URL."""
    data, where = _read_bytes(location)
    content = _parse(data, where)
    arrays = {key: _checked(content, key, where) for key in _SPEC}
    _validate(arrays, where)
    for array in arrays.values():
        array.setflags(write=False)
    return BodyModelData(
        v_template=arrays["v_template"],
        shapedirs=arrays["shapedirs"],
        posedirs=arrays["posedirs"],
        J_regressor=arrays["J_regressor"],
        weights=arrays["weights"],
        kintree_table=arrays["kintree_table"],
        faces=arrays["f"],
        source=where,
    )


def body_model_version(location: str | Path) -> str:
    """A cheap change token (size + mtime or ETag) without reading the file: workers key their
    once-per-process cache on it, where the full digest would re-read the file per task."""
    version = file_version(location)
    if version is None:
        raise InputError(f"body model file missing: {_split(location)[2]}")
    return version


def body_model_digest(location: str | Path) -> str:
    """sha256 of the model file's bytes (a cache and completion key for rendered outputs)."""
    data, _ = _read_bytes(location)
    return hashlib.sha256(data).hexdigest()
