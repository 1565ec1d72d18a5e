"""Storage tiers: where each instance's bytes are, what cleanup removed, and usage over time.

The online copy of an instance is the file named by ``instances.path`` under the archive
root, present while ``instances.online_removed_at`` is empty. Every other copy (the
long-term tier) is an :class:`InstanceCopy` row, trusted only once ``verified_at`` is set:
cleanup never removes an online file whose long-term copy is not verified.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bridge.store.models import Base, utcnow

#: Tier names.
ONLINE, LONGTERM = "online", "longterm"


class InstanceCopy(Base):
    """One copy of one instance outside the online tier."""

    __tablename__ = "instance_copies"
    __table_args__ = (
        UniqueConstraint("instance_id", "tier", name="uq_instance_copies_instance_tier"),
        Index("ix_instance_copies_study", "study_id", "tier"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"))
    #: Denormalised: migration, cleanup and recall work study by study.
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    tier: Mapped[str] = mapped_column(String(16), default=LONGTERM)
    #: ``file`` or ``s3``.
    backend: Mapped[str] = mapped_column(String(16))
    #: The tier's base URL when the copy was made (``s3://bucket/prefix``, ``file:///path``).
    location: Mapped[str] = mapped_column(String(512))
    key: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Set once the stored bytes were read back and matched ``sha256``.
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Set when a read found the copy missing or corrupt (it is then not used).
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure: Mapped[str | None] = mapped_column(Text)


class StorageDeletion(Base):
    """A record of every removal of a study's copies from a tier (cleanup or operator)."""

    __tablename__ = "storage_deletions"
    __table_args__ = (Index("ix_storage_deletions_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(16))
    #: ``time``, ``capacity:<routine>``, ``operator``, ``retention``.
    reason: Mapped[str] = mapped_column(String(64))
    instances: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    actor: Mapped[str] = mapped_column(String(128), default="")


class StorageUsageSample(Base):
    """Usage per tier and modality at one moment, for the operator console's history plot."""

    __tablename__ = "storage_usage_samples"
    __table_args__ = (Index("ix_storage_usage_samples_at", "at", "tier"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    tier: Mapped[str] = mapped_column(String(16))
    #: Empty for the tier's total.
    modality: Mapped[str] = mapped_column(String(16), default="")
    instances: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
