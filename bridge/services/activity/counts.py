"""The dashboard's numbers, each one grouped query on an index (the plans are checked in
``tests/integration/test_query_plans.py`` on both databases):

- **HL7 per minute and ACK code**: ``hl7_messages`` in the window, on
  ``ix_hl7_messages_received``.
- **Received DICOM objects per minute**: ``instances.received_at`` has no index of its own,
  so the instances are reached through the studies that received something in the window
  (``ix_studies_state_received``, then ``ix_instances_study_id``) and counted by their own
  ``received_at``. That is exact because the store sets a study's ``last_received_at`` in the
  transaction of each of its objects (:mod:`bridge.services.archive.store`); its time is
  taken before the study's row lock, so a study is looked for :data:`LOCK_SLACK` earlier
  than the window, which only widens the set of studies read, never the count.
- **Job queues**: the names come from a loose index scan of ``ix_jobs_queue_status_due``
  (one seek per queue, however many done jobs the table keeps), then one count per queue
  and open status on the same index.
- **Reconciliation queue**: studies waiting for an operator, on ``ix_studies_reconciliation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Select, func, select, text
from sqlalchemy.orm import Session

from bridge.jobs.queue import FAILED, PENDING, RUNNING
from bridge.services.activity.buckets import Window, minute_bucket, minute_of
from bridge.services.archive.reconciliation_view import WAITING
from bridge.store.archive_models import RECEIVING, STABLE, Instance, Job, Study
from bridge.store.models import HL7Message, table_of, utcnow

H = table_of(HL7Message)
I = table_of(Instance)  # noqa: E741
S = table_of(Study)
J = table_of(Job)

#: The columns of an HL7 minute: the three ACK codes and ``none`` (no ACK stored yet).
ACK_CODES: Final = ("AA", "AE", "AR")
NO_ACK: Final = "none"
HL7_COLUMNS: Final = (*ACK_CODES, NO_ACK)
#: Enhanced-mode commit codes count as the application code they stand beside.
_FOLDED: Final = {"CA": "AA", "CE": "AE", "CR": "AR"}
#: The statuses a queue's depth shows (``done`` jobs are history).
OPEN_STATUSES: Final = (PENDING, RUNNING, FAILED)
#: Longer than an object waits for its study's row lock between taking its time and
#: writing it (a group commit's batch, normally milliseconds).
LOCK_SLACK: Final = timedelta(minutes=10)

# A loose index scan: each step is one seek for the next queue name above the last, so the
# names cost one index probe per queue and not a scan of every done job. Plain SQL that
# SQLite and PostgreSQL both run as written.
_QUEUE_NAMES = text("""
    WITH RECURSIVE names(queue) AS (
        SELECT MIN(queue) FROM jobs
        UNION ALL
        SELECT (SELECT MIN(j.queue) FROM jobs AS j WHERE j.queue > names.queue)
        FROM names WHERE names.queue IS NOT NULL
    )
    SELECT queue FROM names WHERE queue IS NOT NULL
""")


@dataclass(frozen=True, slots=True)
class Hl7Minute:
    minute: datetime
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class DicomMinute:
    minute: datetime
    objects: int
    bytes: int


@dataclass(frozen=True, slots=True)
class QueueDepth:
    queue: str
    pending: int
    running: int
    failed: int


@dataclass(frozen=True, slots=True)
class Activity:
    """One answer of the dashboard; the minute lists are zero-filled, oldest first."""

    window: Window
    hl7: list[Hl7Minute]
    dicom: list[DicomMinute]
    queues: list[QueueDepth]
    reconciliation_queued: int

    @property
    def hl7_totals(self) -> dict[str, int]:
        return {code: sum(m.counts[code] for m in self.hl7) for code in HL7_COLUMNS}

    @property
    def dicom_objects(self) -> int:
        return sum(m.objects for m in self.dicom)

    @property
    def dicom_bytes(self) -> int:
        return sum(m.bytes for m in self.dicom)

    @property
    def failed_jobs(self) -> int:
        return sum(q.failed for q in self.queues)


def activity(session: Session, *, minutes: int, now: datetime | None = None) -> Activity:
    """Everything the dashboard shows for the ``minutes`` up to ``now``. Read-only: give it
    a read session (:func:`bridge.store.db.read_session`), which on SQLite takes no write
    lock, so polling does not queue behind HL7 intake and image storage."""
    window = Window.ending_at(now or utcnow(), minutes)
    return Activity(window=window, hl7=hl7_per_minute(session, window),
                    dicom=dicom_per_minute(session, window), queues=queue_depths(session),
                    reconciliation_queued=reconciliation_queued(session))


# ------------------------------------------------------------------------------ per minute


def hl7_statement(window: Window, dialect: str) -> Select[int, str | None, int]:
    """Messages per (minute, ACK code) received in ``window``."""
    rows = (select(minute_bucket(H.c.received_at, dialect).label("minute"), H.c.ack_code)
            .where(H.c.received_at >= window.since, H.c.received_at < window.until)
            .subquery("received"))
    # Grouped outside, by the subquery's columns: PostgreSQL would not accept a GROUP BY
    # repeating the bucket expression with bound parameters of its own.
    return (select(rows.c.minute, rows.c.ack_code, func.count().label("messages"))
            .group_by(rows.c.minute, rows.c.ack_code))


def hl7_per_minute(session: Session, window: Window) -> list[Hl7Minute]:
    found: dict[int, dict[str, int]] = {}
    for bucket, code, count in session.execute(hl7_statement(window, _dialect(session))):
        column = _column_of(code)
        counts = found.setdefault(int(bucket), dict.fromkeys(HL7_COLUMNS, 0))
        counts[column] += int(count)
    return [Hl7Minute(minute_of(bucket), found.get(bucket, dict.fromkeys(HL7_COLUMNS, 0)))
            for bucket in window.buckets()]


def _column_of(ack_code: str | None) -> str:
    if ack_code in ACK_CODES:
        return ack_code
    # NULL is a message logged on arrival whose answer is not stored yet.
    return _FOLDED.get(ack_code or "", NO_ACK)


def dicom_statement(window: Window, dialect: str) -> Select[int, int, int | None]:
    """Objects and bytes per minute stored in ``window`` (bytes as received, before any
    lossless compression replaced the file)."""
    touched = select(S.c.id).where(S.c.state.in_((RECEIVING, STABLE)),
                                   S.c.last_received_at >= window.since - LOCK_SLACK)
    rows = (select(minute_bucket(I.c.received_at, dialect).label("minute"),
                   func.coalesce(I.c.original_size, I.c.size).label("size"))
            .where(I.c.study_id.in_(touched),
                   I.c.received_at >= window.since, I.c.received_at < window.until)
            .subquery("received"))
    return (select(rows.c.minute, func.count().label("objects"),
                   func.sum(rows.c.size).label("bytes"))
            .group_by(rows.c.minute))


def dicom_per_minute(session: Session, window: Window) -> list[DicomMinute]:
    found = {int(bucket): (int(objects), int(size or 0)) for bucket, objects, size
             in session.execute(dicom_statement(window, _dialect(session)))}
    return [DicomMinute(minute_of(bucket), *found.get(bucket, (0, 0)))
            for bucket in window.buckets()]


# ------------------------------------------------------------------------------ now


def queue_names(session: Session) -> list[str]:
    """Every queue that has jobs (of any status), by name."""
    return [str(name) for name in session.execute(_QUEUE_NAMES).scalars()]


def depth_statement(names: Sequence[str]) -> Select[str, str, int]:
    return (select(J.c.queue, J.c.status, func.count().label("jobs"))
            .where(J.c.queue.in_(names), J.c.status.in_(OPEN_STATUSES))
            .group_by(J.c.queue, J.c.status))


def queue_depths(session: Session) -> list[QueueDepth]:
    """Pending, running and failed jobs of every queue that has jobs, by queue name; a
    queue whose jobs are all done shows zeros."""
    names = queue_names(session)
    if not names:
        return []
    counts = {name: dict.fromkeys(OPEN_STATUSES, 0) for name in names}
    for queue, status, count in session.execute(depth_statement(names)):
        counts[queue][status] = int(count)
    return [QueueDepth(name, counts[name][PENDING], counts[name][RUNNING], counts[name][FAILED])
            for name in names]


def reconciliation_statement() -> Select[int]:
    return select(func.count()).select_from(S).where(S.c.reconciliation.in_(WAITING))


def reconciliation_queued(session: Session) -> int:
    """Studies waiting for an operator (queued or in conflict)."""
    return int(session.execute(reconciliation_statement()).scalar_one())


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name
