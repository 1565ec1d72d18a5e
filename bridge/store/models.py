"""SQLAlchemy 2 models: the database is the truth for patients, orders and the worklist.

Dates and times are kept as DICOM strings (``YYYYMMDD``, ``HHMMSS``): they sort correctly,
match DICOM range queries directly and avoid time-zone guessing for local schedule times.
Indexes are chosen for the worklist queries modalities send (station AE + date, modality +
date, patient ID, accession); see ``tests/integration/test_query_plans.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (
        Index("ix_patients_updated_at", "updated_at"),
        # Only merged patients: a new patient's row then touches one index page fewer.
        Index("ix_patients_merged_into_id", "merged_into_id",
              sqlite_where=text("merged_into_id IS NOT NULL"),
              postgresql_where=text("merged_into_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: DICOM PN layout: ``Family^Given^Middle^Prefix^Suffix`` (one alphabetic group).
    name: Mapped[str] = mapped_column(String(320), default="")
    #: ``name`` case-folded, for case-insensitive matching in every database and script.
    name_search: Mapped[str] = mapped_column(String(320), default="", index=True)
    birth_date: Mapped[str | None] = mapped_column(String(8))
    sex: Mapped[str | None] = mapped_column(String(1))
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    identifiers: Mapped[list[PatientIdentifier]] = relationship(
        back_populates="patient", order_by="PatientIdentifier.position"
    )


class PatientIdentifier(Base):
    __tablename__ = "patient_identifiers"
    __table_args__ = (UniqueConstraint("value", "issuer", name="uq_patient_identifier"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    value: Mapped[str] = mapped_column(String(64))
    #: Assigning authority (CX.4 / IssuerOfPatientID); '' when the sender gave none.
    issuer: Mapped[str] = mapped_column(String(64), default="")
    #: Identifier type code (CX.5: MR, NI, PPN, ...).
    id_type: Mapped[str] = mapped_column(String(16), default="")
    #: Order within the patient's identifiers: 0 is the primary one (PatientID in DICOM).
    position: Mapped[int] = mapped_column(Integer, default=0)

    patient: Mapped[Patient] = relationship(back_populates="identifiers")


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("placer_number", "placer_issuer", name="uq_order_placer"),
        Index("ix_orders_accession", "accession"),
        # Orders from the MIS usually have no filler number yet: index only those that do.
        Index("ix_orders_filler", "filler_number",
              sqlite_where=text("filler_number IS NOT NULL"),
              postgresql_where=text("filler_number IS NOT NULL")),
        Index("ix_orders_study_uid", "study_instance_uid"),
        Index("ix_orders_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    placer_number: Mapped[str | None] = mapped_column(String(64))
    placer_issuer: Mapped[str] = mapped_column(String(64), default="")
    filler_number: Mapped[str | None] = mapped_column(String(64))
    filler_issuer: Mapped[str] = mapped_column(String(64), default="")
    accession: Mapped[str | None] = mapped_column(String(16))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    requested_procedure_id: Mapped[str | None] = mapped_column(String(16))
    procedure_code: Mapped[str | None] = mapped_column(String(64))
    procedure_scheme: Mapped[str | None] = mapped_column(String(64))
    procedure_meaning: Mapped[str | None] = mapped_column(String(256))
    procedure_description: Mapped[str | None] = mapped_column(String(256))
    #: DICOM RequestedProcedurePriority: STAT, HIGH, ROUTINE, MEDIUM, LOW.
    priority: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(1024))
    requesting_physician: Mapped[str | None] = mapped_column(String(320))
    referring_physician: Mapped[str | None] = mapped_column(String(320))
    admission_id: Mapped[str | None] = mapped_column(String(64))
    #: ImagingServiceRequestComments (FHIR ServiceRequest.note).
    comments: Mapped[str | None] = mapped_column(Text)
    #: IssueDate/TimeOfImagingServiceRequest (FHIR ServiceRequest.authoredOn, local time).
    issue_date: Mapped[str | None] = mapped_column(String(8))
    issue_time: Mapped[str | None] = mapped_column(String(14))
    status: Mapped[str] = mapped_column(String(16), default="SCHEDULED")
    source: Mapped[str] = mapped_column(String(16), default="hl7")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    patient: Mapped[Patient] = relationship()
    steps: Mapped[list[ProcedureStep]] = relationship(
        back_populates="order", order_by="ProcedureStep.id"
    )


class ProcedureStep(Base):
    __tablename__ = "procedure_steps"
    __table_args__ = (
        UniqueConstraint("order_id", "sps_id", name="uq_step_order_sps"),
        Index("ix_steps_station_date", "station_ae", "start_date", "start_time"),
        Index("ix_steps_modality_date", "modality", "start_date", "start_time"),
        Index("ix_steps_date", "start_date", "start_time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Served by uq_step_order_sps, whose leading column it is.
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    sps_id: Mapped[str] = mapped_column(String(16))
    station_ae: Mapped[str | None] = mapped_column(String(16))
    station_name: Mapped[str | None] = mapped_column(String(16))
    location: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    start_date: Mapped[str | None] = mapped_column(String(8))
    start_time: Mapped[str | None] = mapped_column(String(14))
    description: Mapped[str | None] = mapped_column(String(256))
    performing_physician: Mapped[str | None] = mapped_column(String(320))
    #: Scheduled Protocol Code Sequence items: ``[{"code", "scheme", "meaning"}]``.
    protocol_codes: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    #: DICOM SPS status: SCHEDULED, ARRIVED, READY, STARTED, COMPLETED, DISCONTINUED, CANCELED.
    status: Mapped[str] = mapped_column(String(16), default="SCHEDULED", index=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    order: Mapped[Order] = relationship(back_populates="steps")


class HL7Message(Base):
    """The message log: every received message, committed before its ACK leaves."""

    __tablename__ = "hl7_messages"
    __table_args__ = (
        UniqueConstraint(
            "sending_application", "sending_facility", "control_id", name="uq_hl7_message_key"
        ),
        Index("ix_hl7_messages_received", "received_at"),
        Index("ix_hl7_messages_type_received", "message_type", "received_at"),
        # Browsing by status looks for the failures; the processed majority stays out of
        # this index (message_log adds the predicate so SQLite can use it).
        Index("ix_hl7_messages_status_received", "status", "received_at",
              sqlite_where=text("status <> 'processed'"),
              postgresql_where=text("status <> 'processed'")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    peer: Mapped[str | None] = mapped_column(String(128))
    sending_application: Mapped[str | None] = mapped_column(String(180))
    sending_facility: Mapped[str | None] = mapped_column(String(180))
    control_id: Mapped[str | None] = mapped_column(String(199))
    message_type: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[str | None] = mapped_column(String(16))
    charset: Mapped[str | None] = mapped_column(String(32))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    text: Mapped[str | None] = mapped_column(Text)
    #: received → processed | error | rejected
    status: Mapped[str] = mapped_column(String(16), default="received")
    accept_ack: Mapped[str | None] = mapped_column(Text)
    ack: Mapped[str | None] = mapped_column(Text)
    ack_code: Mapped[str | None] = mapped_column(String(2))
    error: Mapped[str | None] = mapped_column(Text)
    error_location: Mapped[str | None] = mapped_column(String(32))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class PerformedProcedureStep(Base):
    """MPPS instances created by modalities (N-CREATE) and updated by them (N-SET)."""

    __tablename__ = "performed_procedure_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    step_id: Mapped[int | None] = mapped_column(ForeignKey("procedure_steps.id"), index=True)
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    #: The MPPS attributes as DICOM JSON, as last set by the modality.
    attributes: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    #: SHA-256 of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def table_of(model: type[Base]) -> Table:
    """A model's Core table, typed as one (``__table__`` is typed as a generic FromClause)."""
    return cast(Table, model.__table__)
