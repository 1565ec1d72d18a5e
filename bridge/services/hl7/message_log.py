"""Browse the HL7 message log (newest first).

Every filter combination is served by one of the log's indexes: ``received_at`` alone,
``(message_type, received_at)`` or ``(status, received_at)`` (which holds only messages not
processed: the failures one browses for); the sender filter narrows the rows one of those
indexes yields.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.errors import NotFound
from bridge.store.models import HL7Message

MAX_LIMIT = 1000


def list_messages(
    session: Session,
    *,
    message_type: str | None = None,
    status: str | None = None,
    sender: str | None = None,
    received_from: datetime | None = None,
    received_to: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[HL7Message]:
    """Messages matching every given filter, newest first.

    ``received_from`` is inclusive and ``received_to`` exclusive, so consecutive windows
    neither overlap nor leave gaps. ``sender`` matches the sending application (MSH-3).
    """
    query = select(HL7Message)
    if message_type:
        query = query.where(HL7Message.message_type == message_type)
    if status:
        query = query.where(HL7Message.status == status)
        if status != "processed":
            # The status index is partial; SQLite uses it only when the query repeats its
            # predicate (PostgreSQL infers it).
            query = query.where(HL7Message.status != "processed")
    if sender:
        query = query.where(HL7Message.sending_application == sender)
    if received_from is not None:
        query = query.where(HL7Message.received_at >= _as_utc(received_from))
    if received_to is not None:
        query = query.where(HL7Message.received_at < _as_utc(received_to))
    query = (
        query.order_by(HL7Message.received_at.desc(), HL7Message.id.desc())
        .limit(max(0, min(limit, MAX_LIMIT)))
        .offset(max(0, offset))
    )
    return session.execute(query).scalars().all()


def _as_utc(value: datetime) -> datetime:
    """Stored times are UTC (SQLite keeps them without offset); naive input is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def get_message(session: Session, *, message_id: int) -> HL7Message:
    """One logged message; raises :class:`NotFound` when there is none with that id."""
    message = session.get(HL7Message, message_id)
    if message is None:
        raise NotFound(f"no HL7 message with id {message_id}")
    return message
