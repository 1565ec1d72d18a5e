"""Study stability: a study with no new object for ``study_stable_seconds`` is stable.

Marking it stable writes a ``stable`` study event and runs the study hooks (forwarding,
and later FHIR ImagingStudy publishing) in the same transaction, so the event and the work it
causes are durable together or not at all. An object arriving later re-opens the study
(:mod:`bridge.services.archive.store`), and the next quiet period makes it stable again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.store.archive_models import RECEIVING, STABLE, Study, StudyEvent
from bridge.store.models import table_of, utcnow

S = table_of(Study)
E = table_of(StudyEvent)

#: Work to do when a study becomes stable or is reconciled: ``hook(session, study_id)``,
#: inside the transaction that recorded the change.
StudyHook = Callable[[Session, int], object]

#: Studies handled per transaction, so one sweep never holds the writer lock for long.
BATCH = 100


def mark_stable_studies(session: Session, *, stable_seconds: float,
                        hooks: Sequence[StudyHook] = (), now: datetime | None = None
                        ) -> list[int]:
    """Mark the quiet studies stable; returns their ids."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=stable_seconds)
    conn = session.connection()
    due = conn.execute(select(S.c.id).where(S.c.state == RECEIVING,
                                            S.c.last_received_at <= cutoff)
                       .order_by(S.c.last_received_at).limit(BATCH)).scalars().all()
    marked: list[int] = []
    for study_id in due:
        # Guarded by the same condition: an object that arrived meanwhile keeps it open.
        done = conn.execute(update(S).where(
            S.c.id == study_id, S.c.state == RECEIVING, S.c.last_received_at <= cutoff
        ).values(state=STABLE, stable_at=now, updated_at=now)).rowcount
        if not done:
            continue
        counts = conn.execute(select(S.c.num_series, S.c.num_instances)
                              .where(S.c.id == study_id)).one()
        conn.execute(E.insert().values(
            study_id=study_id, kind="stable", created_at=now,
            details={"series": counts.num_series, "instances": counts.num_instances}))
        for hook in hooks:
            hook(session, study_id)
        marked.append(int(study_id))
    return marked


def any_due(session: Session, *, stable_seconds: float, now: datetime | None = None) -> bool:
    """Whether a study is quiet long enough (read-only; see :func:`mark_stable_studies`)."""
    cutoff = (now or utcnow()) - timedelta(seconds=stable_seconds)
    return session.connection().execute(
        select(S.c.id).where(S.c.state == RECEIVING, S.c.last_received_at <= cutoff)
        .limit(1)).first() is not None


def is_stable(session: Session, study_id: int) -> bool:
    return session.connection().execute(
        select(S.c.state).where(S.c.id == study_id)).scalar_one_or_none() == STABLE
