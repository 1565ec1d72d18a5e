"""``GET /api/activity``: the operators' dashboard in one call — HL7 messages per minute by
ACK code, received DICOM objects per minute, the job queues' depths, failed jobs and the
reconciliation queue's size (:mod:`bridge.services.activity`).

Counts only, no patient data: systems and operators with the viewer role (or above) may read
it; clinicians are refused. The console polls it every few seconds, so it reads in a read
session (on SQLite no write lock, nothing waits behind intake and storage).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bridge.adapters.http.api.schemas import ErrorBody
from bridge.adapters.http.deps import ContextDep, ViewerToken
from bridge.services.activity.buckets import DEFAULT_MINUTES, MAX_MINUTES, MIN_MINUTES
from bridge.services.activity.counts import Activity, activity
from bridge.store.db import read_session

router = APIRouter(prefix="/api/activity", tags=["activity"])


class Hl7MinuteOut(BaseModel):
    minute: datetime = Field(description="The minute's start (UTC).")
    AA: int
    AE: int
    AR: int
    none: int = Field(description="Messages logged without an ACK yet.")


class DicomMinuteOut(BaseModel):
    minute: datetime = Field(description="The minute's start (UTC).")
    objects: int
    bytes: int = Field(description="Sizes as received (before any lossless compression).")


class Hl7TotalsOut(BaseModel):
    AA: int
    AE: int
    AR: int
    none: int


class TotalsOut(BaseModel):
    hl7: Hl7TotalsOut
    dicom_objects: int
    dicom_bytes: int


class QueueDepthOut(BaseModel):
    queue: str
    pending: int
    running: int
    failed: int


class ActivityOut(BaseModel):
    at: datetime = Field(description="When the counts were taken (UTC).")
    minutes: int
    hl7: list[Hl7MinuteOut] = Field(description="One entry per minute, oldest first; the "
                                    "last is the minute still going.")
    dicom: list[DicomMinuteOut] = Field(description="One entry per minute, oldest first.")
    totals: TotalsOut
    queues: list[QueueDepthOut] = Field(description="Every job queue that has jobs, by name.")
    failed_jobs: int
    reconciliation_queued: int = Field(description="Studies waiting for an operator.")


@router.get("", response_model=ActivityOut, responses={
    401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}})
def read_activity(
    context: ContextDep, _token: ViewerToken,
    minutes: Annotated[int, Query(ge=MIN_MINUTES, le=MAX_MINUTES,
                                  description="The window: this many whole minutes up to "
                                  "now, the current one included.")] = DEFAULT_MINUTES,
) -> ActivityOut:
    """Counts per minute over the last ``minutes``, zero-filled, and the queues now."""
    with read_session(context.session_factory) as session:
        found = activity(session, minutes=minutes)
    return _out(found)


def _out(found: Activity) -> ActivityOut:
    totals = found.hl7_totals
    return ActivityOut(
        at=found.window.at, minutes=found.window.minutes,
        hl7=[Hl7MinuteOut(minute=m.minute, **m.counts) for m in found.hl7],
        dicom=[DicomMinuteOut(minute=m.minute, objects=m.objects, bytes=m.bytes)
               for m in found.dicom],
        totals=TotalsOut(hl7=Hl7TotalsOut(**totals), dicom_objects=found.dicom_objects,
                         dicom_bytes=found.dicom_bytes),
        queues=[QueueDepthOut(queue=q.queue, pending=q.pending, running=q.running,
                              failed=q.failed) for q in found.queues],
        failed_jobs=found.failed_jobs, reconciliation_queued=found.reconciliation_queued)
