"""The bridge's background work, built from the settings: study hooks, job workers and the
periodic jobs. ``bridge.app.runtime.Bridge`` starts and stops it; nothing here listens on a port.

- Study hooks run in the transaction that marks a study stable or reconciles it: forwarding
  (when ``forward_rules`` are set) and FHIR ImagingStudy publishing (when
  ``fhir_target_url`` is set) are queued there, so the change and its consequences are
  durable together.
- Two job workers: one for forwarding and registry imports, one for FHIR publishing, so a
  long C-STORE forward never holds up a publication.
- Periodic jobs on one APScheduler: the archive sweep (reconcile, stability), the merge scan
  for publishing, the registry pull. The sweep wakes the workers when it queued work, so a
  stable study is published without waiting for the workers' next poll.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.syslog import SyslogSender
from bridge.config.settings import Settings
from bridge.jobs.queue import RetryPolicy
from bridge.jobs.scheduler import every, make_scheduler
from bridge.jobs.worker import Handler, JobWorker
from bridge.mapping.dicom.reconciliation import load_reconcile_policy
from bridge.mapping.fhir.imaging_study import FhirNaming
from bridge.mapping.fhir.tables import load_fhir_tables
from bridge.services.archive import forwarding
from bridge.services.archive.admin import LONGTERM_DELETE_QUEUE
from bridge.services.archive.metrics import ReconciliationCollector
from bridge.services.archive.stability import StudyHook
from bridge.services.archive.store import ArchiveStore
from bridge.services.archive.watch import StudyWatch
from bridge.services.audit.forwarder import AuditForwarder
from bridge.services.auth import directory_sync
from bridge.services.compression import compressor as compression
from bridge.services.deid import exports as deid_exports
from bridge.services.deid.returns import IncomingFolder
from bridge.services.fhir import publish as fhir_publish
from bridge.services.fhir.registry_poll import RegistryPoller, schedule_registry_pull
from bridge.services.fhir.registry_sync import IMPORT_QUEUE, RegistryImportHandler
from bridge.services.fhir.resources import apply_service_request
from bridge.services.referrals import registry as registry_referrals
from bridge.services.referrals.hooks import start_for_study
from bridge.services.referrals.notify import notification_handlers
from bridge.services.referrals.registry import referral_aware
from bridge.storage import longterm_delete
from bridge.storage.longterm_delete import LongtermDeleteHandler
from bridge.storage.maintenance import schedule_storage_maintenance
from bridge.storage.migration import LongtermMigration, schedule_longterm_migration
from bridge.storage.ops import StorageOps, build_storage_ops

log = logging.getLogger("bridge")


@dataclass
class Background:
    settings: Settings
    sessions: sessionmaker[Session]
    metrics: CollectorRegistry
    scheduler: BackgroundScheduler = field(default_factory=make_scheduler)
    study_hooks: tuple[StudyHook, ...] = ()
    #: Run before an operator deletes a study (the target's ImagingStudy is withdrawn).
    delete_hooks: tuple[StudyHook, ...] = ()
    workers: list[JobWorker] = field(default_factory=list)
    registry: RegistryPoller | None = None
    publisher: fhir_publish.PublishHandler | None = None
    compressor: compression.Compressor | None = None
    longterm: LongtermMigration | None = None
    storage: StorageOps | None = None
    archive: ArchiveStore | None = None

    @classmethod
    def build(cls, settings: Settings, sessions: sessionmaker[Session],
              metrics: CollectorRegistry, *, archive: ArchiveStore | None = None) -> Background:
        """``archive``: the application's one archive store (watched folders share its
        group commits with C-STORE and STOW-RS)."""
        background = cls(settings, sessions, metrics, archive=archive)
        background._build()
        return background

    def _build(self) -> None:
        s = self.settings
        self.metrics.register(ReconciliationCollector(self.sessions))
        # A referral's Task moves to in-progress when its exam's study arrives.
        hooks: list[StudyHook] = [start_for_study]
        if s.forward_rules:
            hooks.append(self._forward_hook)
        handlers: dict[str, Handler] = {
            forwarding.FORWARD_QUEUE: forwarding.ForwardHandler(s, self.sessions)}
        policies = {forwarding.FORWARD_QUEUE: forwarding.retry_policy(s)}
        # Referral changes to the parties' systems (FHIR Subscriptions), from the outbox.
        notify_handlers, notify_policies = notification_handlers(s, self.sessions)
        handlers.update(notify_handlers)
        policies.update(notify_policies)
        self._wire_deid(hooks, handlers, policies)
        # A deleted study's long-term copies (queued in the deleting transaction).
        handlers[LONGTERM_DELETE_QUEUE] = LongtermDeleteHandler(s, self.sessions)
        policies[LONGTERM_DELETE_QUEUE] = longterm_delete.RETRY_POLICY
        self.compressor = compression.wire_ingest(s, self.sessions, self.metrics, hooks,
                                                   handlers)
        # Registry ServiceRequests are orders and referrals: taken, followed, reported.
        self.registry = schedule_registry_pull(
            self.scheduler, s, self.sessions, metrics_registry=self.metrics,
            apply=referral_aware(apply_service_request, s))
        if self.registry is not None:
            handlers[IMPORT_QUEUE] = RegistryImportHandler(self.registry.sync)
            handlers[registry_referrals.REGISTRY_QUEUE] = registry_referrals.RegistryTell(
                s, self.sessions)
            policies[registry_referrals.REGISTRY_QUEUE] = registry_referrals.RETRY_POLICY
            every(self.scheduler, s.fhir_registry_directory_seconds,
                  partial(directory_sync.scheduled_pull, s.fhir_registry_url,
                          s.fhir_timeout_seconds, self.sessions, s.mappings_dir),
                  "registry-directory")
        self.workers.append(JobWorker(self.sessions, handlers, policies=policies,
                                      poll_seconds=s.worker_poll_seconds, name="jobs"))
        if s.fhir_target_url:
            hooks.append(fhir_publish.enqueue_publication)
            self.delete_hooks = (fhir_publish.enqueue_publication,)
            tables = load_fhir_tables(s.mappings_dir)
            naming = FhirNaming(issuer_systems=tables.issuer_to_system,
                                accession_system=tables.accession_system,
                                coding_systems=tables.scheme_to_system)
            self.publisher = fhir_publish.PublishHandler(s, self.sessions, naming=naming)
            self.workers.append(JobWorker(
                self.sessions, {fhir_publish.FHIR_PUBLISH_QUEUE: self.publisher},
                policies={fhir_publish.FHIR_PUBLISH_QUEUE: fhir_publish.retry_policy(s)},
                poll_seconds=s.worker_poll_seconds, name="fhir"))
            every(self.scheduler, s.worker_poll_seconds,
                  fhir_publish.MergeWatch(self.sessions).run_once, "fhir-merges")
        self.study_hooks = tuple(hooks)
        if s.audit_syslog_url:
            sender = SyslogSender(s.audit_syslog_url, ca_file=str(s.audit_syslog_ca)
                                  if s.audit_syslog_ca else None)
            forwarder = AuditForwarder(self.sessions, sender, fhir_version=s.fhir_version)
            every(self.scheduler, s.audit_syslog_seconds, forwarder.run_once, "audit-syslog")
        watch = StudyWatch(self.sessions,
                           load_reconcile_policy(s.mappings_dir, s.reconcile_unordered),
                           s.study_stable_seconds, self.study_hooks,
                           window_days=s.reconcile_date_window_days)

        def sweep() -> None:
            reconciled, stable = watch.run_once()
            if reconciled or stable:
                self.wake()

        every(self.scheduler, s.worker_poll_seconds, sweep, "study-watch")
        from bridge.services.legacy_import import schedule_legacy_import

        # Watched folders and scheduled pulls of legacy modalities (none configured: no job).
        schedule_legacy_import(self.scheduler, s, self.sessions, self.archive)
        self.longterm = schedule_longterm_migration(self.scheduler, s, self.sessions, self.metrics)
        if self.longterm is not None and self.compressor is not None:
            # "At migration" compression rules run just before a study's copies are made.
            self.longterm.before_copy.append(self.compressor.compress_study_for_migration)
        # Operators' storage actions share the scheduled migration (one run at a time);
        # cleanup runs on its crontab, usage is sampled for the history.
        self.storage = build_storage_ops(s, self.sessions, migration=self.longterm)
        schedule_storage_maintenance(self.scheduler, self.storage)

    def _wire_deid(self, hooks: list[StudyHook], handlers: dict[str, Handler],
                   policies: dict[str, RetryPolicy]) -> None:
        """De-identified exports (API, CLI, the destinations' auto rules) and the incoming
        folder of objects coming back (restored into the archive)."""
        s = self.settings
        handlers[deid_exports.DEID_QUEUE] = deid_exports.ExportHandler(s, self.sessions)
        policies[deid_exports.DEID_QUEUE] = deid_exports.retry_policy(s)
        if any(d.auto_modalities for d in s.deid_destinations):
            hooks.append(deid_exports.auto_export_hook(s))
        if s.deid_incoming_dir is not None and self.archive is not None:
            incoming = IncomingFolder(s, self.sessions, self.archive)
            every(self.scheduler, max(s.worker_poll_seconds, 5.0), incoming.run_once,
                  "deid-incoming")

    def _forward_hook(self, session: Session, study_id: int) -> None:
        forwarding.enqueue_forwards(session, study_id=study_id, settings=self.settings)

    def notify_trigger(self) -> bool:
        """``POST /fhir/$notify``: pull from the registry now (False without a registry)."""
        return self.registry.trigger_now() if self.registry is not None else False

    def wake(self) -> None:
        for worker in self.workers:
            worker.wake()

    def start(self) -> None:
        self.scheduler.start()
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        """Stop the periodic jobs first (they queue work), then the workers."""
        if self.scheduler.running:
            self.scheduler.shutdown()
        for worker in self.workers:
            worker.stop()
        if self.registry is not None:  # after the workers: they run registry imports
            self.registry.close()
        if self.publisher is not None:
            self.publisher.close()
