"""Reading and placing a received Part 10 file: the archive's only contact with file bytes.

:func:`read_received` parses the whole file structure without loading large values (pixel
data is skipped, not read), so a truncated or malformed object is refused before anything is
kept. :func:`place_file` puts a file at its archive path durably: written or renamed under a
temporary name, fsync'ed, renamed, and the directory fsync'ed, so after a crash a file is
either complete at its name or absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from bridge.errors import Rejected

#: Values longer than this are left on disk while parsing (pixel data, large blobs).
_DEFER_BYTES = 8192
_HASH_CHUNK = 1 << 20


class UnreadableObject(Rejected):
    """The bytes are not a complete DICOM data set."""

    dimse_status = 0xC000  # Cannot understand


def read_received(path: Path) -> tuple[Dataset, str]:
    """The parsed header (large values deferred) and its transfer syntax UID."""
    size = path.stat().st_size
    try:
        dataset = dcmread(path, defer_size=_DEFER_BYTES)
        transfer_syntax = str(dataset.file_meta.TransferSyntaxUID)
        for tag in list(dataset.keys()):
            element = dataset.get_item(tag, keep_deferred=True)
            # Every value must lie inside the file: pydicom reads a short value without
            # complaint, and skips a deferred one, so a truncated object would otherwise
            # be found only when someone retrieves it.
            if (isinstance(element, RawDataElement) and element.length != 0xFFFFFFFF
                    and element.value_tell + element.length > size):
                raise UnreadableObject(
                        f"data set truncated: element {tag} runs past the end of the data",
                        location=str(tag))
    except UnreadableObject:
        raise
    except (InvalidDicomError, EOFError, ValueError, struct.error, AttributeError,
            KeyError, OSError, NotImplementedError) as exc:
        raise UnreadableObject(f"not a readable DICOM data set: {type(exc).__name__}") from None
    if not len(dataset):
        raise UnreadableObject("empty data set")
    return dataset, transfer_syntax


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def place_file(source: Path, target: Path, *, move: bool, sync_dir: bool = True) -> None:
    """Put ``source`` at ``target`` durably (``move``: rename when on the same file system).
    With ``sync_dir=False`` the caller fsyncs ``target.parent`` itself (:func:`fsync_dir`),
    once for many files, before it relies on them."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.part")
    if move:
        try:
            os.replace(source, staging)
        except OSError:  # another file system: copy instead
            shutil.copyfile(source, staging)
    else:
        shutil.copyfile(source, staging)
    fd = os.open(staging, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staging, target)
    if sync_dir:
        fsync_dir(target.parent)


def remove_file(path: Path) -> None:
    """Best effort: a leftover file without an index row is harmless, a crash is not."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
