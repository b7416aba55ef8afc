"""Where bytes live: one class for a local folder or an ``s3://bucket/prefix`` URL.

Credentials never pass through dancegen: s3fs/botocore read them from the environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...). The only S3 option dancegen sets
is the endpoint, read from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, for S3-compatible stores.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import fsspec
import fsspec.asyn
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

    def tensorstore_kvstore(self, key: str) -> dict[str, Any]:
        """A tensorstore kvstore spec of ``key`` below this location (the readers' fast path:
        C++ decoding and concurrent chunk reads). S3: the same endpoint as fsspec; the
        credentials come from tensorstore's own AWS chain (environment, profile)."""
        if self.is_local:
            return {"driver": "file", "path": self.path(key) + "/"}
        bucket, _, prefix = self.path(key).partition("/")
        spec: dict[str, Any] = {"driver": "s3", "bucket": bucket, "path": prefix + "/"}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            spec["endpoint"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            spec["aws_region"] = region
        return spec

    # --- small JSON documents (records, manifests): each is written whole or not at all ---

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (temp + rename locally; one PUT on S3)."""
        if self.is_local:
            target = Path(self.path(key))
            with _temp_file(target, data) as tmp:
                os.replace(tmp, target)
        else:
            self.fs.pipe_file(self.path(key), data)

    def create_json(self, key: str, document: dict[str, Any]) -> str | None:
        """Write ``document`` at ``key`` only if nothing is there: its version, or None if
        something is.

        Exclusive and whole: locally a complete temp file is hard-linked into place (the link
        fails if the key exists); on S3 one PUT with ``If-None-Match: *``.
        """
        data = _json_bytes(document)
        if not self.is_local:
            return self._s3_put(key, data, IfNoneMatch="*")
        target = Path(self.path(key))
        with _temp_file(target, data) as tmp:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return None
        return _digest(data)

    # --- compare-and-swap on one small document (the build lease) ---
    # A version is the S3 ETag, or locally the content's digest: a writer whose documents
    # never repeat (the lease counts its heartbeats) gets a true compare-and-swap either way.

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The bytes at ``key`` and their version (from one read), or None when it does not
        exist."""
        if self.is_local:
            data = self.read_bytes(key)
            return None if data is None else (data, _digest(data))
        bucket, name, _ = self.fs.split_path(self.path(key))

        async def get() -> tuple[bytes, str]:
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=name)
            try:
                return await response["Body"].read(), response["ETag"]
            finally:
                response["Body"].close()

        try:
            return fsspec.asyn.sync(self.fs.loop, get)
        except FileNotFoundError:
            return None

    def replace_json_if(self, key: str, document: dict[str, Any], version: str) -> str | None:
        """Replace the document at ``key`` only if it is still ``version``: the new version, or
        None when it changed or went away (S3: one PUT with ``If-Match``; locally a temp file
        renamed into place under an ``flock`` on ``<key>.lock``, after comparing)."""
        data = _json_bytes(document)
        if not self.is_local:
            return self._s3_put(key, data, IfMatch=version)
        target = Path(self.path(key))
        with _locked(target):
            if _file_version(target) != version:
                return None
            with _temp_file(target, data) as tmp:
                os.replace(tmp, target)
        return _digest(data)

    def delete_if(self, key: str, version: str) -> bool:
        """Remove ``key`` only if it is still ``version``; False when it changed or is gone."""
        if self.is_local:
            target = Path(self.path(key))
            with _locked(target):
                if _file_version(target) != version:
                    return False
                target.unlink()
            return True
        bucket, name, _ = self.fs.split_path(self.path(key))
        try:
            # a server that ignores a conditional delete's If-Match (AWS honours it since
            # 2025-09) still gets the HEAD's check: only a change in between is missed
            if self.fs.call_s3("head_object", Bucket=bucket, Key=name)["ETag"] != version:
                return False
            self.fs.call_s3("delete_object", Bucket=bucket, Key=name, IfMatch=version)
        except OSError as error:
            if _lost_race(error):
                return False
            raise
        finally:
            self.fs.invalidate_cache(self.path(key))
        return True

    def _s3_put(self, key: str, data: bytes, **condition: str) -> str | None:
        """One conditional PUT: the new ETag, or None when its precondition did not hold."""
        bucket, name, _ = self.fs.split_path(self.path(key))
        try:
            response = self.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=data,
                                       **condition)
        except OSError as error:
            if _lost_race(error):
                return None
            raise
        finally:
            self.fs.invalidate_cache(self.path(key))
        return response["ETag"]

    def read_bytes(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None when it does not exist."""
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            return None

    def write_json(self, key: str, document: dict[str, Any]) -> None:
        """Write ``document`` at ``key`` atomically (see :meth:`write_bytes`)."""
        self.write_bytes(key, _json_bytes(document))

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

    def listed_versions(self) -> dict[str, str]:
        """Every file under the location -> its cheap version (size + mtime locally, size +
        ETag on S3), from one recursive listing; keys are relative to the location."""
        found = self.fs.find(self.root, detail=True)
        root = self.root.rstrip("/") + "/"
        return {path.removeprefix(root): _listed_version(info)
                for path, info in sorted(found.items())}

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


# S3 error codes of a conditional request that lost: the object changed (412), a concurrent
# conditional request on it (409), or it is gone (If-Match on a missing key)
_LOST_RACE_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}


def _lost_race(error: OSError) -> bool:
    """Whether s3fs's translation of a ClientError says a precondition did not hold."""
    if isinstance(error, FileExistsError | FileNotFoundError):
        return True
    response = getattr(error.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code") in _LOST_RACE_CODES


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True).encode()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_version(target: Path) -> str | None:
    try:
        return _digest(target.read_bytes())
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _temp_file(target: Path, data: bytes) -> Iterator[str]:
    """A complete temp file holding ``data`` next to ``target``, removed afterwards whatever
    happens (a rename or link that moved it into place leaves nothing to remove).

    Opened with mode 0o666 so that the kernel applies the umask (and a default ACL), as for
    any new file; ``NamedTemporaryFile`` would make every written file 0600.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    name = str(target.parent / f".tmp-{uuid.uuid4().hex}")  # short: the target's name may be long
    try:
        with os.fdopen(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
            file.write(data)
        yield name
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<target>.lock`` (never removed: removing a lock file
    lets two writers lock two different files)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{target}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def split_url(url: str | Path) -> tuple[StoreLocation, str]:
    """(folder location, file name) of a file given as a local path or s3:// URL."""
    folder, name = posixpath.split(str(url).rstrip("/"))
    return StoreLocation.parse(folder or "."), name


def _listed_version(info: dict[str, Any]) -> str:
    return f"{info.get('size')}:{info.get('ETag') or info.get('mtime') or info.get('LastModified')}"


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
    return _listed_version(info)

