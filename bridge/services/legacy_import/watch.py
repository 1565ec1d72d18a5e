"""Watched folders and scheduled pulls: the periodic side of the legacy import.

A ``watch`` source is scanned every ``poll_seconds``; a ``pull`` source at the times of its
crontab, scanning twice ``settle_seconds`` apart. Either way only files seen with the same
size and mtime on two scans in a row are imported (:class:`~.scan.StabilityFilter`), so a
file still being written by the modality or a network copy is left for a later scan.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.import_sources import ImportSource
from bridge.config.settings import Settings
from bridge.services.archive.store import ArchiveStore
from bridge.services.legacy_import.importer import FAILED, ImportReport
from bridge.services.legacy_import.scan import FileVersion, StabilityFilter, walk
from bridge.services.legacy_import.setup import build_importer

logger = logging.getLogger("bridge.import")


class FolderWatch:
    """One source's scans; ``run_once`` is what the scheduler calls."""

    def __init__(self, settings: Settings, source: ImportSource, store: ArchiveStore, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.source = source
        self.store = store
        self._stability = StabilityFilter()
        #: Versions recorded already: skipped before asking the database.
        self._done: set[tuple[str, int, int]] = set()
        self._sleep = sleep
        self._lock = threading.Lock()

    def run_once(self) -> ImportReport | None:
        """One scan (a pull: two, ``settle_seconds`` apart); imports the stable files."""
        with self._lock:
            if not self.source.path.is_dir():
                logger.warning("legacy import %s: the source folder is not available",
                               self.source.name)
                return None
            if self.source.mode == "pull" and self.source.settle_seconds:
                self._stability.stable(self._scan())  # the first look
                self._sleep(self.source.settle_seconds)
            stable = self._stability.stable(self._scan())
            fresh = [v for v in stable if v.key not in self._done]
            if not fresh:
                return None
            importer = build_importer(self.settings, self.store, source=self.source)
            report = importer.run(fresh)
            failed = {str(o.path) for o in report.with_status(FAILED)}
            self._done.update(v.key for v in fresh if str(v.path) not in failed
                              and _settled(v, report))
            if report.outcomes:
                logger.info("legacy import %s: %d imported, %d duplicates, %d rejected, "
                            "%d failed", self.source.name, report.count("imported"),
                            report.count("duplicate"), report.count("rejected"),
                            report.count(FAILED))
            return report

    def _scan(self) -> list[FileVersion]:
        return list(walk([self.source.path], skip=[self.settings.archive_root]))


def _settled(version: FileVersion, report: ImportReport) -> bool:
    """A file that changed while read is looked at again."""
    return not any(o.path == version.path and o.status == "changing"
                   for o in report.outcomes)


def schedule_legacy_import(scheduler: BaseScheduler, settings: Settings,
                           sessions: sessionmaker[Session],
                           archive_store: ArchiveStore | None = None) -> list[FolderWatch]:
    """A periodic job per configured source. ``archive_store``: the application's one store
    (shared group commits with C-STORE); without it one is built on ``sessions``."""
    from bridge.jobs.scheduler import every

    if not settings.import_sources:
        return []
    store = archive_store or ArchiveStore(settings, sessions)
    watches = []
    for source in settings.import_sources:
        watch = FolderWatch(settings, source, store)
        name = f"legacy-import-{source.name}"
        if source.mode == "watch":
            every(scheduler, source.poll_seconds, watch.run_once, name)
        else:
            trigger = CronTrigger.from_crontab(source.schedule,
                                               timezone=settings.local_timezone)
            scheduler.add_job(_logged(watch.run_once, name), trigger, id=name, name=name)
        watches.append(watch)
    return watches


def _logged(job: Callable[[], object], name: str) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except Exception:  # logged, and tried again at the next time
            logger.exception("periodic job %s failed", name)

    return run
