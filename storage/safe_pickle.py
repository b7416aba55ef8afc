"""The one unpickler for untrusted pickles: AIST++ motions, SMPL model files, older pseudo-motions.

AIST++ is distributed as pickles and the released SMPL models are Python 2 pickles, so dancegen
has to read pickles it did not write. Plain ``pickle.loads`` calls whatever importable callable
a file names (``os.system``, ``builtins.eval``, ``numpy.testing._private.utils.runstring``...),
which runs code in the driver or a worker. This unpickler resolves only exact ``(module, name)``
pairs that rebuild data and nothing else:

* numpy arrays, dtypes and scalars (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``,
  ``_frombuffer`` for protocol 5), under numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``)
  module names;
* scipy CSC/CSR matrices (SMPL's ``J_regressor``), whose index arrays are checked on load, so a
  crafted matrix cannot make ``toarray()`` write outside its buffer;
* any ``chumpy`` class, as the inert :class:`ChumpyStandIn` (chumpy itself is never imported);
* the few builtins, ``_codecs`` and ``copyreg`` entries that real files use, each narrowed to
  what pickle itself emits (e.g. ``_codecs.encode`` for latin-1 only).

Every other name is refused before anything is called. Callables are handed out wrapped, so a
file cannot change them with a BUILD opcode either.
"""

from __future__ import annotations

import copyreg
import importlib
import io
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from dancegen.errors import InputError

# numpy 2 renamed numpy.core to numpy._core; files pickled under numpy 1 use the old names.
# Python 2 (and Python 3 at protocols < 3) name builtins and copyreg the Python 2 way.
_MODULE_ALIASES = {
    "__builtin__": "builtins",
    "copy_reg": "copyreg",
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
    "scipy.sparse.csc": "scipy.sparse._csc",
    "scipy.sparse.csr": "scipy.sparse._csr",
}
_LATIN1 = ("latin1", "latin-1", "iso-8859-1")
_NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex


class ChumpyStandIn:
    """Takes the place of any chumpy class: keeps whatever state was pickled, nothing else."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ChumpyStandIn:
        return super().__new__(cls)  # chumpy's own __new__ took arguments; ignore them

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Allowed:
    """An allow-listed callable as the unpickler hands it out: callable, and immutable
    (a pickle's BUILD opcode on it is refused instead of changing a function for the process)."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("refusing to set state on an allow-listed callable")


class _ArrayClass:
    """What ``numpy.ndarray`` resolves to: the argument ``_reconstruct`` needs, but not the
    ndarray constructor itself (which would take any shape, buffer, offset and strides)."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("refusing to set state on numpy.ndarray")


_ARRAY_CLASS = _ArrayClass()
_multiarray = importlib.import_module("numpy._core.multiarray")
_numeric = importlib.import_module("numpy._core.numeric")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` for plain ndarrays only (the state comes with BUILD)."""
    if subtype is not _ARRAY_CLASS:
        raise pickle.UnpicklingError("refusing an array of a class other than numpy.ndarray")
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _frombuffer(buffer: Any, *args: Any) -> np.ndarray:
    """numpy's protocol-5 array reader, for in-band bytes (object dtypes are refused by numpy)."""
    if not isinstance(buffer, bytes | bytearray):
        raise pickle.UnpicklingError("refusing a numpy buffer that is not bytes")
    return _numeric._frombuffer(buffer, *args)


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode`` as pickle uses it for bytes at protocols < 3: latin-1 only."""
    if not isinstance(text, str) or encoding not in _LATIN1:
        raise pickle.UnpicklingError("refusing _codecs.encode other than str to latin-1 bytes")
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` as pickle writes an empty bytes object (``bytes(n)`` would allocate n)."""
    if args:
        raise pickle.UnpicklingError("refusing builtins.bytes with arguments")
    return b""


def _bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    """``bytearray`` from bytes, or from a latin-1 str as protocols < 3 write it (no sizes)."""
    if isinstance(data, str) and encoding in _LATIN1:
        return bytearray(data.encode("latin-1"))
    if isinstance(data, bytes) and encoding is None:
        return bytearray(data)
    raise pickle.UnpicklingError("refusing builtins.bytearray other than from bytes")


def _object_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` for plain objects only (protocols 0 and 1)."""
    if base is not object or state is not None:
        raise pickle.UnpicklingError("refusing copyreg._reconstructor with a base other than "
                                     "object")
    return copyreg._reconstructor(cls, object, None)


def _checked_sparse(base: type) -> type:
    """``base`` (a scipy compressed matrix class) whose unpickled state is checked in full:
    scipy's kernels trust ``indices`` and ``indptr``, a crafted file must not."""

    def __setstate__(self: Any, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{base.__name__}: state is not a dict")
        self.__dict__.update(state)
        data = getattr(self, "data", None)
        if not isinstance(data, np.ndarray) or data.dtype.kind not in _NUMERIC_KINDS:
            raise pickle.UnpicklingError(f"{base.__name__}: data is not a numeric array")
        self.check_format(full_check=True)

    return type(base.__name__, (base,), {"__setstate__": __setstate__, "__module__": __name__,
                                         "__qualname__": base.__name__})


_CSC, _CSR = _checked_sparse(sp.csc_matrix), _checked_sparse(sp.csr_matrix)

# Exact (module, name) pairs, after _MODULE_ALIASES, and what each resolves to.
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy._core.multiarray", "_reconstruct"): _Allowed(_reconstruct),
    ("numpy._core.multiarray", "scalar"): _Allowed(_multiarray.scalar),
    ("numpy._core.numeric", "_frombuffer"): _Allowed(_frombuffer),
    ("numpy", "ndarray"): _ARRAY_CLASS,
    ("numpy", "dtype"): np.dtype,
    ("scipy.sparse._csc", "csc_matrix"): _CSC,
    ("scipy.sparse", "csc_matrix"): _CSC,
    ("scipy.sparse._csr", "csr_matrix"): _CSR,
    ("scipy.sparse", "csr_matrix"): _CSR,
    ("builtins", "object"): object,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytes"): _Allowed(_empty_bytes),
    ("builtins", "bytearray"): _Allowed(_bytearray),
    ("_codecs", "encode"): _Allowed(_latin1_encode),
    ("copyreg", "_reconstructor"): _Allowed(_object_reconstructor),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names in :data:`ALLOWED` (and chumpy classes, as stand-ins)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyStandIn  # inert: no chumpy code exists in this process
        found = ALLOWED.get((_MODULE_ALIASES.get(module, module), name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: only numpy arrays, scipy sparse matrices and plain "
                "values may be unpickled")
        return found


def safe_loads(data: bytes, where: str, what: str) -> Any:
    """Unpickle ``data`` (Python 2 or 3, any protocol) without running code.

    Any failure, a refused name included, is an InputError "``where``: not a readable
    ``what`` (reason)" on one line.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as error:  # corrupt, truncated, refused: all mean "not this kind of file"
        reason = " ".join(str(error).split()) or type(error).__name__
        raise InputError(f"{where}: not a readable {what} ({reason})") from None
