"""A durable job queue (outbox) over the ``jobs`` table, shared by every kind of background work.

A job is a queue name, an optional dedup key and a JSON payload. Its life:

``pending`` → claimed → ``running`` (leased) → ``done``, or back to ``pending`` after a
retryable error with capped exponential back-off, or ``failed`` (the dead-letter list) after
a permanent error or too many attempts, until an operator requeues it.

How it stays correct with several workers, crashes and both databases:

- **Claiming** locks the due rows: PostgreSQL ``FOR UPDATE SKIP LOCKED`` (workers take
  different jobs without waiting on each other); SQLite has one writer at a time, and the
  engine opens every write transaction with ``BEGIN IMMEDIATE`` (:mod:`bridge.store.db`), so
  the select-then-update is atomic there too.
- **Leases** need no extra column: while a job is ``running``, ``next_attempt_at`` is the end
  of its lease. A worker that dies (kill -9) stops renewing it, and the job becomes due again
  when the lease runs out. A job abandoned on its last attempt goes to the failed list, so a
  job that kills its worker cannot loop for ever.
- **Fencing**: each claim increments ``attempts``, and the claim's attempt number is its
  token. ``complete``/``fail``/``checkpoint``/``renew`` only act while the row is still
  ``running`` with that number, so a worker whose lease expired and whose job was claimed
  again cannot overwrite the newer attempt's outcome.
- **Coalescing**: enqueueing a key that already has a ``pending`` job updates that job instead
  of adding one (one forward per study change, not one per instance). A ``running`` job does
  not absorb new work: it may already have read the old state, so a new pending job follows.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.errors import Conflict, NotFound
from bridge.store.archive_models import Job
from bridge.store.audit import append_audit
from bridge.store.db import read_session

PENDING: Final = "pending"
RUNNING: Final = "running"
DONE: Final = "done"
FAILED: Final = "failed"
STATUSES: Final = (PENDING, RUNNING, DONE, FAILED)

#: How long a claimed job belongs to its worker unless renewed (the worker renews it).
DEFAULT_LEASE_SECONDS: Final = 300.0
#: ``last_error`` is cut to this many characters (the column is text; the API shows it).
MAX_ERROR_CHARS: Final = 2000
MAX_LIST_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a queue's jobs are retried."""

    max_attempts: int = 10
    base_seconds: float = 5.0
    max_seconds: float = 600.0
    #: Fraction of each delay that is randomised, so jobs failed together spread out.
    jitter: float = 0.2


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker holds: ``attempt`` (1 for the first run) is also its fencing token."""

    id: int
    queue: str
    dedup_key: str | None
    payload: dict[str, Any]
    attempt: int
    lease_until: datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def retry_delay(attempt: int, policy: RetryPolicy,
                rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``base * 2**(attempt-1)``, capped at ``max_seconds``, then reduced by up to ``jitter`` of
    itself: never above the cap, never below ``(1 - jitter)`` of the exponential step.
    """
    exponent = min(max(attempt, 1) - 1, 62)  # 2**62 already exceeds any sensible cap
    delay = min(policy.max_seconds, policy.base_seconds * 2.0**exponent)
    return delay * (1.0 - policy.jitter * rand())


# ----------------------------------------------------------------------------- enqueue


def enqueue(session: Session, *, queue: str, payload: Mapping[str, Any],
            dedup_key: str | None = None, delay: float = 0.0,
            now: datetime | None = None) -> int:
    """Add a job in the caller's transaction and return its id.

    With a ``dedup_key`` that already has a ``pending`` job in ``queue``, that job is reused:
    its payload becomes ``payload`` (the latest state wins, and any progress a failed attempt
    recorded is dropped, since the work changed) and it is made due no later than this
    enqueue asked for. Its attempt count is kept.
    """
    now = now or utcnow()
    due = now + timedelta(seconds=max(0.0, delay))
    if dedup_key is not None:
        _lock_key(session, queue, dedup_key)
        existing = session.execute(
            select(Job).where(Job.queue == queue, Job.dedup_key == dedup_key,
                              Job.status == PENDING)
            .order_by(Job.id).limit(1)
            # Locked, and re-checked by PostgreSQL after any wait: a job a worker claims
            # meanwhile is no longer pending, and a new job is added instead.
            .with_for_update()
        ).scalar_one_or_none()
        if existing is not None:
            existing.payload = dict(payload)
            if as_utc(existing.next_attempt_at) > due:
                existing.next_attempt_at = due
            existing.updated_at = now
            session.flush()
            return existing.id
    job = Job(queue=queue, dedup_key=dedup_key, payload=dict(payload), status=PENDING,
              attempts=0, next_attempt_at=due, created_at=now, updated_at=now)
    session.add(job)
    session.flush()
    return job.id


def _lock_key(session: Session, queue: str, dedup_key: str) -> None:
    """Serialise enqueues of one key so two transactions cannot both add a pending job.

    SQLite writers are serialised already (``BEGIN IMMEDIATE``); PostgreSQL takes an advisory
    lock held until the transaction ends.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                        {"key": f"{queue}\x1f{dedup_key}"})


# ----------------------------------------------------------------------------- claiming


def claim(session_factory: sessionmaker[Session], queue_names: Iterable[str], *,
          limit: int = 1, now: datetime | None = None,
          lease_seconds: float = DEFAULT_LEASE_SECONDS,
          max_attempts: Mapping[str, int] | None = None) -> list[ClaimedJob]:
    """Take up to ``limit`` due jobs of ``queue_names`` in one short transaction.

    Due means ``pending`` with ``next_attempt_at`` reached, or ``running`` with an expired
    lease (its worker died). An abandoned job that already had ``max_attempts[queue]``
    attempts goes to the failed list instead of running again.
    """
    names = list(queue_names)
    if not names or limit < 1:
        return []
    now = now or utcnow()
    lease_until = now + timedelta(seconds=lease_seconds)
    due = and_(Job.queue.in_(names), Job.status.in_((PENDING, RUNNING)),
               Job.next_attempt_at <= now)
    # Idle polls only read: on SQLite a write transaction would take the database's single
    # writer lock every poll, in the way of HL7 intake and image storage.
    with read_session(session_factory) as session:
        if session.execute(select(Job.id).where(due).limit(1)).first() is None:
            return []
    claimed: list[ClaimedJob] = []
    with session_factory() as session, session.begin():
        rows = session.execute(
            select(Job)
            .where(due)
            .order_by(Job.next_attempt_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars().all()
        for job in rows:
            cap = (max_attempts or {}).get(job.queue)
            if job.status == RUNNING and cap is not None and job.attempts >= cap:
                job.status = FAILED
                job.last_error = _cut(f"abandoned: the worker stopped during attempt "
                                      f"{job.attempts} of {cap} (lease expired)")
                job.updated_at = now
                continue
            job.status = RUNNING
            job.attempts += 1
            job.next_attempt_at = lease_until
            job.updated_at = now
            claimed.append(ClaimedJob(id=job.id, queue=job.queue, dedup_key=job.dedup_key,
                                      payload=dict(job.payload or {}), attempt=job.attempts,
                                      lease_until=lease_until))
    return claimed


def _held(job: ClaimedJob) -> Any:
    """The WHERE clause that is true only while ``job`` is still held by its claimer."""
    return and_(Job.id == job.id, Job.status == RUNNING, Job.attempts == job.attempt)


def renew(session: Session, job: ClaimedJob, *, lease_seconds: float = DEFAULT_LEASE_SECONDS,
          now: datetime | None = None) -> bool:
    """Extend the lease of a job still held; False when it was lost (taken by another)."""
    now = now or utcnow()
    result = session.execute(
        update(Job).where(_held(job))
        .values(next_attempt_at=now + timedelta(seconds=lease_seconds), updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _changed(result)


def checkpoint(session: Session, job: ClaimedJob, updates: Mapping[str, Any]) -> bool:
    """Merge ``updates`` into the payload of a job still held (progress a retry can use)."""
    row = session.execute(
        select(Job).where(_held(job)).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        return False
    row.payload = {**(row.payload or {}), **updates}
    row.updated_at = utcnow()
    session.flush()
    return True


# ----------------------------------------------------------------------------- outcomes


def complete(session: Session, job: ClaimedJob, *, now: datetime | None = None) -> bool:
    """Mark a held job done; False when the lease was lost (another attempt owns it)."""
    now = now or utcnow()
    result = session.execute(
        update(Job).where(_held(job))
        .values(status=DONE, last_error=None, next_attempt_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _changed(result)


def fail(session: Session, job: ClaimedJob, *, error: str, retryable: bool,
         policy: RetryPolicy, now: datetime | None = None,
         rand: Callable[[], float] = random.random) -> str | None:
    """Record a failed attempt and return the job's new status (None if the lease was lost).

    Retryable and attempts left → ``pending`` after :func:`retry_delay`; otherwise
    ``failed``. A retryable failure whose key already has a newer pending job is closed as
    ``done`` ("superseded"): the newer job carries the same work with the latest state.
    """
    now = now or utcnow()
    row = session.execute(select(Job).where(_held(job)).with_for_update()).scalar_one_or_none()
    if row is None:
        return None
    row.last_error = _cut(error)
    row.updated_at = now
    if retryable and job.dedup_key is not None:
        newer = session.execute(
            select(Job.id).where(Job.queue == job.queue, Job.dedup_key == job.dedup_key,
                                 Job.status == PENDING, Job.id != job.id).limit(1)
        ).scalar_one_or_none()
        if newer is not None:
            row.status = DONE
            row.last_error = _cut(f"superseded by job {newer}; last error: {error}")
            row.next_attempt_at = now
            session.flush()
            return DONE
    if retryable and job.attempt < policy.max_attempts:
        row.status = PENDING
        row.next_attempt_at = now + timedelta(seconds=retry_delay(job.attempt, policy, rand))
    else:
        row.status = FAILED
        row.next_attempt_at = now
    session.flush()
    return row.status


def release(session: Session, job: ClaimedJob, *, now: datetime | None = None) -> bool:
    """Give a held job back untouched (the worker is stopping): due now, attempt not counted."""
    now = now or utcnow()
    result = session.execute(
        update(Job).where(_held(job))
        .values(status=PENDING, attempts=Job.attempts - 1, next_attempt_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _changed(result)


# ----------------------------------------------------------------------------- operators


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id}", location="job_id")
    return job


def list_jobs(session: Session, *, queue: str | None = None, status: str | None = None,
              limit: int = 100, offset: int = 0) -> Sequence[Job]:
    """Jobs matching the filters, most recently changed first."""
    query = select(Job)
    if queue:
        query = query.where(Job.queue == queue)
    if status:
        query = query.where(Job.status == status)
    query = (query.order_by(Job.updated_at.desc(), Job.id.desc())
             .limit(max(0, min(limit, MAX_LIST_LIMIT))).offset(max(0, offset)))
    return session.execute(query).scalars().all()


def count_jobs(session: Session, *, queue: str | None = None) -> dict[str, int]:
    """How many jobs are in each status (of one queue, or all)."""
    query = select(Job.status, func.count()).group_by(Job.status)
    if queue:
        query = query.where(Job.queue == queue)
    counts = {status: 0 for status in STATUSES}
    for status, count in session.execute(query).all():
        counts[str(status)] = int(count)
    return counts


def requeue(session: Session, job_id: int, actor: str, *,
            now: datetime | None = None) -> Job:
    """Make a ``failed`` (or waiting ``pending``) job due now with a fresh attempt count,
    and record who did it in the audit log. Running and done jobs are refused (Conflict)."""
    now = now or utcnow()
    job = session.execute(
        select(Job).where(Job.id == job_id).with_for_update()
    ).scalar_one_or_none()
    if job is None:
        raise NotFound(f"no job with id {job_id}", location="job_id")
    if job.status not in (FAILED, PENDING):
        raise Conflict(f"job {job_id} is {job.status}; only failed or pending jobs can be "
                       "requeued", location="status")
    _requeue_row(session, job, actor, now)
    session.flush()
    return job


def requeue_failed(session: Session, *, queue: str, actor: str,
                   now: datetime | None = None) -> list[int]:
    """Requeue every failed job of ``queue`` (one audit row each); returns their ids."""
    now = now or utcnow()
    jobs = session.execute(
        select(Job).where(Job.queue == queue, Job.status == FAILED).order_by(Job.id)
        .with_for_update()
    ).scalars().all()
    for job in jobs:
        _requeue_row(session, job, actor, now)
    session.flush()
    return [job.id for job in jobs]


def _requeue_row(session: Session, job: Job, actor: str, now: datetime) -> None:
    append_audit(session, at=now, actor=actor, action="requeue", entity="job",
                 entity_id=str(job.id),
                 details={"queue": job.queue, "status": job.status, "attempts": job.attempts})
    job.status = PENDING
    job.attempts = 0
    job.next_attempt_at = now
    job.updated_at = now


# ----------------------------------------------------------------------------- helpers


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back without an offset; every stored time is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _changed(result: Any) -> bool:
    return bool(getattr(result, "rowcount", 0))


def _cut(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"
