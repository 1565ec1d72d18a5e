"""The archive index: studies, series and instances received by the bridge, and the durable
events and jobs that follow them (stability, forwarding, audit).

Files are kept exactly as received; what the MIS says about the patient and the order lives
here, joined in when objects leave the bridge (``patient_id``/``order_id``), so a later ADT
A08, A40 or A47 changes what is served without rewriting a file. ``source_*`` columns keep
what the modality sent (decoded to Unicode) for unreconciled studies and the audit.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from bridge.store import people_models  # noqa: F401  (studies reference users)
from bridge.store.models import Base, utcnow

#: Study.state values.
RECEIVING, STABLE = "receiving", "stable"
#: Study.reconciliation values: matched to an order automatically, assigned by an operator,
#: or waiting in the queue.
MATCHED, ASSIGNED, QUEUED = "matched", "assigned", "queued"
#: No order, but the PatientID names a patient the MIS registered (an unscheduled exam): the
#: study belongs to that patient; an order arriving later still attaches to it.
LINKED = "linked"
#: Objects of the study name two different patients: only an operator can decide.
CONFLICT = "conflict"
#: The MIS values apply to these (the study has a patient): they are served, forwarded and
#: published with them.
RECONCILED = frozenset({MATCHED, ASSIGNED, LINKED})
#: ``reconciled_by`` as operators see it: how the study came to its MIS patient.
RECONCILED_BY = {MATCHED: "order", LINKED: "patient", ASSIGNED: "operator"}

#: Study.queue_kind values: why a queued study waits.
#: ``unmatched``: nothing names an order or a known patient; ``patient_mismatch``: the
#: PatientID names an MIS patient whose birth date or name the objects contradict
#: (``candidate_patient_id``); ``conflict``: objects of the study name two patients.
UNMATCHED, PATIENT_MISMATCH = "unmatched", "patient_mismatch"
QUEUE_KINDS = (UNMATCHED, PATIENT_MISMATCH, CONFLICT)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_uploaded_by", "uploaded_by"),
        Index("ix_studies_accession", "accession"),
        Index("ix_studies_date", "study_date", "study_time"),
        Index("ix_studies_state_received", "state", "last_received_at"),
        Index("ix_studies_reconciliation", "reconciliation", "created_at"),
        Index("ix_studies_source_patient", "source_patient_id"),
        Index("ix_studies_stable_longterm", "state", "longterm_at", "stable_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    #: The MIS patient (None while the study waits in the reconciliation queue).
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    source_patient_id: Mapped[str] = mapped_column(String(64), default="")
    source_issuer: Mapped[str] = mapped_column(String(64), default="")
    source_patient_name: Mapped[str] = mapped_column(String(320), default="")
    #: ``source_patient_name`` case-folded (as ``patients.name_search``).
    source_name_search: Mapped[str] = mapped_column(String(320), default="")
    source_birth_date: Mapped[str] = mapped_column(String(8), default="")
    source_sex: Mapped[str] = mapped_column(String(1), default="")
    #: AccessionNumber as the modality sent it (the order's accession wins when matched).
    accession: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(14), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(256), default="")
    referring_physician: Mapped[str] = mapped_column(String(320), default="")
    #: Backslash-joined, as ModalitiesInStudy.
    modalities: Mapped[str] = mapped_column(String(64), default="")
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16), default=RECEIVING)
    reconciliation: Mapped[str] = mapped_column(String(16), default=QUEUED)
    #: How the order was found: accession, study_uid, patient, operator.
    match_key: Mapped[str | None] = mapped_column(String(32))
    #: Why the study waits in the queue (human-readable, no PHI).
    queue_reason: Mapped[str | None] = mapped_column(Text)
    #: Why it waits, as a code (:data:`QUEUE_KINDS`); None once reconciled.
    queue_kind: Mapped[str | None] = mapped_column(String(32))
    #: ``patient_mismatch``: the MIS patient the PatientID names (shown beside the
    #: modality's values so an operator can decide); never applied to what leaves.
    candidate_patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    #: The clinician who uploaded it (STOW-RS under their login): they may see it.
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    last_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stable_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Every instance has a verified long-term copy (reset when a new object arrives).
    longterm_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Every online file was removed by cleanup (reset by a recall or a new object).
    online_removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(256), default="")
    body_part: Mapped[str] = mapped_column(String(16), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    #: Denormalised from the series: study-level retrieval needs no join.
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    #: Path of the Part 10 file, relative to the archive root.
    path: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    #: Charset for 8-bit text in a file without Specific Character Set (the peer's setting).
    source_charset: Mapped[str | None] = mapped_column(String(32))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Set when online cleanup removed the file; the bytes are then only in other tiers.
    online_removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Lossless compression (:mod:`bridge.services.compression.compressor`): the file as
    #: received had
    #: this size and transfer syntax; ``size``/``sha256``/``transfer_syntax_uid`` now describe
    #: the compressed file (ratio = original_size / size). None while never compressed.
    original_size: Mapped[int | None] = mapped_column(BigInteger)
    original_transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    compressed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StudyEvent(Base):
    """Durable facts about studies (stable, reopened, reconciled, ...), written in the same
    transaction as the change, for consumers (forwarding, FHIR publishing) and operators."""

    __tablename__ = "study_events"
    __table_args__ = (Index("ix_study_events_study", "study_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    kind: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """A durable work item (outbox): claimed by a worker, retried with back-off, and kept as
    ``failed`` (the dead-letter list) when it cannot succeed, until an operator requeues it."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_queue_status_due", "queue", "status", "next_attempt_at"),
        Index("ix_jobs_queue_key", "queue", "dedup_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue: Mapped[str] = mapped_column(String(32))
    #: Jobs with the same key in a queue are one piece of work (e.g. forward study X to Y).
    dedup_key: Mapped[str | None] = mapped_column(String(160))
    payload: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    #: pending → running → done | failed (pending again after a retryable error).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class AuditRecord(Base):
    """One access to patient data or one change, append-only and hash-chained (see
    :mod:`bridge.store.audit`, the only writer): who did what to which record, with which
    outcome, for which patient (an identifier, never a name)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_entity", "entity", "entity_id"),
        Index("ix_audit_seq", "seq", unique=True),
        Index("ix_audit_actor_at", "actor", "at"),
        Index("ix_audit_patient", "patient_ref"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Position in the chain, 1, 2, 3, ... with no gaps.
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128), default="")
    action: Mapped[str] = mapped_column(String(32))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    #: success | failure (a refused login, a denied read).
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    #: The MIS patient the record concerns (``issuer|id``), for "who looked at this patient".
    patient_ref: Mapped[str | None] = mapped_column(String(96))
    details: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
