"""The long-term tier on a file system (``file:///path``): a local disk, or a NAS mount.

A key is a relative path under the root. :meth:`FileBlobStore.put` writes a temporary file
next to the target (same directory, so the rename is atomic), fsyncs it, renames it over the
key and fsyncs the directory (and every directory it had to create), so after a crash a key
holds either its complete bytes or nothing. A crash mid-copy leaves a hidden ``.*.part``
file: the next put of the same key removes it, and :meth:`keys` never lists one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from bridge.storage.blobs.protocol import BlobMissing, StoreUnavailable, hash_stream, join_key
from bridge.storage.durable import fsync_dir

_PART = ".part"


class FileBlobStore:
    backend = "file"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = f"file://{root.as_posix()}"

    def key_for(self, archive_path: str) -> str:
        return join_key("", archive_path)

    def _path(self, key: str) -> Path:
        return self.root / join_key("", key)

    def put(self, source: Path, key: str) -> int:
        self.check()
        target = self._path(key)
        _make_dirs(target.parent, self.root)
        for stale in target.parent.glob(f".{target.name}.*{_PART}"):  # a killed earlier put
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}{_PART}")
        try:
            with source.open("rb") as src, staging.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
                size = dst.tell()
            os.replace(staging, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
            raise
        fsync_dir(target.parent)
        return size

    def put_bytes(self, data: bytes, key: str, *, sync_directory: bool = True) -> int:
        """As :meth:`put`, from bytes in memory. ``sync_directory=False`` leaves the fsync of
        the key's folder to the caller (one per folder for a batch: :func:`fsync_dir`)."""
        self.check()
        target = self._path(key)
        _make_dirs(target.parent, self.root)
        staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}{_PART}")
        try:
            with staging.open("wb") as dst:
                dst.write(data)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(staging, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
            raise
        if sync_directory:
            fsync_dir(target.parent)
        return len(data)

    def fetch(self, key: str, target: BinaryIO) -> str:
        with self._open(key) as stream:
            return hash_stream(stream, target)

    def sha256(self, key: str) -> str:
        with self._open(key) as stream:
            return hash_stream(stream)

    def size(self, key: str) -> int | None:
        self.check()
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self.check()
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)

    def keys(self, prefix: str = "") -> Iterator[str]:
        self.check()
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and name.endswith(_PART):
                    continue
                key = (Path(directory) / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def check(self) -> None:
        # A NAS mount that is away leaves an empty mount point or none: refuse to write
        # into it (the bytes would land on the local disk, not the long-term store).
        if not self.root.is_dir():
            raise StoreUnavailable(f"long-term folder {self.root} is not there (not mounted?)")

    def _open(self, key: str) -> BinaryIO:
        self.check()
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise BlobMissing(f"{self.location}: no object {key}") from None


def _make_dirs(directory: Path, root: Path) -> None:
    """Create ``directory`` and its missing parents under ``root``, durably: each new entry
    is fsynced in its parent, so a key's path survives a crash with the key."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir() and current != root:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        fsync_dir(path.parent)


