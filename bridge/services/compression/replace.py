"""Replacing one stored file by its losslessly compressed version, safely.

The steps, each finished before the next starts:

1. :func:`prepare_replacement` reads the stored file, encodes its pixel data, writes the new
   file under a staging name next to the old one (``.<name>.part``), fsyncs it, reads it
   back and checks it: the decoded pixel data must equal the original bit for bit, and every
   other element of the header must hold the same value bytes. Only then is it renamed to its
   final name (``<SOP Instance UID>.<random>.<codec>.dcm``) and the directory fsynced.
2. :func:`commit_replacement` points the instance row at the new file in one transaction
   (path, size, sha256, transfer syntax, and the original size and syntax), guarded by the
   old path and checksum: a row that changed meanwhile (a replacing duplicate, a deletion)
   is left alone and the new file removed. The same transaction queues the removal of the
   old file (:data:`ORIGINALS_QUEUE`), due ``keep_original_seconds`` later, so a retrieve
   that looked up the old path just before still finds it.
3. :func:`remove_originals` (the queued job) removes an old file once no instance row names
   it any more.

A crash at any point leaves either the old state (the row names the old file) or the new one
(the row names the new file and the removal is queued), plus at most one orphan: a staging
``.part`` file, or a complete new file no row names (crash between 1 and 2). An orphan is a
file under the archive root whose relative path is in no ``instances.path``:
:func:`orphans` lists them for a study's folder; they are safe to delete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.jobs import queue
from bridge.storage import codecs
from bridge.storage.codecs import Unsupported
from bridge.storage.durable import fsync_dir, sha256_of
from bridge.store.archive_models import Instance, Study
from bridge.store.models import table_of

log = logging.getLogger("bridge.compression")

I = table_of(Instance)  # noqa: E741
S = table_of(Study)

#: Jobs removing original files after their grace period.
ORIGINALS_QUEUE: Final = "compression-originals"
_SUFFIX: Final = {"jpeg-ls": "jls", "jpeg2000": "j2k", "rle": "rle"}


@dataclass(frozen=True, slots=True)
class Candidate:
    """An instance as the index described it when compression started."""

    instance_id: int
    study_id: int
    sop_instance_uid: str
    path: str
    size: int
    sha256: str
    transfer_syntax_uid: str


@dataclass(frozen=True, slots=True)
class Replacement:
    """A verified compressed file at its final name, not yet named by the index."""

    path: str
    size: int
    sha256: str
    transfer_syntax_uid: str
    codec: str


def prepare_replacement(root: Path, candidate: Candidate, codec: str, *,
                        max_pixel_bytes: int) -> Replacement:
    """Step 1. :class:`~bridge.storage.codecs.Unsupported` (with its reason) when the object
    is left as it is; ``OSError`` when the disk fails us (worth another try)."""
    old = root / candidate.path
    dataset = dcmread(old)
    layout = codecs.pixel_layout(dataset)
    if layout.nbytes > max_pixel_bytes:
        raise Unsupported(f"pixel data of {layout.nbytes} bytes is above "
                          "BRIDGE_COMPRESSION_MAX_PIXEL_BYTES")
    codecs.check_codec(layout, codec)
    original = codecs.original_pixels(dataset, layout)  # a view of the original bytes
    codecs.check_values_fit(original, layout)
    codecs.encode(dataset, codec)
    # Named like the files intake places (UID, random part), with the codec: never reused.
    final = old.with_name(f"{candidate.sop_instance_uid}.{secrets.token_hex(3)}."
                          f"{_SUFFIX[codec]}.dcm")
    staging = final.with_name(f".{final.name}.part")
    try:
        with staging.open("xb") as fp:
            dcmwrite(fp, dataset, enforce_file_format=True)
            fp.flush()
            os.fsync(fp.fileno())
        del dataset
        if staging.stat().st_size >= candidate.size:  # noise defeats RLE, for one
            raise Unsupported(f"{codec} would not make it smaller")
        _verify(old, staging, original, layout)
        os.replace(staging, final)
        fsync_dir(final.parent)
    except BaseException:
        _remove(staging)
        _remove(final)
        raise
    return Replacement(path=str(Path(candidate.path).with_name(final.name).as_posix()),
                       size=final.stat().st_size, sha256=sha256_of(final),
                       transfer_syntax_uid=codecs.ENCODERS[codec][0], codec=codec)


def _verify(old: Path, new: Path, original: np.ndarray[Any, Any], layout: codecs.PixelLayout
            ) -> None:
    """The file as written decodes to the original pixels and keeps every other value."""
    written = dcmread(new)
    try:
        decoded = codecs.decoded_pixels(written, layout)
    except Exception as exc:
        raise Unsupported(f"the compressed file cannot be decoded ({type(exc).__name__}); "
                          "kept the original") from None
    if not codecs.identical(original, decoded):
        raise Unsupported("decoded pixel data differs from the original; kept the original")
    differences = codecs.header_differences(dcmread(old, stop_before_pixels=True),
                                            dcmread(new, stop_before_pixels=True))
    if differences:
        raise Unsupported(f"header values changed when re-encoded ({', '.join(differences[:5])})"
                          "; kept the original")


def commit_replacement(session: Session, root: Path, candidate: Candidate,
                       replacement: Replacement, *, now: datetime,
                       keep_original_seconds: float) -> bool:
    """Step 2: point the row at the new file and queue the old one's removal, committed.
    False (and the new file removed) when the row no longer names the old file."""
    try:
        changed = session.connection().execute(update(I).where(
            I.c.id == candidate.instance_id, I.c.path == candidate.path,
            I.c.sha256 == candidate.sha256, I.c.online_removed_at.is_(None),
        ).values(path=replacement.path, size=replacement.size, sha256=replacement.sha256,
                 transfer_syntax_uid=replacement.transfer_syntax_uid,
                 original_size=candidate.size,
                 original_transfer_syntax_uid=candidate.transfer_syntax_uid,
                 compressed_at=now)).rowcount
        if changed:
            session.execute(update(S).where(S.c.id == candidate.study_id).values(
                size_bytes=S.c.size_bytes + (replacement.size - candidate.size)))
            queue.enqueue(session, queue=ORIGINALS_QUEUE, payload={"paths": [candidate.path]},
                          delay=keep_original_seconds, now=now)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    if not changed:
        log.info("instance %s changed while it was compressed; the new file is dropped",
                 candidate.instance_id)
        _remove(root / replacement.path)
    return bool(changed)


def remove_unreferenced(session: Session, root: Path, paths: Iterable[str]) -> list[str]:
    """Step 3: remove the files no instance row names (checked in a fresh read); returns
    the removed paths. Paths still named are kept: an index row always has its file."""
    paths = list(paths)
    named = set(session.execute(select(I.c.path).where(I.c.path.in_(paths))).scalars())
    session.rollback()  # end the read: nothing is held while files go
    removed = []
    for relative in paths:
        if relative in named:
            continue
        target = root / relative
        _remove(target)
        with contextlib.suppress(OSError):
            fsync_dir(target.parent)
        removed.append(relative)
    return removed


def orphans(session: Session, root: Path, folder: str) -> list[str]:
    """Files under ``root/folder`` (relative paths) that no instance row names: leftovers of a
    compression (or an intake) interrupted before its commit, safe to delete."""
    base = root / folder
    if not base.is_dir():
        return []
    found = sorted(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())
    named = set(session.execute(select(I.c.path).where(I.c.path.in_(found))).scalars()) \
        if found else set()
    return [p for p in found if p not in named]


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
