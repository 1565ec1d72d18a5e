"""The long-term tier on S3-compatible object storage (``s3://bucket/prefix``): SeaweedFS,
MinIO, Ceph RGW, AWS S3.

boto3 finds the credentials itself (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a
profile, an instance role); ``BRIDGE_S3_ENDPOINT_URL`` points it at a local store. The
region defaults to ``us-east-1`` when none is configured (local stores ignore it, and
boto3 refuses to sign without one).

Timeouts are short and retries few, so a store that is down fails a migration run in
seconds with a clear :class:`~bridge.storage.blobs.protocol.StoreUnavailable` instead of hanging the
job; the run is retried at its next interval. Large files go up in parts
(``TransferConfig``), several parts at once. One client serves every thread (boto3 clients
are thread-safe); its connection pool is sized for the migration's worker threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import S3UploadFailedError, TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bridge.storage.blobs.protocol import BlobMissing, StoreUnavailable, hash_stream, join_key

#: Files above this size are uploaded in parts of this size.
MULTIPART_BYTES = 16 * 1024 * 1024
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3BlobStore:
    backend = "s3"

    def __init__(self, *, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 connect_timeout: float = 3.0, read_timeout: float = 30.0,
                 max_attempts: int = 3, pool_size: int = 32) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.location = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        session = boto3.session.Session()
        region = session.region_name or os.environ.get("AWS_REGION") or "us-east-1"
        self.client: Any = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            config=Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                          retries={"max_attempts": max_attempts, "mode": "standard"},
                          max_pool_connections=pool_size,
                          # Path-style: local stores have no per-bucket host names.
                          s3={"addressing_style": "path"}))
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_BYTES,
                                       multipart_chunksize=MULTIPART_BYTES, max_concurrency=4)

    def key_for(self, archive_path: str) -> str:
        return join_key(self.prefix, archive_path)

    def put(self, source: Path, key: str) -> int:
        size = source.stat().st_size
        try:
            self.client.upload_file(str(source), self.bucket, key, Config=self.transfer,
                                    ExtraArgs={"ContentType": "application/dicom"})
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise self._error("upload", key, exc) from None
        return size

    def put_bytes(self, data: bytes, key: str) -> int:
        """As :meth:`put`, from bytes in memory (one PUT request)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType="application/dicom")
        except (BotoCoreError, ClientError) as exc:
            raise self._error("upload", key, exc) from None
        return len(data)

    def fetch(self, key: str, target: BinaryIO) -> str:
        body = self._get(key)
        try:
            return hash_stream(body, target)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise self._error("read", key, exc) from None
        finally:
            body.close()

    def sha256(self, key: str) -> str:
        body = self._get(key)
        try:
            return hash_stream(body)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise self._error("read", key, exc) from None
        finally:
            body.close()

    def size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            error = self._error("head", key, exc)
            if isinstance(error, BlobMissing):
                return None
            raise error from None
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            error = self._error("delete", key, exc)
            if not isinstance(error, BlobMissing):
                raise error from None

    def keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            within = prefix or (f"{self.prefix}/" if self.prefix else "")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=within):
                for item in page.get("Contents", ()):
                    yield str(item["Key"])
        except (BotoCoreError, ClientError) as exc:
            raise self._error("list", prefix, exc) from None

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(self._describe("check", self.bucket, exc)) from None

    def _get(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise self._error("read", key, exc) from None

    def _error(self, action: str, key: str, exc: Exception) -> BlobMissing | StoreUnavailable:
        if isinstance(exc, ClientError) and _code(exc) in _MISSING_CODES:
            return BlobMissing(f"{self.location}: no object {key}")
        return StoreUnavailable(self._describe(action, key, exc))

    def _describe(self, action: str, key: str, exc: Exception) -> str:
        where = self.endpoint_url or "AWS"
        reason = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        if isinstance(exc, S3UploadFailedError):
            reason = str(exc).rsplit(":", 1)[-1].strip() or reason
        return f"{self.location} at {where}: {action} {key} failed ({reason})"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
