"""The long-term tier's store, built from its URL: the one place that knows every backend.

:mod:`bridge.storage.blobs.protocol` holds only the interface, and the backends import it;
this module imports the backends, so nothing runs in a circle.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from bridge.config.settings import Settings
from bridge.storage.blobs.file_store import FileBlobStore
from bridge.storage.blobs.protocol import BlobStore


def open_longterm_store(settings: Settings) -> BlobStore | None:
    """The long-term tier's store from ``longterm_url``; None when no tier is configured."""
    if not settings.longterm_url:
        return None
    return open_store(settings.longterm_url, settings)


def open_store(url: str, settings: Settings) -> BlobStore:
    """A store for a tier URL (also an older ``instance_copies.location``)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileBlobStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        # boto3 takes a third of a second to import: only a tier on S3 pays for it.
        from bridge.storage.blobs.s3_store import S3BlobStore

        return S3BlobStore(bucket=parsed.netloc, prefix=parsed.path.strip("/"),
                           endpoint_url=settings.s3_endpoint_url or None)
    raise ValueError(f"not a blob store URL: {url!r} (file:///path or s3://bucket/prefix)")
