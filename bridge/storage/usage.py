"""Storage usage for operators: per tier and modality now, pending migrations, the last
cleanup, and samples over time for the console's history plot.

Usage is read from the index (sizes recorded when objects were stored or copied), so it is
the archive's own data, not other files on the same disk. Counting is one grouped query per
tier; the sampler writes its result every ``storage_sample_seconds`` so the history needs no
scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.jobs.queue import as_utc
from bridge.store.archive_models import STABLE, Instance, Series, Study
from bridge.store.models import table_of, utcnow
from bridge.store.storage_models import (
    LONGTERM,
    ONLINE,
    InstanceCopy,
    StorageDeletion,
    StorageUsageSample,
)

S = table_of(Study)
SE = table_of(Series)
I = table_of(Instance)  # noqa: E741
C = table_of(InstanceCopy)
D = table_of(StorageDeletion)
U = table_of(StorageUsageSample)


@dataclass(frozen=True, slots=True)
class TierUsage:
    tier: str
    #: Empty for the tier's total.
    modality: str
    instances: int
    bytes: int


@dataclass(frozen=True, slots=True)
class PendingMigrations:
    """Stable studies without a verified long-term copy: due now, or waiting for the delay."""

    due_studies: int
    due_bytes: int
    waiting_studies: int
    waiting_bytes: int
    oldest_due_since: datetime | None


def current_usage(session: Session) -> list[TierUsage]:
    """Per tier: the total first, then each modality (by series modality)."""
    online = session.execute(
        select(SE.c.modality, func.count(), func.coalesce(func.sum(I.c.size), 0))
        .select_from(I.join(SE, SE.c.id == I.c.series_id))
        .where(I.c.online_removed_at.is_(None)).group_by(SE.c.modality)).all()
    longterm = session.execute(
        select(SE.c.modality, func.count(), func.coalesce(func.sum(C.c.size), 0))
        .select_from(C.join(I, I.c.id == C.c.instance_id).join(SE, SE.c.id == I.c.series_id))
        .where(C.c.tier == LONGTERM, C.c.verified_at.is_not(None), C.c.failed_at.is_(None))
        .group_by(SE.c.modality)).all()
    result: list[TierUsage] = []
    for tier, rows in ((ONLINE, online), (LONGTERM, longterm)):
        result.append(TierUsage(tier, "", sum(int(r[1]) for r in rows),
                                sum(int(r[2]) for r in rows)))
        result.extend(TierUsage(tier, r[0] or "", int(r[1]), int(r[2]))
                      for r in sorted(rows, key=lambda r: r[0] or ""))
    return result


def pending_migrations(session: Session, settings: Settings,
                       now: datetime | None = None) -> PendingMigrations:
    if not settings.longterm_url:
        return PendingMigrations(0, 0, 0, 0, None)
    due_at = (now or utcnow()) - timedelta(seconds=settings.longterm_delay_seconds)
    waiting = and_(S.c.state == STABLE, S.c.longterm_at.is_(None))
    due = session.execute(
        select(func.count(), func.coalesce(func.sum(S.c.size_bytes), 0), func.min(S.c.stable_at))
        .where(waiting, S.c.stable_at <= due_at)).one()
    later = session.execute(
        select(func.count(), func.coalesce(func.sum(S.c.size_bytes), 0))
        .where(waiting, S.c.stable_at > due_at)).one()
    oldest = as_utc(due[2]) + timedelta(seconds=settings.longterm_delay_seconds) \
        if due[2] is not None else None
    return PendingMigrations(int(due[0]), int(due[1]), int(later[0]), int(later[1]), oldest)


def record_sample(sessions: sessionmaker[Session]) -> list[TierUsage]:
    """Write the current usage as one sample set (the history's next point)."""
    with sessions() as session:
        usage = current_usage(session)
        at = utcnow()
        session.execute(U.insert(), [
            {"at": at, "tier": u.tier, "modality": u.modality, "instances": u.instances,
             "bytes": u.bytes} for u in usage])
        session.commit()
    return usage


@dataclass(frozen=True, slots=True)
class UsagePoint:
    at: datetime
    tier: str
    modality: str
    instances: int
    bytes: int


def history(session: Session, *, since: datetime, tier: str | None = None,
            modality: str = "", limit: int = 10000) -> list[UsagePoint]:
    """Samples since ``since``, oldest first (``modality`` empty = the tier totals)."""
    query = (select(U.c.at, U.c.tier, U.c.modality, U.c.instances, U.c.bytes)
             .where(U.c.at >= since, U.c.modality == modality)
             .order_by(U.c.at, U.c.tier).limit(limit))
    if tier is not None:
        query = query.where(U.c.tier == tier)
    return [UsagePoint(as_utc(r.at), r.tier, r.modality, int(r.instances), int(r.bytes))
            for r in session.execute(query)]


@dataclass(frozen=True, slots=True)
class DeletionOut:
    at: datetime
    study_instance_uid: str
    tier: str
    reason: str
    instances: int
    bytes: int
    actor: str


def recent_deletions(session: Session, *, limit: int = 100, offset: int = 0) -> list[DeletionOut]:
    rows = session.execute(select(D).order_by(D.c.at.desc(), D.c.id.desc())
                           .limit(limit).offset(offset))
    return [DeletionOut(as_utc(r.at), r.study_instance_uid, r.tier, r.reason, int(r.instances),
                        int(r.bytes), r.actor) for r in rows]
