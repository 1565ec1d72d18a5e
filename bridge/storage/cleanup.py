"""Online cleanup: remove online files of studies whose long-term copy is verified.

Two rules, run in this order on the cleanup schedule (and by ``bridge storage cleanup``):

- **time**: a study's online files go ``cleanup_after_days`` after its long-term copy was
  verified (``studies.longterm_at``);
- **capacity**: when the online tier is above its high mark, one of three routines removes
  copied studies: ``copied`` (every copied study), ``older_than`` (copied studies received
  more than ``cleanup_older_than_days`` ago) or ``oldest_first`` (copied studies, oldest
  received first, until usage is below the low mark).

The one invariant: an online file is removed only when its instance has a verified,
not-failed long-term copy, checked again per instance in the removing transaction (and,
when a probe is given, confirmed present on the store right before). A study without one is
never touched, whatever the capacity; if that keeps usage above the mark, the report says
so. Every removal is a ``storage_deletions`` row. Files are unlinked after the commit: a
crash in between leaves a file the index no longer serves (harmless, swept by the next
run), never an index pointing only at a missing file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.jobs.queue import as_utc
from bridge.store.archive_models import STABLE, Instance, Series, Study
from bridge.store.fhir_models import SyncState
from bridge.store.models import table_of, utcnow
from bridge.store.storage_models import LONGTERM, ONLINE, InstanceCopy, StorageDeletion

log = logging.getLogger("bridge.storage")

S = table_of(Study)
SE = table_of(Series)
I = table_of(Instance)  # noqa: E741
C = table_of(InstanceCopy)
D = table_of(StorageDeletion)

#: ``sync_state`` row holding the last cleanup's summary (JSON).
LAST_CLEANUP = "storage.cleanup.last"

#: Confirms that a long-term copy is still on the store: (key, size) -> present.
CopyProbe = Callable[[str, int], bool]


class StoreUnavailable(Exception):
    """The long-term store cannot confirm copies now: nothing more is removed this run."""


@dataclass(frozen=True, slots=True)
class Candidate:
    study_id: int
    study_instance_uid: str
    modalities: str
    bytes: int
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Removal:
    study_instance_uid: str
    modalities: str
    reason: str
    instances: int
    bytes: int


@dataclass(slots=True)
class CleanupReport:
    dry_run: bool
    at: datetime
    capacity_bytes: int
    usage_before: int
    usage_after: int
    high_mark_bytes: int
    low_mark_bytes: int
    removed: list[Removal] = field(default_factory=list)
    #: Studies chosen but kept, with why (copy not verified, store unreachable, ...).
    kept: list[tuple[str, str]] = field(default_factory=list)
    #: Capacity cleanup ran and usage is still above the low mark (uncopied data).
    short_of_low_mark: bool = False
    note: str = ""

    @property
    def removed_bytes(self) -> int:
        return sum(r.bytes for r in self.removed)

    def summary(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(), "dry_run": self.dry_run,
            "studies": len(self.removed), "instances": sum(r.instances for r in self.removed),
            "bytes": self.removed_bytes, "usage_before": self.usage_before,
            "usage_after": self.usage_after, "capacity_bytes": self.capacity_bytes,
            "short_of_low_mark": self.short_of_low_mark, "kept": len(self.kept),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Capacity:
    """The online tier's size and how full it is."""

    capacity: int
    used: int


def online_index_bytes(session: Session) -> int:
    """Bytes of online files, as the index knows them."""
    value = session.execute(select(func.coalesce(func.sum(I.c.size), 0)).where(
        I.c.online_removed_at.is_(None))).scalar_one()
    return int(value)


def measure_capacity(session: Session, settings: Settings) -> Capacity:
    """With a quota, usage is what the index holds online (the quota is the archive's
    share); without one, the file system's own size and usage (other data on it counts)."""
    if settings.online_quota_bytes:
        return Capacity(settings.online_quota_bytes, online_index_bytes(session))
    root = settings.archive_root
    root.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(root)
    return Capacity(disk.total, disk.used)


class OnlineCleanup:
    """One cleanup run: :meth:`run` plans, and unless ``dry_run`` removes and records."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], *,
                 probe: CopyProbe | None = None,
                 now: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.sessions = sessions
        self.probe = probe
        self.now = now

    def run(self, *, dry_run: bool = False, actor: str = "scheduler") -> CleanupReport:
        s = self.settings
        now = self.now()
        with self.sessions() as session:
            cap = measure_capacity(session, s)
        report = CleanupReport(
            dry_run=dry_run, at=now, capacity_bytes=cap.capacity, usage_before=cap.used,
            usage_after=cap.used,
            high_mark_bytes=int(cap.capacity * s.cleanup_high_water_percent / 100),
            low_mark_bytes=int(cap.capacity * s.cleanup_low_water_percent / 100))
        if not s.longterm_url:
            report.note = "no long-term tier (BRIDGE_LONGTERM_URL): online files are kept"
            return report
        chosen: set[int] = set()
        try:
            if s.cleanup_after_days is not None:
                cutoff = now - timedelta(days=s.cleanup_after_days)
                for cand in self._copied(before_longterm=cutoff, chosen=chosen):
                    self._remove(cand, "time", report, actor=actor, dry_run=dry_run)
                    chosen.add(cand.study_id)
            if report.usage_after > report.high_mark_bytes:
                self._by_capacity(report, chosen, now=now, actor=actor, dry_run=dry_run)
        except StoreUnavailable as exc:
            report.note = f"stopped: {exc}"
            log.warning("online cleanup stopped: %s", exc)
        if not dry_run:
            self._record(report)
        log.info("online cleanup%s: %s studies, %s bytes, usage %s -> %s of %s",
                 " (dry run)" if dry_run else "", len(report.removed), report.removed_bytes,
                 report.usage_before, report.usage_after, report.capacity_bytes)
        return report

    # -- choosing ---------------------------------------------------------------------------

    def _by_capacity(self, report: CleanupReport, chosen: set[int], *, now: datetime,
                     actor: str, dry_run: bool) -> None:
        s = self.settings
        routine = s.cleanup_capacity_routine
        reason = f"capacity:{routine}"
        received_before = (now - timedelta(days=s.cleanup_older_than_days)
                           if routine == "older_than" else None)
        for cand in self._copied(received_before=received_before, chosen=chosen,
                                 oldest_first=True):
            if routine == "oldest_first" and report.usage_after <= report.low_mark_bytes:
                break
            self._remove(cand, reason, report, actor=actor, dry_run=dry_run)
            chosen.add(cand.study_id)
        if report.usage_after > report.low_mark_bytes:
            report.short_of_low_mark = True
            log.warning("online tier above its low mark after cleanup (%s of %s bytes): the "
                        "rest has no verified long-term copy yet", report.usage_after,
                        report.capacity_bytes)

    def _copied(self, *, chosen: set[int], before_longterm: datetime | None = None,
                received_before: datetime | None = None,
                oldest_first: bool = False) -> Iterable[Candidate]:
        """Studies whose every instance has a verified long-term copy and that still have
        online files, in pages (the list can be long; each page is a fresh query)."""
        last: tuple[object, int] | None = None
        order = (S.c.created_at, S.c.id) if oldest_first else (S.c.longterm_at, S.c.id)
        while True:
            query = (select(S.c.id, S.c.study_instance_uid, S.c.modalities, S.c.size_bytes,
                            S.c.created_at, order[0].label("k"))
                     .where(S.c.state == STABLE, S.c.longterm_at.is_not(None),
                            S.c.online_removed_at.is_(None))
                     .order_by(*order).limit(200))
            if before_longterm is not None:
                query = query.where(S.c.longterm_at <= before_longterm)
            if received_before is not None:
                query = query.where(S.c.created_at <= received_before)
            if last is not None:
                query = query.where((order[0] > last[0])
                                    | and_(order[0] == last[0], S.c.id > last[1]))
            with self.sessions() as session:
                rows = session.execute(query).all()
            if not rows:
                return
            for row in rows:
                if row.id not in chosen:
                    yield Candidate(row.id, row.study_instance_uid, row.modalities,
                                    int(row.size_bytes or 0), as_utc(row.created_at))
            last = (rows[-1].k, rows[-1].id)

    # -- removing ---------------------------------------------------------------------------

    def _remove(self, cand: Candidate, reason: str, report: CleanupReport, *, actor: str,
                dry_run: bool) -> None:
        with self.sessions() as session:
            online = self._online_instances(session, cand.study_id)
            unsafe = [row for row in online if row.copy_key is None]
            if unsafe:
                report.kept.append((cand.study_instance_uid,
                                    f"{len(unsafe)} instance(s) without a verified copy"))
                return
            if self.probe is not None:
                for row in online:
                    if not self._confirmed(row.copy_key, int(row.copy_size)):
                        report.kept.append((cand.study_instance_uid,
                                            "a long-term copy is missing on the store"))
                        return
            size = sum(int(row.size) for row in online)
            removal = Removal(cand.study_instance_uid, cand.modalities, reason, len(online),
                              size)
            if dry_run:
                report.removed.append(removal)
                report.usage_after -= size
                return
            now = self.now()
            ids = [row.id for row in online]
            session.execute(I.update().where(I.c.id.in_(ids), I.c.online_removed_at.is_(None))
                            .values(online_removed_at=now))
            session.execute(S.update().where(S.c.id == cand.study_id)
                            .values(online_removed_at=now))
            session.execute(D.insert().values(
                at=now, study_id=cand.study_id, study_instance_uid=cand.study_instance_uid,
                tier=ONLINE, reason=reason, instances=len(online), bytes=size, actor=actor))
            session.commit()
        report.removed.append(removal)
        report.usage_after -= size
        root = self.settings.archive_root
        for row in online:
            _unlink(root / row.path)

    def _online_instances(self, session: Session, study_id: int) -> list[Any]:
        """The study's online instances, each with its verified long-term copy (or None).
        Locked on PostgreSQL so a recall or a late object cannot interleave."""
        # The copy must hold the bytes the index now names: an instance compressed after its
        # copy was made has a new checksum, and its old copy is re-made by the migration.
        verified = and_(C.c.instance_id == I.c.id, C.c.tier == LONGTERM,
                        C.c.verified_at.is_not(None), C.c.failed_at.is_(None),
                        C.c.sha256 == I.c.sha256)
        session.execute(select(S.c.id).where(S.c.id == study_id).with_for_update())
        return list(session.execute(
            select(I.c.id, I.c.path, I.c.size, C.c.key.label("copy_key"),
                   C.c.size.label("copy_size"))
            .select_from(I.outerjoin(C, verified))
            .where(I.c.study_id == study_id, I.c.online_removed_at.is_(None))).all())

    def _confirmed(self, key: str, size: int) -> bool:
        assert self.probe is not None
        try:
            return self.probe(key, size)
        except Exception as exc:  # the store is down: stop, delete nothing more
            raise StoreUnavailable(f"long-term store unreachable ({type(exc).__name__})") from exc

    def _record(self, report: CleanupReport) -> None:
        value = json.dumps(report.summary())
        with self.sessions() as session:
            row = session.get(SyncState, LAST_CLEANUP)
            if row is None:
                session.add(SyncState(name=LAST_CLEANUP, value=value))
            else:
                row.value = value
            session.commit()


def last_cleanup(session: Session) -> dict[str, object] | None:
    row = session.get(SyncState, LAST_CLEANUP)
    return json.loads(row.value) if row is not None and row.value else None


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # kept on disk; the index already serves the long-term copy
        log.warning("could not remove online file (%s): %s", type(exc).__name__, path.name)
