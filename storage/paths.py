"""The one path guard: names and keys that come from input files or from the store stay in
their roots.

Names read from files (a camera setting in ``cameras/mapping.txt``, a sequence name taken
from a motion file, a music id inside a sequence name, a dataset version) are joined into
keys and paths; ``../../escape`` in any of them would read or write outside the inputs root,
the store or the local cache. Every such join goes through one of these checks, which raise
an :class:`InputError` naming the file the name came from.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from dancegen.errors import InputError

MAX_NAME_LENGTH = 128
# Letters, digits, '.', '_' and '-', starting with a letter or digit: everything AIST++ and
# dancegen name (gBR_sBM_cAll_d04_mBR0_ch01, setting1, mBR0.wav, v1), and never a separator.
_SAFE_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")
_SAFE_NAME_RULE = (f"letters, digits, '.', '_' or '-', starting with a letter or digit, at most "
                   f"{MAX_NAME_LENGTH} characters, no '..'")


def is_safe_name(name: object) -> bool:
    """True for one path component that cannot leave its folder (see ``_SAFE_NAME``)."""
    return isinstance(name, str) and bool(_SAFE_NAME.fullmatch(name)) and ".." not in name


def safe_name(name: str, what: str, where: str) -> str:
    """``name`` itself when it is safe to join into a key; else an InputError naming
    ``where`` (the file or URL it came from) and ``what`` it is (e.g. "camera setting")."""
    if not is_safe_name(name):
        raise InputError(f"{where}: {what} {name!r} is not a safe name ({_SAFE_NAME_RULE})")
    return name


def safe_key(key: str, what: str, where: str) -> str:
    """A relative key (``motions/x.pkl``) whose every '/'-separated part is a safe name."""
    parts = key.split("/") if isinstance(key, str) else [key]
    for part in parts:
        if not is_safe_name(part):
            raise InputError(f"{where}: {what} {key!r} is not a safe relative key (each part: "
                             f"{_SAFE_NAME_RULE})")
    return key


def path_inside(root: Path, key: str, what: str, where: str) -> Path:
    """``root / key`` for a relative key that stays inside ``root`` (zip-slip guard).

    Looser than :func:`safe_key` on the parts, because weight folders hold names such as
    ``.gitattributes``: no part may be empty, ``.`` or ``..``, no backslash or NUL, not
    absolute; and the resolved target (symlinks followed) must lie inside the resolved root.
    """
    parts = key.split("/") if isinstance(key, str) else []
    if (not parts or any(part in ("", ".", "..") for part in parts)
            or any(c in key for c in "\\\x00") or PurePosixPath(key).is_absolute()):
        raise InputError(f"{where}: {what} {key!r} is not a relative key inside its folder")
    target = root.joinpath(*parts)
    resolved_root = root.resolve()
    if not target.resolve().is_relative_to(resolved_root):
        raise InputError(f"{where}: {what} {key!r} leads outside {resolved_root}")
    return target
