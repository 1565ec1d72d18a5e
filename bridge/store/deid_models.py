"""De-identified exports and their key records (the key stays home).

- ``deid_destinations``: one row per destination name: its pseudonym secret, wrapped by the
  master key (so pseudonyms stay the same across exports and across restarts).
- ``deid_exports``: one run (a study to a destination, a grid association's objects, a
  folder of files): its data key, wrapped by the master key, and its progress.
- ``deid_studies``: a study as the destination knows it (pseudonymous Study Instance UID and
  patient), with its real identity in an encrypted record: the grid's C-FIND answers from it.
- ``deid_objects``: an object sent (or held back, with the reason): its pseudonymous UIDs in
  the clear (to recognise it when it comes back), the hashes that prove a byte-exact restore,
  and its encrypted key record (the original values and header bytes).

No column holds an original value in the clear: originals are only inside the encrypted
records (``identity``, ``record``), opened with the export's data key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bridge.store import archive_models  # noqa: F401  (exports reference studies)
from bridge.store.models import Base, utcnow


class DeidDestinationKey(Base):
    __tablename__ = "deid_destinations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: The pseudonym secret (32 bytes) wrapped by the master key ``key_id``.
    wrapped_secret: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeidExport(Base):
    __tablename__ = "deid_exports"
    __table_args__ = (
        Index("ix_deid_exports_study", "study_id"),
        Index("ix_deid_exports_destination", "destination", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))
    #: The local study exported (None: files given on the command line, the grid's objects).
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("studies.id", name="fk_deid_exports_study", ondelete="SET NULL"))
    #: api | cli | rule | grid | files
    source: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    #: queued | running | done | partial (some held back or refused) | failed
    status: Mapped[str] = mapped_column(String(16), default="queued")
    options: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: This export's data key (32 bytes) wrapped by the master key ``key_id``.
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    held: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeidStudy(Base):
    __tablename__ = "deid_studies"
    __table_args__ = (
        UniqueConstraint("destination", "pseudo_study_uid", name="uq_deid_studies_pseudo"),
        Index("ix_deid_studies_patient", "destination", "pseudo_patient"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))
    pseudo_study_uid: Mapped[str] = mapped_column(String(64))
    pseudo_patient: Mapped[str] = mapped_column(String(64))
    #: The export whose data key sealed ``identity``.
    export_id: Mapped[int] = mapped_column(
        ForeignKey("deid_exports.id", name="fk_deid_studies_export"))
    #: The real patient and study attributes (mapping.deid.reidentify.IDENTITY_KEYWORDS).
    identity: Mapped[bytes] = mapped_column(LargeBinary)
    #: Days the dates were moved back (None: not shifted).
    shift_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeidObject(Base):
    __tablename__ = "deid_objects"
    __table_args__ = (
        Index("ix_deid_objects_pseudo_sop", "pseudo_sop_uid"),
        Index("ix_deid_objects_export", "export_id", "status"),
        Index("ix_deid_objects_study", "deid_study_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    export_id: Mapped[int] = mapped_column(
        ForeignKey("deid_exports.id", name="fk_deid_objects_export"))
    deid_study_id: Mapped[int | None] = mapped_column(
        ForeignKey("deid_studies.id", name="fk_deid_objects_study"))
    #: The local instance it was made from (None: a file, a grid object).
    instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("instances.id", name="fk_deid_objects_instance", ondelete="SET NULL"))
    #: sent | held (burned-in text no rule cleans) | failed (the destination refused it)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    pseudo_sop_uid: Mapped[str | None] = mapped_column(String(64))
    pseudo_series_uid: Mapped[str | None] = mapped_column(String(64))
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    #: Where the destination keeps it (a key, a path, a WADO-RS URL).
    location: Mapped[str] = mapped_column(Text, default="")
    #: SHA-256 of the original (what a restore must give back).
    original_sha256: Mapped[str] = mapped_column(String(64), default="")
    #: SHA-256 of what was sent without its preamble and file meta (a peer rebuilds those):
    #: equal when the object comes back, it was not changed outside.
    body_sha256: Mapped[str] = mapped_column(String(64), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    #: The key record: original header bytes and the changed values (sealed).
    record: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Its original study, series and instance UIDs and those it references (sealed, small:
    #: what re-identifying an object made outside needs without opening every record).
    originals: Mapped[bytes | None] = mapped_column(LargeBinary)
    details: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
