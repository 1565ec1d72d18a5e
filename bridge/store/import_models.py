"""Legacy modality import: the list of every file the importer has looked at.

One row per file *version* (path, size, mtime): a scan skips a file whose version is listed
already, without reading it, and a file changed in place (new size or mtime) is looked at
again. ``sha256`` finds the same content under another name (a modality exporting a study
twice). The row keeps what happened: ``imported`` (in the archive now), ``duplicate`` (its
content or its SOP Instance UID was there already), ``rejected`` (with the reason; the file
is left where it is), or ``directory`` (a DICOMDIR, whose referenced files have rows of
their own).

Paths can be long and in any script, so they are indexed by their SHA-256 (``path_digest``),
which keeps the index small and its keys of fixed length on every database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bridge.store.models import Base, utcnow

#: ImportedFile.status values.
IMPORTED, DUPLICATE, REJECTED, DIRECTORY = "imported", "duplicate", "rejected", "directory"


class ImportedFile(Base):
    """A file version the importer has processed, and what became of it."""

    __tablename__ = "import_files"
    __table_args__ = (
        # The quick "seen already?" check, and the guard against two importers (the CLI
        # next to the watched-folder job) recording the same file version twice.
        UniqueConstraint("path_digest", "size", "mtime_ns", name="uq_import_files_version"),
        Index("ix_import_files_sha256", "sha256"),
        Index("ix_import_files_source_at", "source", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The configured source's name (``cli`` for ``bridge import`` without ``--source``).
    source: Mapped[str] = mapped_column(String(64))
    #: Absolute path as found (may hold patient names: shown to operators, never logged).
    path: Mapped[str] = mapped_column(Text)
    #: SHA-256 of ``path`` (UTF-8, surrogates escaped), the indexed key.
    path_digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    #: SHA-256 of the content; None when the file could not be read at all.
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    #: Why it was rejected or counted as a duplicate (no patient data in it).
    reason: Mapped[str | None] = mapped_column(Text)
    #: The archived object's SOP Instance UID (the first one for a multi-page image).
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    #: How many archive objects the file gave (a multi-page TIFF gives several).
    objects: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
