"""Referrals (a ServiceRequest and its fulfilment Task, one row), the studies and documents
they carry, their results (DiagnosticReports), and shares of studies with clinicians.

A referral's Task status moves only along :data:`bridge.mapping.referrals.workflow.TRANSITIONS`;
every move is a row of ``referral_events`` (and an audit record) in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bridge.store import archive_models  # noqa: F401  (referrals reference studies)
from bridge.store.models import Base, utcnow


class Referral(Base):
    __tablename__ = "referrals"
    __table_args__ = (
        Index("ix_referrals_patient", "patient_id"),
        Index("ix_referrals_requester", "requester_id", "status"),
        Index("ix_referrals_owner", "owner_id", "status"),
        Index("ix_referrals_performer", "performer_kind", "performer_org_id", "status"),
        Index("ix_referrals_order", "order_id"),
        UniqueConstraint("source", "external_id", name="uq_referrals_source_external"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    #: The family doctor who refers (a user).
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: diagnostics | consultant: who may perform it.
    performer_kind: Mapped[str] = mapped_column(String(16))
    performer_org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    #: The user who performs it (the consultant asked for, or who accepted it).
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    #: What is asked for: a procedure code (diagnostics) or a specialty (consultant).
    code: Mapped[str] = mapped_column(String(64), default="")
    code_system: Mapped[str] = mapped_column(String(200), default="")
    code_display: Mapped[str] = mapped_column(String(200), default="")
    #: DICOM modality of the exam asked for (diagnostics referrals).
    modality: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[str] = mapped_column(String(16), default="routine")
    #: The Task status (requested, received, accepted, rejected, in-progress, completed,
    #: cancelled, failed) and its business status and reason.
    status: Mapped[str] = mapped_column(String(16), default="requested")
    business_status: Mapped[str] = mapped_column(String(64), default="")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    #: The worklist order a diagnostics referral became when accepted.
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    #: api | fhir | hl7 | registry, and the referral's id there (HL7 RF1-6, registry id).
    source: Mapped[str] = mapped_column(String(16), default="api")
    external_id: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReferralEvent(Base):
    """One transition of a referral's Task (for the history and the notifications)."""

    __tablename__ = "referral_events"
    __table_args__ = (Index("ix_referral_events_referral", "referral_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id"))
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReferralStudy(Base):
    """A study a referral carries to its consultant (visible to them while it is open)."""

    __tablename__ = "referral_studies"
    __table_args__ = (UniqueConstraint("referral_id", "study_id"),
                      Index("ix_referral_studies_study", "study_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id"))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))


class ReferralDocument(Base):
    """An extract of the record sent with a referral (DocumentReference or document
    Bundle), stored exactly as given."""

    __tablename__ = "referral_documents"
    __table_args__ = (Index("ix_referral_documents_referral", "referral_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id"))
    resource_type: Mapped[str] = mapped_column(String(32))
    content: Mapped[dict[str, object]] = mapped_column(JSON)


class DiagnosticReport(Base):
    """A referral's result: the diagnostics report or the consultant's conclusion."""

    __tablename__ = "diagnostic_reports"
    __table_args__ = (Index("ix_diagnostic_reports_referral", "referral_id"),
                      Index("ix_diagnostic_reports_patient", "patient_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[int | None] = mapped_column(ForeignKey("referrals.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"))
    #: registered | partial | preliminary | final | amended | corrected | cancelled
    status: Mapped[str] = mapped_column(String(16), default="final")
    code: Mapped[str] = mapped_column(String(64), default="")
    code_display: Mapped[str] = mapped_column(String(200), default="")
    conclusion: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    #: Attachments as given (a PDF as base64 with its content type), FHIR Attachment shape.
    presented_form: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    source: Mapped[str] = mapped_column(String(16), default="api")
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AccessGrant(Base):
    """A study (or all studies of a patient) shared with a clinician: by a user, or by the
    patient's consent (FHIR Consent). Optional expiry; revocable."""

    __tablename__ = "access_grants"
    __table_args__ = (Index("ix_access_grants_user_study", "user_id", "study_id"),
                      Index("ix_access_grants_user_patient", "user_id", "patient_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    #: share | consent
    source: Mapped[str] = mapped_column(String(16), default="share")
    granted_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Subscription(Base):
    """A party's system asking to be told of referral changes (FHIR Subscription, rest-hook).

    ``criteria`` is a Task search (``Task?status=completed&requester=Practitioner/3``);
    deliveries go through the job queue, so a receiver that is down gets them later."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    criteria: Mapped[str] = mapped_column(String(500))
    endpoint: Mapped[str] = mapped_column(String(500))
    #: '' (a ping, no body) or application/fhir+json (the Task itself).
    payload: Mapped[str] = mapped_column(String(64), default="application/fhir+json")
    #: HTTP headers sent with each delivery ("Authorization: Bearer ...").
    headers: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: requested | active | error | off
    status: Mapped[str] = mapped_column(String(16), default="active")
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
