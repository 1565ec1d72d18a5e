"""The long-term migration: stable studies are copied to the long-term tier, each copy read
back and checked against ``instances.sha256``, and the study marked (``longterm_at``) once
every instance has a verified copy.

A run (:meth:`LongtermMigration.run_once`) takes the studies that are stable, not yet
marked, and stable for longer than ``longterm_delay_seconds`` (oldest first, through the
index ``ix_studies_stable_longterm``). For each study it calls the ``before_copy`` hooks
(e.g. compression at migration), then copies every instance without a good copy with
``longterm_workers`` threads: upload, read back, compare. The copies' rows are written in
small batches as they are verified, and the study is marked in a last transaction that
re-checks, under the study's row lock, that the study is still stable and that no instance
lacks a verified copy (a late object arriving meanwhile leaves it unmarked).

Crash safety (kill -9 at any point), and why the row is written *after* the upload: a key
is the instance's archive path, so uploading an instance again writes the same object
again, never a second one. The row is therefore the commit point: killed before it, the
rerun finds no verified row and uploads the same key again (same bytes, same object);
killed after it, the rerun sees a verified copy and skips it. A "pending" row written before
the upload would only be needed if keys were random (to find orphans); here it would add a
transaction per object for nothing. Uniqueness comes from ``(instance_id, tier)``: a
re-copy updates the row, and two runs racing on one instance end with one row.

The store being down (:class:`~bridge.storage.blobs.protocol.StoreUnavailable`) stops the run at
once: nothing is marked or deleted, the error is logged (store, action and key: UIDs, never
patient data) and counted in ``bridge_longterm_failures_total{reason="unavailable"}``, and
the next run tries again. A copy whose read-back does not match is recorded as failed on
its row (``failed_at``/``failure``) and the study stays unmarked.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import CursorResult, and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.jobs.scheduler import every
from bridge.storage.blobs.factory import open_longterm_store
from bridge.storage.blobs.protocol import BlobStore, BlobStoreError, StoreUnavailable
from bridge.store.archive_models import STABLE, Instance, Study
from bridge.store.models import table_of, utcnow
from bridge.store.storage_models import LONGTERM, InstanceCopy

log = logging.getLogger("bridge.storage")

S = table_of(Study)
I = table_of(Instance)  # noqa: E741
C = table_of(InstanceCopy)

#: Called in a transaction before a study's files are copied (study id).
BeforeCopy = Callable[[Session, int], None]
#: Studies read per query while looking for due ones.
_PAGE = 200
#: Verified copies written per transaction.
_ROWS_PER_COMMIT = 64


@dataclass
class MigrationReport:
    """What one run did."""

    #: Studies marked ``longterm_at`` (every instance verified).
    studies_done: int = 0
    #: Studies looked at that are not complete (a failure, a late object).
    studies_pending: int = 0
    instances_copied: int = 0
    bytes_copied: int = 0
    failures: int = 0
    #: The first few failures, without patient data.
    errors: list[str] = field(default_factory=list)
    #: The store could not be reached: the run stopped early.
    store_unavailable: bool = False
    seconds: float = 0.0

    def failed(self, message: str) -> None:
        self.failures += 1
        if len(self.errors) < 20:
            self.errors.append(message)


@dataclass(frozen=True, slots=True)
class _Todo:
    instance_id: int
    study_id: int
    path: str
    sha256: str
    #: The copy row's key and location when one exists (a re-copy replaces it).
    old_key: str | None
    old_location: str | None


@dataclass(frozen=True, slots=True)
class _Copied:
    todo: _Todo
    key: str
    size: int
    #: None when verified; else why the copy cannot be trusted.
    failure: str | None


@dataclass(frozen=True, slots=True)
class MigrationMetrics:
    copied: Counter
    copied_bytes: Counter
    failures: Counter
    studies: Counter

    @classmethod
    def of(cls, registry: CollectorRegistry | None) -> MigrationMetrics:
        """One set per registry (two migrations on one registry share it)."""
        key = registry if registry is not None else _PRIVATE
        found = _METRICS.get(key)
        if found is None:
            reg = registry if registry is not None else CollectorRegistry()
            found = cls(
                copied=Counter("bridge_longterm_copied_instances",
                               "Instances copied to the long-term tier and verified.",
                               registry=reg),
                copied_bytes=Counter("bridge_longterm_copied_bytes",
                                     "Bytes copied to the long-term tier and verified.",
                                     registry=reg),
                failures=Counter("bridge_longterm_failures",
                                 "Long-term copies that failed, by reason (unavailable: the "
                                 "store could not be reached; verify: the read-back differs; "
                                 "online: the online file is missing; error: other).",
                                 ["reason"], registry=reg),
                studies=Counter("bridge_longterm_studies",
                                "Studies marked as held in the long-term tier.", registry=reg),
            )
            _METRICS[key] = found
        return found


_PRIVATE = CollectorRegistry()
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, MigrationMetrics] = (
    weakref.WeakKeyDictionary())


class LongtermMigration:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], store: BlobStore,
                 *, metrics: CollectorRegistry | None = None,
                 before_copy: Iterable[BeforeCopy] = (), workers: int | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.metrics = MigrationMetrics.of(metrics)
        #: Hooks called before a study's files are copied; the composition root appends.
        self.before_copy: list[BeforeCopy] = list(before_copy)
        self.workers = workers or settings.longterm_workers
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="longterm")
        self._lock = threading.Lock()  # one run at a time (scheduler and CLI in-process)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- runs ----------------------------------------------------------------------------

    def run_once(self, *, now: datetime | None = None, ignore_delay: bool = False,
                 max_studies: int | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> MigrationReport:
        """Copy every due study; ``ignore_delay`` takes every stable unmarked study (an
        operator's "migrate now"). Stops between studies when ``should_stop()``."""
        started = time.monotonic()
        report = MigrationReport()
        with self._lock:
            try:
                self.store.check()
            except StoreUnavailable as exc:
                self._unavailable(report, exc)
                return report
            now = now or utcnow()
            due_before = now if ignore_delay else now - timedelta(
                seconds=self.settings.longterm_delay_seconds)
            for done, study_id in enumerate(self._due_studies(due_before)):
                if should_stop() or (max_studies is not None and done >= max_studies):
                    break
                if not self._migrate_study(study_id, report, should_stop):
                    break
        report.seconds = time.monotonic() - started
        if report.instances_copied or report.failures:
            log.info("long-term migration: %d studies marked, %d instances (%d bytes) copied, "
                     "%d failures in %.1f s", report.studies_done, report.instances_copied,
                     report.bytes_copied, report.failures, report.seconds)
        return report

    def migrate_study(self, study_id: int) -> MigrationReport:
        """One study now, whatever its state's age (the study must be stable to be marked)."""
        report = MigrationReport()
        with self._lock:
            self._migrate_study(study_id, report, lambda: False)
        return report

    def _due_studies(self, due_before: datetime) -> Iterable[int]:
        """Due study ids, a page at a time (keyset on ``(stable_at, id)``)."""
        after: tuple[datetime, int] | None = None
        while True:
            query = (select(S.c.id, S.c.stable_at)
                     .where(S.c.state == STABLE, S.c.longterm_at.is_(None),
                            S.c.stable_at <= due_before)
                     .order_by(S.c.stable_at, S.c.id).limit(_PAGE))
            if after is not None:
                query = query.where((S.c.stable_at > after[0])
                                    | and_(S.c.stable_at == after[0], S.c.id > after[1]))
            with self.sessions() as session:
                page = session.execute(query).all()
            for row in page:
                yield int(row.id)
            if len(page) < _PAGE:
                return
            after = (page[-1].stable_at, int(page[-1].id))

    # -- one study -----------------------------------------------------------------------

    def _migrate_study(self, study_id: int, report: MigrationReport,
                       should_stop: Callable[[], bool]) -> bool:
        """Copy and mark one study; False when the run must stop (store down, stopping)."""
        for hook in self.before_copy:
            try:
                with self.sessions.begin() as session:
                    hook(session, study_id)
            except Exception:  # the copy goes ahead with the files as they are
                log.exception("before-copy hook %s failed for study %s",
                              getattr(hook, "__name__", hook), study_id)
        todo, removed = self._todo(study_id)
        for instance_id in removed:
            report.failed(f"instance {instance_id}: no online file and no verified copy")
            self.metrics.failures.labels("online").inc()
        try:
            complete = self._copy_all(todo, report, should_stop) and not removed
        except StoreUnavailable as exc:
            self._unavailable(report, exc)
            report.studies_pending += 1
            return False
        if complete and self._mark(study_id):
            report.studies_done += 1
            self.metrics.studies.inc()
        else:
            report.studies_pending += 1
        return not should_stop()

    def _todo(self, study_id: int) -> tuple[list[_Todo], list[int]]:
        """Instances without a good copy; and those of them whose online file is gone."""
        with self.sessions() as session:
            rows = session.execute(
                select(I.c.id, I.c.path, I.c.sha256, I.c.online_removed_at,
                       C.c.key, C.c.location, C.c.sha256.label("copy_sha256"),
                       C.c.verified_at, C.c.failed_at)
                .select_from(I.outerjoin(C, and_(C.c.instance_id == I.c.id,
                                                 C.c.tier == LONGTERM)))
                .where(I.c.study_id == study_id).order_by(I.c.id)).all()
        todo: list[_Todo] = []
        removed: list[int] = []
        for row in rows:
            if (row.verified_at is not None and row.failed_at is None
                    and row.copy_sha256 == row.sha256):
                continue
            if row.online_removed_at is not None:
                removed.append(int(row.id))
                continue
            todo.append(_Todo(int(row.id), study_id, row.path, row.sha256, row.key,
                              row.location))
        return todo, removed

    def _copy_all(self, todo: Sequence[_Todo], report: MigrationReport,
                  should_stop: Callable[[], bool]) -> bool:
        """Copy with ``workers`` threads, recording rows in batches as copies verify;
        whether every copy verified. A :class:`StoreUnavailable` cancels the rest."""
        pending: set[Future[_Copied]] = set()
        queue = list(reversed(todo))
        done: list[_Copied] = []
        ok = True
        try:
            while queue or pending:
                # Bounded: a 10 000-object study is not queued at once, and stopping
                # (shutdown) waits only for the copies under way.
                while queue and len(pending) < self.workers * 2 and not should_stop():
                    pending.add(self._pool.submit(self._copy_one, queue.pop()))
                if not pending:
                    return False  # stopping
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    copied = future.result()  # StoreUnavailable propagates
                    done.append(copied)
                    if copied.failure is not None:
                        ok = False
                        report.failed(copied.failure)
                if len(done) >= _ROWS_PER_COMMIT:
                    self._record(done, report)
                    done = []
        except BaseException:
            for future in pending:
                future.cancel()
            wait(pending)
            # What verified before the failure is kept: the rerun will not copy it again.
            self._record([d for d in done + _results(pending) if d.failure is None], report)
            raise
        self._record(done, report)
        return ok

    def _copy_one(self, todo: _Todo) -> _Copied:
        key = self.store.key_for(todo.path)
        source = self.settings.archive_root / todo.path
        if not source.is_file():
            self.metrics.failures.labels("online").inc()
            return _Copied(todo, key, 0, f"instance {todo.instance_id}: online file missing")
        try:
            size = self.store.put(source, key)
            stored = self.store.sha256(key)
        except StoreUnavailable:
            raise
        except (BlobStoreError, OSError) as exc:
            self.metrics.failures.labels("error").inc()
            return _Copied(todo, key, 0, f"instance {todo.instance_id}: copy failed "
                           f"({type(exc).__name__}: {exc})")
        if stored != todo.sha256:
            # The online file or the transfer is damaged: recorded, never trusted.
            self.metrics.failures.labels("verify").inc()
            log.error("long-term copy of instance %s does not match its checksum "
                      "(stored %s, expected %s)", todo.instance_id, stored[:12],
                      todo.sha256[:12])
            return _Copied(todo, key, size, f"instance {todo.instance_id}: the copy read "
                           "back does not match the instance's checksum")
        return _Copied(todo, key, size, None)

    def _record(self, results: Sequence[_Copied], report: MigrationReport) -> None:
        """Upsert the copies' rows (one per instance and tier) in one transaction; then drop
        objects of replaced versions (their rows now name the new key)."""
        if not results:
            return
        now = utcnow()
        stale: list[str] = []
        with self.sessions.begin() as session:
            for copied in results:
                values: dict[str, Any] = {
                    "study_id": copied.todo.study_id, "backend": self.store.backend,
                    "location": self.store.location, "key": copied.key,
                    "size": copied.size, "sha256": copied.todo.sha256, "created_at": now,
                    "verified_at": None if copied.failure else now,
                    "failed_at": now if copied.failure else None,
                    "failure": copied.failure}
                _upsert_copy(session, copied.todo.instance_id, values)
                old = copied.todo
                if (copied.failure is None and old.old_key and old.old_key != copied.key
                        and old.old_location == self.store.location):
                    stale.append(old.old_key)
        for copied in results:
            if copied.failure is None:
                report.instances_copied += 1
                report.bytes_copied += copied.size
                self.metrics.copied.inc()
                self.metrics.copied_bytes.inc(copied.size)
        for key in stale:
            try:
                self.store.delete(key)
            except BlobStoreError as exc:  # an orphan of a replaced version; harmless
                log.warning("could not remove replaced long-term object %s: %s", key, exc)

    def _mark(self, study_id: int) -> bool:
        """Set ``longterm_at`` if the study is still stable and every instance is verified,
        under the study's row lock (a late object holds it while it is indexed)."""
        with self.sessions.begin() as session:
            study = session.execute(select(S.c.state, S.c.longterm_at).where(
                S.c.id == study_id).with_for_update()).first()
            if study is None or study.state != STABLE:
                return False
            if study.longterm_at is not None:
                return True
            good = and_(C.c.instance_id == I.c.id, C.c.tier == LONGTERM,
                        C.c.verified_at.is_not(None), C.c.failed_at.is_(None),
                        C.c.sha256 == I.c.sha256)
            lacking = session.execute(
                select(I.c.id).select_from(I.outerjoin(C, good))
                .where(I.c.study_id == study_id, C.c.id.is_(None)).limit(1)).first()
            if lacking is not None:
                return False
            session.execute(update(S).where(S.c.id == study_id).values(longterm_at=utcnow()))
        return True

    def _unavailable(self, report: MigrationReport, exc: StoreUnavailable) -> None:
        report.store_unavailable = True
        report.failed(str(exc))
        self.metrics.failures.labels("unavailable").inc()
        log.warning("long-term store unavailable, migration retried at the next run: %s", exc)


def _results(futures: Iterable[Future[_Copied]]) -> list[_Copied]:
    found: list[_Copied] = []
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is None:
            found.append(future.result())
    return found


def _upsert_copy(session: Session, instance_id: int, values: dict[str, Any]) -> None:
    """One row per (instance, tier): update it, else insert it; a concurrent insert (another
    process migrating the same study) loses on the unique key and updates instead."""
    where = and_(C.c.instance_id == instance_id, C.c.tier == LONGTERM)
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(C).where(where).values(**values))
    if result.rowcount:
        return
    try:
        with session.begin_nested():
            session.execute(C.insert().values(instance_id=instance_id, tier=LONGTERM,
                                              **values))
    except IntegrityError:
        session.execute(update(C).where(where).values(**values))


def schedule_longterm_migration(scheduler: BackgroundScheduler, settings: Settings,
                                sessions: sessionmaker[Session],
                                metrics: CollectorRegistry | None = None
                                ) -> LongtermMigration | None:
    """The periodic migration (every ``longterm_poll_seconds``); None without a long-term
    tier. Also sets up this process's instance reader with the same metrics registry, and
    prunes its cache of long-term reads at each run."""
    from bridge.storage.reader import install_reader

    reader = install_reader(settings, sessions, metrics=metrics)
    store = open_longterm_store(settings)
    if store is None:
        return None
    migration = LongtermMigration(settings, sessions, store, metrics=metrics)

    def run() -> None:
        # Stops between studies once the scheduler shuts down, so stopping the bridge
        # waits only for the copies under way, not for a whole backlog.
        migration.run_once(should_stop=lambda: scheduler.state == STATE_STOPPED)
        reader.prune_cache()

    every(scheduler, settings.longterm_poll_seconds, run, "longterm-migration")
    return migration

