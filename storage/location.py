"""Where bytes live: one class for a local folder or an ``s3://bucket/prefix`` URL.

Credentials never pass through dancegen: s3fs/botocore read them from the environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...). The only S3 option dancegen sets
is the endpoint, read from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, for S3-compatible stores.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import fsspec
import zarr.storage
from fsspec.implementations.local import LocalFileSystem

from dancegen.errors import StoreError


def s3_storage_options() -> dict[str, Any]:
    """fsspec options for S3: the endpoint from the environment, nothing secret."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


@dataclass(frozen=True)
class StoreLocation:
    """A root URL (local path or ``s3://``) plus helpers to address keys below it."""

    url: str

    @classmethod
    def parse(cls, url: str | Path) -> StoreLocation:
        """Normalise a CLI argument: local paths become absolute, URLs stay as given."""
        text = str(url)
        if "://" in text and not text.startswith("file://"):
            if not text.startswith("s3://"):
                raise StoreError(f"unsupported store URL {text!r}: use a local path or s3://")
            return cls(text.rstrip("/"))
        return cls(str(Path(text.removeprefix("file://")).expanduser().resolve()))

    @property
    def is_local(self) -> bool:
        """True for a folder on this machine."""
        return "://" not in self.url

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """A synchronous fsspec filesystem for this location."""
        if self.is_local:
            return LocalFileSystem(auto_mkdir=True)
        return fsspec.filesystem("s3", **s3_storage_options())

    @property
    def root(self) -> str:
        """The root as an fsspec path (no protocol)."""
        return self.url if self.is_local else self.url.removeprefix("s3://")

    def child(self, *parts: str) -> StoreLocation:
        """A location below this one."""
        return StoreLocation(posixpath.join(self.url, *parts))

    def path(self, *parts: str) -> str:
        """The fsspec path of a key below the root."""
        return posixpath.join(self.root, *parts)

    def zarr_store(self, read_only: bool = False) -> zarr.storage.StoreLike:
        """A zarr v3 store on this location (LocalStore writes shards via temp + rename)."""
        if self.is_local:
            Path(self.url).mkdir(parents=True, exist_ok=True)
            return zarr.storage.LocalStore(self.url, read_only=read_only)
        return zarr.storage.FsspecStore.from_url(
            self.url, storage_options=s3_storage_options(), read_only=read_only
        )

    # --- small JSON documents (records, manifests): each is written whole or not at all ---

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (temp + rename locally; one PUT on S3)."""
        if self.is_local:
            target = Path(self.path(key))
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, target)
        else:
            self.fs.pipe_file(self.path(key), data)

    def create_json(self, key: str, document: dict[str, Any]) -> bool:
        """Write ``document`` at ``key`` only if nothing is there; False if something is.

        Exclusive and whole: locally a complete temp file is hard-linked into place (the link
        fails if the key exists); on S3 one PUT with ``If-None-Match: *``.
        """
        data = json.dumps(document, indent=1, sort_keys=True).encode()
        if not self.is_local:
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
            except FileExistsError:
                return False
            return True
        target = Path(self.path(key))
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            tmp.write(data)
        try:
            os.link(tmp.name, target)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp.name)
        return True

    def read_bytes(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None when it does not exist."""
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            return None

    def write_json(self, key: str, document: dict[str, Any]) -> None:
        """Write ``document`` at ``key`` atomically (see :meth:`write_bytes`)."""
        self.write_bytes(key, json.dumps(document, indent=1, sort_keys=True).encode())

    def read_json(self, key: str) -> dict[str, Any] | None:
        """The document at ``key``, or None when it does not exist."""
        data = self.read_bytes(key)
        return None if data is None else json.loads(data)

    def list_json(self, prefix: str) -> dict[str, dict[str, Any]]:
        """All JSON documents directly below ``prefix``, by file name."""
        try:
            names = self.ls(prefix)
        except FileNotFoundError:
            return {}
        paths = [n for n in names if n.endswith(".json")]
        if not paths:
            return {}
        blobs = self.fs.cat(paths)
        return {posixpath.basename(p): json.loads(blobs[p]) for p in sorted(paths)}

    def ls(self, prefix: str) -> list[str]:
        """Entries directly below ``prefix``, listed afresh: s3fs caches listings per process,
        and other processes (workers, another build) add and remove records all the time."""
        path = self.path(prefix).rstrip("/") if prefix else self.root
        self.fs.invalidate_cache(path)
        return self.fs.ls(path, detail=False)

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def delete_tree(self, prefix: str) -> None:
        """Remove everything below ``prefix`` if anything is there."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(prefix), recursive=True)

    def size_bytes(self, prefix: str = "") -> int:
        """Bytes stored below ``prefix``."""
        try:
            return int(self.fs.du(self.path(prefix), total=True))
        except FileNotFoundError:
            return 0

    def check_reachable(self) -> None:
        """Fail early, with the URL in the message, when the store cannot be reached."""
        try:
            if self.is_local:
                Path(self.url).mkdir(parents=True, exist_ok=True)
            else:
                bucket = self.root.split("/", 1)[0]
                self.fs.ls(bucket, detail=False)
        except Exception as error:  # any transport/auth error: report it with the URL
            raise StoreError(f"cannot reach store {self.url}: {error}") from error


def split_url(url: str | Path) -> tuple[StoreLocation, str]:
    """(folder location, file name) of a file given as a local path or s3:// URL."""
    folder, name = posixpath.split(str(url).rstrip("/"))
    return StoreLocation.parse(folder or "."), name


def file_version(url: str | Path) -> str | None:
    """A cheap change token of one file (size + ETag or mtime), None when it does not exist.

    Workers key once-per-process caches (body model, EDGE weights) on it: a full digest would
    re-read the file for every task.
    """
    store, name = split_url(url)
    try:
        info = store.fs.info(store.path(name))
    except FileNotFoundError:
        return None
    return f"{info.get('size')}:{info.get('ETag') or info.get('mtime') or info.get('LastModified')}"

