"""Scheduler wiring of the registry sync: a periodic pull, and "pull now" for ``$notify``.

:func:`schedule_registry_pull` builds the FHIR client and the sync from the settings and
registers the pull on the scheduler (``every BRIDGE_FHIR_REGISTRY_POLL_SECONDS``).
:meth:`RegistryPoller.trigger_now` may be called from any thread (HTTP requests): it makes
the scheduler run the pull at once, or, when a pull is already running, makes that pull run
once more when it ends (a change announced mid-pull may have been missed by it). Many
triggers while a pull runs still cost one more pull, not one each.

A failed pull (registry down: :class:`~bridge.errors.Transient`; registry refuses the
search) is logged as one warning line without patient data and tried again at the next
period; the scheduler keeps running and the watermark stays where it was.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.fhir import FhirClient
from bridge.config.settings import Settings
from bridge.errors import BridgeError, Transient
from bridge.jobs.scheduler import every
from bridge.services.fhir.registry_sync import Apply, PullResult, RegistrySync
from bridge.services.fhir.resources import apply_service_request

log = logging.getLogger("bridge.jobs")

JOB_NAME: Final = "fhir-registry-pull"


class RegistryPoller:
    """Runs :meth:`RegistrySync.pull` for the scheduler and on request."""

    def __init__(self, sync: RegistrySync, scheduler: BackgroundScheduler, *,
                 on_close: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self.scheduler = scheduler
        self._on_close = on_close
        self._state = threading.Lock()
        self._busy = False
        self._again = False
        #: The last pull's outcome (None: not run yet, or it failed).
        self.last_result: PullResult | None = None
        #: Why the last pull failed (None after a success).
        self.last_error: str | None = None

    def register(self, seconds: float, *, first_run_now: bool = True) -> None:
        """Pull every ``seconds``; the first pull right when the scheduler starts."""
        every(self.scheduler, seconds, self.run, JOB_NAME)
        if first_run_now:
            self.scheduler.modify_job(JOB_NAME, next_run_time=datetime.now(UTC))

    def close(self) -> None:
        """Release the registry client (after the scheduler was shut down)."""
        if self._on_close is not None:
            self._on_close()

    def trigger_now(self) -> bool:
        """Ask for a pull as soon as possible; False when the scheduler cannot run it."""
        with self._state:
            self._again = True
            if self._busy:
                return True  # the running pull goes once more when it ends
        if not self.scheduler.running:
            return False
        try:
            self.scheduler.modify_job(JOB_NAME, next_run_time=datetime.now(UTC))
        except JobLookupError:
            return False
        return True

    def run(self) -> None:
        """Pull, and pull again while triggers came in meanwhile. Called by the scheduler
        (one at a time); a direct call while a pull runs only asks that pull to repeat."""
        with self._state:
            if self._busy:
                self._again = True
                return
            self._busy = True
        try:
            while True:
                with self._state:
                    self._again = False
                self._pull_once()
                with self._state:
                    if not self._again:
                        return
        finally:
            with self._state:
                self._busy = False

    def _pull_once(self) -> None:
        try:
            self.last_result = self.sync.pull()
            self.last_error = None
        except Transient as exc:
            self.last_error = exc.message
            log.warning("registry pull failed, retried at the next period: %s", exc.message)
        except BridgeError as exc:
            self.last_error = exc.message
            log.error("registry pull refused (%s), retried at the next period: %s",
                      type(exc).__name__, exc.message)


def schedule_registry_pull(
    scheduler: BackgroundScheduler, settings: Settings, session_factory: sessionmaker[Session],
    *, metrics_registry: CollectorRegistry | None = None, apply: Apply | None = None,
) -> RegistryPoller | None:
    """Register the periodic pull when ``BRIDGE_FHIR_REGISTRY_URL`` is set (else None).
    The poller's ``trigger_now`` serves ``$notify``; ``close()`` it after the scheduler."""
    if not settings.fhir_registry_url:
        return None
    client = FhirClient(settings.fhir_registry_url, timeout=settings.fhir_timeout_seconds)
    sync = RegistrySync(settings, session_factory, client, metrics_registry=metrics_registry,
                        apply=apply or apply_service_request)
    poller = RegistryPoller(sync, scheduler, on_close=client.close)
    poller.register(settings.fhir_registry_poll_seconds)
    return poller
