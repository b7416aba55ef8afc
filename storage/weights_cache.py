"""Pretrained weights from a local path or S3: S3 objects are downloaded once to a local cache.

torch and diffusers need seekable local files (and memory-map the big ones), so an S3 file or
folder is copied to ``$DANCEGEN_CACHE/weights/<hash of url + change token>/`` the first time a
worker asks for it; a changed object (new ETag) gets a new cache entry. S3 keys may hold
``..`` (``weights/vae/../../x`` is a valid key): every target passes storage/paths.py's guard,
so a download never lands outside its cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path

from dancegen.errors import InputError
from dancegen.storage.location import StoreLocation, file_version, split_url
from dancegen.storage.paths import path_inside

CACHE_DIR = Path(os.environ.get("DANCEGEN_CACHE", Path.home() / ".cache" / "dancegen"))


def _download(location: StoreLocation, name: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own per download: workers starting together on one machine each write
    # their own file, and the rename makes whichever finishes the (whole) target
    partial = target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex}.partial")
    try:
        location.fs.get(location.path(name), str(partial))
        partial.replace(target)
    except BaseException:  # a failed or interrupted download leaves no partial file behind
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise


def local_file(url: str, what: str) -> Path:
    """A local file for ``url``: the file itself, or a cached download of an S3 object.

    ``what`` names the weight in the error, e.g. "Jukebox checkpoint".
    """
    location, name = split_url(url)
    version = file_version(url)
    if version is None:
        raise InputError(f"{what} not found: {url}")
    if location.is_local:
        return Path(location.path(name))
    digest = hashlib.sha256(f"{url}|{version}".encode()).hexdigest()[:16]
    target = path_inside(CACHE_DIR / "weights" / digest, name, f"{what} file name", url)
    if not target.exists():
        _download(location, name, target)
    return target


def local_folder(url: str, what: str) -> Path:
    """A local folder for ``url``: the folder itself, or a cached copy of an S3 prefix."""
    location = StoreLocation.parse(url)
    if location.is_local:
        path = Path(location.root)
        if not path.is_dir():
            raise InputError(f"{what} not found: {url} is not a folder")
        return path
    files = sorted(location.fs.find(location.root, detail=True).items())
    if not files:
        raise InputError(f"{what} not found: nothing under {url}")
    tokens = "|".join(f"{key}:{info.get('ETag', info.get('size'))}" for key, info in files)
    digest = hashlib.sha256(f"{url}|{tokens}".encode()).hexdigest()[:16]
    root = CACHE_DIR / "weights" / digest
    targets = []
    for key, _info in files:  # every key checked before anything is downloaded
        relative = key[len(location.root):].lstrip("/")
        targets.append((relative, path_inside(root, relative, f"{what} key", url)))
    for relative, target in targets:
        if not target.exists():
            _download(location, relative, target)
    return root
