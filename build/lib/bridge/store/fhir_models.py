"""Tables of the FHIR side: the JSON last received per resource, and durable sync state.

The domain tables stay the truth (a Patient is a ``patients`` row, a ServiceRequest an
``orders`` row); :class:`FhirSource` only keeps what FHIR sent that the domain has no column
for, so a read returns what was sent (overlaid with the current domain values), plus the
count of FHIR writes that versions the resource. Migration 0004 creates these tables and
adds to ``orders`` the worklist values FHIR brings (see :data:`ORDER_WORKLIST_EXTRAS`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, column, table
from sqlalchemy.orm import Mapped, mapped_column

from bridge.store.models import Base, utcnow


class FhirSource(Base):
    """The last FHIR JSON received for one Patient or ServiceRequest (``row_id`` is the
    ``patients``/``orders`` id, which is also the FHIR logical id)."""

    __tablename__ = "fhir_sources"

    resource_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    row_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: The resource as received (without id and meta), as JSON text.
    resource: Mapped[str] = mapped_column(Text)
    #: SHA-256 of the canonical JSON: the same resource again changes nothing.
    resource_hash: Mapped[str] = mapped_column(String(64))
    #: FHIR writes so far (the first part of ``meta.versionId``).
    version: Mapped[int] = mapped_column(Integer, default=1)
    #: ServiceRequest.status as sent (searched on; shown while it agrees with the order).
    status: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class SyncState(Base):
    """Durable key/value state of scheduled jobs (e.g. the registry sync's watermark)."""

    __tablename__ = "sync_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


#: ``orders`` columns added by migration 0004 for the worklist: ImagingServiceRequestComments
#: (0040,2400) from ServiceRequest.note, IssueDate/TimeOfImagingServiceRequest (0040,2004/5)
#: from authoredOn (DICOM strings, local time, like the other dates). A lightweight table
#: clause, so this module does not change the ``Order`` model owned by ``models.py``.
ORDER_WORKLIST_EXTRAS = table(
    "orders",
    column("id", Integer),
    column("comments", Text),
    column("issue_date", String(8)),
    column("issue_time", String(14)),
)
