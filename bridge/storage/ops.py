"""What operators can ask of the storage tiers (API and CLI share it): usage, a cleanup run
(or its dry run), a migration run now, a recall of a study to the online tier.

Built once by the composition root from the settings and the long-term store; parts that need
a long-term tier are ``None`` without one, and the API answers 409 for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from bridge.config import Settings
from bridge.storage.cleanup import CleanupReport, CopyProbe, OnlineCleanup


@dataclass(frozen=True, slots=True)
class StorageOps:
    settings: Settings
    sessions: sessionmaker[Session]
    #: Run the long-term migration once now; returns its report (a dataclass).
    migrate_now: Callable[[], object] | None = None
    #: Copy a study held only in long-term storage back online: study UID -> instances.
    recall: Callable[[str], int] | None = None
    #: Confirms a long-term copy is on the store before its online file goes.
    probe: CopyProbe | None = None

    def cleanup(self, *, dry_run: bool, actor: str) -> CleanupReport:
        return OnlineCleanup(self.settings, self.sessions, probe=self.probe).run(
            dry_run=dry_run, actor=actor)


def build_storage_ops(settings: Settings, sessions: sessionmaker[Session]) -> StorageOps:
    """The operations with whatever long-term tier the settings name."""
    return StorageOps(settings, sessions)
