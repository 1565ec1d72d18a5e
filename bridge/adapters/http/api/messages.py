"""The HL7 message log: browse (viewer), read a message (integration), reprocess (integration).

Summaries carry no message content; the content holds PHI, so reading it needs the
integration role.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status

from bridge.adapters.http.api.schemas import (
    ErrorBody,
    MessageDetail,
    MessageSummary,
    Offset,
    ReprocessResult,
    RowId,
)
from bridge.adapters.http.deps import ContextDep, IntegrationToken, SessionDep, ViewerToken
from bridge.errors import Conflict
from bridge.services.hl7.message_log import MAX_LIMIT, get_message, list_messages

log = logging.getLogger("bridge.http")
router = APIRouter(prefix="/api/messages", tags=["messages"])

#: Only messages that failed may be run again.
REPROCESSABLE = frozenset({"error", "rejected"})
MessageStatus = Literal["received", "processed", "error", "rejected"]


@router.get("", response_model=list[MessageSummary])
def browse_messages(
    session: SessionDep,
    _token: ViewerToken,
    message_type: Annotated[str | None, Query(alias="type", max_length=32,
                                              description="e.g. ORM^O01")] = None,
    message_status: Annotated[MessageStatus | None, Query(alias="status")] = None,
    sender: Annotated[str | None, Query(max_length=180,
                                        description="sending application (MSH-3)")] = None,
    since: Annotated[datetime | None, Query(description="received at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="received before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Offset = 0,
) -> list[MessageSummary]:
    """Logged messages, newest first. Naive times are taken as UTC."""
    rows = list_messages(
        session, message_type=message_type, status=message_status, sender=sender,
        received_from=since, received_to=until, limit=limit, offset=offset,
    )
    return [MessageSummary.model_validate(row) for row in rows]


@router.get("/{message_id}", response_model=MessageDetail,
            responses={404: {"model": ErrorBody}})
def read_message(message_id: RowId, session: SessionDep,
                 _token: IntegrationToken) -> MessageDetail:
    """One message with its content, raw bytes (base64) and acknowledgements."""
    return MessageDetail.model_validate(get_message(session, message_id=message_id))


@router.post(
    "/{message_id}/reprocess",
    response_model=ReprocessResult,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody},
               503: {"model": ErrorBody}},
)
def reprocess_message(message_id: RowId, session: SessionDep, context: ContextDep,
                      token: IntegrationToken) -> ReprocessResult:
    """Run a message that ended in ``error`` or ``rejected`` through intake again."""
    if context.reprocess is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "reprocessing is not available in this process")
    message = get_message(session, message_id=message_id)
    if message.status not in REPROCESSABLE:
        raise Conflict(f"message {message_id} is {message.status}; only messages in "
                       f"error or rejected can be reprocessed", location="status")
    # End our transaction first: the reprocessing runs in its own and must not wait on ours
    # (on SQLite every transaction holds the write lock).
    session.commit()
    log.info("token %s reprocesses HL7 message %s", token.id, message_id)
    outcome = context.reprocess(message_id)
    return ReprocessResult(message_id=message_id, status=outcome.status,
                           ack_code=outcome.ack_code, error=outcome.error)
