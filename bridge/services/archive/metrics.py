"""Prometheus metrics of reconciliation, read from the index when scraped.

``bridge_archive_studies{reconciled_by, modality}`` counts studies by how they came to their
MIS patient (``order``, ``patient`` for unscheduled exams linked by their PatientID,
``operator``), so an integration engineer sees how many exams arrive unscheduled per
modality; ``bridge_archive_queued_studies{kind, modality}`` counts the queue by why studies
wait. Read from the database (one grouped query per scrape), they agree across restarts and
across instances sharing one database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from bridge.services.archive.reconciliation_view import summary
from bridge.store.db import read_session

log = logging.getLogger("bridge.archive")


class ReconciliationCollector(Collector):
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def describe(self) -> Iterator[Metric]:
        """The families without samples: registering asks no database."""
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        reconciled, queued = _families()
        try:
            with read_session(self.session_factory) as session:
                counts = summary(session)
        except Exception:  # a scrape must not fail because the database is away
            log.warning("reconciliation metrics unavailable", exc_info=True)
            return
        for row in counts.reconciled:
            reconciled.add_metric([row.reconciled_by, row.modality], row.studies)
        for item in counts.queued:
            queued.add_metric([item.kind, item.modality], item.studies)
        yield reconciled
        yield queued


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (GaugeMetricFamily(
                "bridge_archive_studies", "Reconciled studies by how they were reconciled "
                "(order, patient: unscheduled exams, operator) and modality.",
                labels=["reconciled_by", "modality"]),
            GaugeMetricFamily(
                "bridge_archive_queued_studies", "Studies in the reconciliation queue by kind "
                "(unmatched, patient_mismatch, conflict) and modality.",
                labels=["kind", "modality"]))
