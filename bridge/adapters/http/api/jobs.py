"""Background jobs (forwarding, publishing): browse them, see the failed list, requeue.

Jobs carry study ids and error texts, not patient data, but requeueing sends studies out of
the bridge again, so every route needs the operator role (or above); requeueing is written
to the audit log with the token that did it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, field_serializer

from bridge.adapters.http.api.schemas import ErrorBody, Offset, RowId
from bridge.adapters.http.deps import SessionDep, actor_of, require_role
from bridge.jobs import queue
from bridge.services.auth.principal import Principal
from bridge.services.auth.tokens import ROLES

log = logging.getLogger("bridge.http")
router = APIRouter(prefix="/api/jobs", tags=["jobs"])

#: The least role that may manage jobs: ``operator`` where that role exists, else ``admin``.
JOBS_ROLE = "operator" if "operator" in ROLES else "admin"
OperatorToken = Annotated[Principal, Depends(require_role(JOBS_ROLE))]
JobStatus = Literal["pending", "running", "done", "failed"]
QueueName = Annotated[str, Query(min_length=1, max_length=32,
                                 description="queue name, e.g. forward")]


class JobOut(BaseModel):
    """One job. While ``running``, ``next_attempt_at`` is the end of the worker's lease."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    queue: str
    dedup_key: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @field_serializer("next_attempt_at", "created_at", "updated_at")
    def _utc(self, value: datetime) -> datetime:
        return queue.as_utc(value)


class JobCounts(BaseModel):
    pending: int
    running: int
    done: int
    failed: int


class RequeueResult(BaseModel):
    queue: str
    requeued: int
    job_ids: list[int]


@router.get("", response_model=list[JobOut])
def browse_jobs(
    session: SessionDep,
    _token: OperatorToken,
    queue_name: Annotated[str | None, Query(alias="queue", min_length=1, max_length=32)] = None,
    job_status: Annotated[JobStatus | None, Query(alias="status",
                                                  description="failed = the dead-letter list")
                          ] = None,
    limit: Annotated[int, Query(ge=1, le=queue.MAX_LIST_LIMIT)] = 100,
    offset: Offset = 0,
) -> list[JobOut]:
    """Jobs, most recently changed first; ``?status=failed`` is the failed list."""
    rows = queue.list_jobs(session, queue=queue_name, status=job_status, limit=limit,
                           offset=offset)
    return [JobOut.model_validate(row) for row in rows]


@router.get("/counts", response_model=JobCounts)
def count_jobs(
    session: SessionDep,
    _token: OperatorToken,
    queue_name: Annotated[str | None, Query(alias="queue", min_length=1, max_length=32)] = None,
) -> JobCounts:
    """How many jobs are in each status (of one queue, or of all)."""
    return JobCounts(**queue.count_jobs(session, queue=queue_name))


@router.post("/requeue-failed", response_model=RequeueResult,
             responses={422: {"model": ErrorBody}})
def requeue_failed_jobs(session: SessionDep, token: OperatorToken,
                        queue_name: Annotated[str, Query(alias="queue", min_length=1,
                                                         max_length=32)]) -> RequeueResult:
    """Requeue every failed job of one queue (each is audited)."""
    ids = queue.requeue_failed(session, queue=queue_name, actor=actor_of(token))
    session.commit()
    log.info("token %s requeued %s failed jobs of queue %s", token.id, len(ids), queue_name)
    return RequeueResult(queue=queue_name, requeued=len(ids), job_ids=ids)


@router.get("/{job_id}", response_model=JobOut, responses={404: {"model": ErrorBody}})
def read_job(job_id: RowId, session: SessionDep, _token: OperatorToken) -> JobOut:
    """One job with its payload and last error."""
    return JobOut.model_validate(queue.get_job(session, job_id))


@router.post("/{job_id}/requeue", response_model=JobOut,
             responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}})
def requeue_job(job_id: RowId, session: SessionDep, token: OperatorToken) -> JobOut:
    """Run a failed job again now, with a fresh attempt count (also hurries a pending one)."""
    job = queue.requeue(session, job_id, actor_of(token))
    session.commit()
    log.info("token %s requeued job %s", token.id, job_id)
    return JobOut.model_validate(job)
