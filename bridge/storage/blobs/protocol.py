"""Blob stores: where copies of archived files live outside the online archive.

One interface (:class:`BlobStore`) for the long-term tier's two backends: a local (or
mounted) file system (:mod:`bridge.storage.blobs.file_store`) and S3-compatible object storage
such as SeaweedFS or MinIO (:mod:`bridge.storage.blobs.s3_store`). The tier is chosen by
``BRIDGE_LONGTERM_URL``: ``file:///path`` or ``s3://bucket/prefix``; empty means none.

Keys are the instance's archive path (``instances.path``) under the URL's prefix, so a key
names one version of one instance: uploading it again (a rerun after a crash) overwrites
the same object instead of adding another, and a replaced instance (new file, new path) gets
a new key.

Errors are two: :class:`BlobMissing` (the store answered; the object is not there) and
:class:`StoreUnavailable` (the store cannot be asked: down, refusing credentials, no such
bucket). Their messages name the store and the key, never patient data (keys are UIDs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

#: Bytes per read while hashing or copying a stream.
CHUNK = 1 << 20


class BlobStoreError(Exception):
    """A blob store operation failed."""


class BlobMissing(BlobStoreError):
    """The store answered, and has no object under the key."""


class StoreUnavailable(BlobStoreError):
    """The store could not be asked (down, timeout, credentials, no such bucket/folder)."""


@runtime_checkable
class BlobStore(Protocol):
    """A flat key → bytes store, as the long-term tier needs it."""

    #: ``file`` or ``s3`` (``instance_copies.backend``).
    backend: str
    #: The tier's base URL (``instance_copies.location``): ``file:///path``, ``s3://b/p``.
    location: str

    def key_for(self, archive_path: str) -> str:
        """The key of an instance's copy, from its archive path (relative, ``/``-separated)."""
        ...

    def put(self, source: Path, key: str) -> int:
        """Store the file's bytes under ``key`` (replacing what was there); their size. Once
        this returns, the bytes are durable in the store."""
        ...

    def put_bytes(self, data: bytes, key: str) -> int:
        """As :meth:`put`, from bytes in memory."""
        ...

    def fetch(self, key: str, target: BinaryIO) -> str:
        """Write the stored bytes into ``target``; the SHA-256 (hex) of what was written."""
        ...

    def sha256(self, key: str) -> str:
        """Read the stored bytes back and hash them (what "verified" means)."""
        ...

    def size(self, key: str) -> int | None:
        """The stored object's size, None when there is none (a HEAD request)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object (nothing happens when there is none)."""
        ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (relative to the store's own prefix is not implied:
        ``prefix`` is a full key prefix, as :meth:`key_for` returns)."""
        ...

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers (a cheap request)."""
        ...


def hash_stream(stream: BinaryIO, target: BinaryIO | None = None) -> str:
    """SHA-256 of a stream's remaining bytes, copying them to ``target`` on the way."""
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        if target is not None:
            target.write(chunk)
    return digest.hexdigest()


def join_key(prefix: str, archive_path: str) -> str:
    """``prefix/archive_path``, refusing paths that could leave the prefix."""
    parts = archive_path.split("/")
    if not archive_path or archive_path.startswith("/") or any(p in ("", ".", "..")
                                                               for p in parts):
        raise ValueError(f"not a relative archive path: {archive_path!r}")
    return f"{prefix}/{archive_path}" if prefix else archive_path
