"""What operators can ask of the storage tiers (API and CLI share it): usage, a cleanup run
(or its dry run), a migration run now, a recall of a study to the online tier.

Built once by the composition root from the settings and the long-term store; parts that need
a long-term tier are ``None`` without one, and the API answers 409 for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import NotFound
from bridge.storage.blobs.factory import open_longterm_store
from bridge.storage.cleanup import CleanupReport, CopyProbe, OnlineCleanup
from bridge.storage.migration import LongtermMigration, MigrationReport
from bridge.storage.reader import reader_for
from bridge.store.archive_models import Study


@dataclass(frozen=True, slots=True)
class StorageOps:
    settings: Settings
    sessions: sessionmaker[Session]
    #: Run the long-term migration once now (True: every stable study, not only those past
    #: the delay); returns its report (a dataclass).
    migrate_now: Callable[[bool], object] | None = None
    #: Copy a study held only in long-term storage back online: study UID -> instances.
    recall: Callable[[str], int] | None = None
    #: Confirms a long-term copy is on the store before its online file goes.
    probe: CopyProbe | None = None

    def cleanup(self, *, dry_run: bool, actor: str) -> CleanupReport:
        return OnlineCleanup(self.settings, self.sessions, probe=self.probe).run(
            dry_run=dry_run, actor=actor)


def build_storage_ops(settings: Settings, sessions: sessionmaker[Session], *,
                      migration: LongtermMigration | None = None) -> StorageOps:
    """The operations with whatever long-term tier the settings name. ``migration`` is the
    scheduled one when the bridge runs (one run at a time); the CLI makes its own."""
    store = open_longterm_store(settings)
    if store is None:
        return StorageOps(settings, sessions)
    if migration is None:
        migration = LongtermMigration(settings, sessions, store)
    reader = reader_for(settings, sessions)  # egress's reader: its metrics are served

    def migrate_now(every_stable: bool) -> MigrationReport:
        return migration.run_once(ignore_delay=every_stable)

    def recall(study_uid: str) -> int:
        with sessions() as session:
            study_id = session.execute(select(Study.id).where(
                Study.study_instance_uid == study_uid)).scalar_one_or_none()
        if study_id is None:
            raise NotFound("no such study", location="study_instance_uid")
        return reader.recall_study(study_id)

    def probe(key: str, size: int) -> bool:
        return store.size(key) == size

    return StorageOps(settings, sessions, migrate_now=migrate_now, recall=recall, probe=probe)
