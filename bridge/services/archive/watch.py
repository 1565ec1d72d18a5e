"""The periodic archive sweep: attach orders that arrived after the images, then mark quiet
studies stable. Each part commits on its own, so one failing never blocks the other."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from bridge.mapping.dicom.reconciliation import ReconcilePolicy
from bridge.services.archive.late_orders import any_reconcilable, reconcile_queued
from bridge.services.archive.stability import StudyHook, any_due, is_stable, mark_stable_studies
from bridge.store.db import read_session

logger = logging.getLogger("bridge.archive")


@dataclass(slots=True)
class StudyWatch:
    session_factory: sessionmaker[Session]
    policy: ReconcilePolicy
    stable_seconds: float
    #: Run for every study that becomes stable, and for a stable study when reconciled.
    hooks: Sequence[StudyHook] = field(default=())
    #: Days either side of a study date within which a later order of its patient fits.
    window_days: int = 1

    def run_once(self) -> tuple[list[int], list[int]]:
        """One sweep; returns (studies reconciled, studies marked stable). It looks in a
        read-only session first: on SQLite a write transaction would stall the storage SCP's
        commits every second for nothing."""
        with read_session(self.session_factory) as session:
            reconcile = any_reconcilable(session, self.policy,
                                         window_days=self.window_days)
            due = any_due(session, stable_seconds=self.stable_seconds)
        reconciled: list[int] = []
        stable: list[int] = []
        if reconcile:
            with self.session_factory.begin() as session:
                reconciled = reconcile_queued(session, self.policy,
                                              window_days=self.window_days)
                for study_id in reconciled:
                    if is_stable(session, study_id):  # it will not become stable again
                        for hook in self.hooks:
                            hook(session, study_id)
        if due:
            with self.session_factory.begin() as session:
                stable = mark_stable_studies(session, stable_seconds=self.stable_seconds,
                                             hooks=self.hooks)
        if reconciled or stable:
            logger.info("archive sweep: %d reconciled, %d stable", len(reconciled), len(stable),
                        extra={"calling_ae": None, "accession": None})
        return reconciled, stable
