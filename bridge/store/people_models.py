"""The directory of people and places, and clinicians' logins.

A :class:`User` is a Practitioner with one PractitionerRole (the role they log in with, at one
Organization, with a specialty); served as FHIR Practitioner and PractitionerRole under the
same id. Systems keep their API tokens (:class:`bridge.store.models.ApiToken`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bridge.store.models import Base, utcnow


class Organization(Base):
    """A family doctor's practice, a diagnostics department, a consultants' department."""

    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The registry's or the hospital's identifier (EDRPOU, a registry UUID); unique.
    identifier: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: practice | diagnostics | consultants | hospital
    kind: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    """A clinician or operator who logs in (Practitioner + PractitionerRole)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    #: family_doctor | diagnostics | consultant | operator | admin
    role: Mapped[str] = mapped_column(String(16))
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    #: A SNOMED CT or local specialty code (consultants: cardiology, neurology, ...).
    specialty: Mapped[str | None] = mapped_column(String(64))
    #: The practitioner's identifier at the registry or in the hospital's HR system.
    identifier: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: argon2id hash; None for users who log in only through the identity provider.
    password_hash: Mapped[str | None] = mapped_column(String(200))
    #: The identity provider's ``sub`` claim for OIDC bearer tokens.
    oidc_subject: Mapped[str | None] = mapped_column(String(200), unique=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginSession(Base):
    """A logged-in clinician's bearer token (``brs_...``); only its SHA-256 is kept."""

    __tablename__ = "login_sessions"
    __table_args__ = (Index("ix_login_sessions_user", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
