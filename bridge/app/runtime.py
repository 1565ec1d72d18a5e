"""The composition root: settings → engine → services → listeners; ordered shutdown.

``Bridge`` runs every listener in one asyncio loop (MLLP, HTTP) plus pynetdicom's threads,
so tests can start the whole bridge in-process on free ports.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import threading
import time
from contextlib import suppress
from functools import partial
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from bridge.adapters.dicom.grid_scp import grid_service
from bridge.adapters.dicom.qr_scp import query_retrieve_service
from bridge.adapters.dicom.server import DEFAULT_SERVICES, DicomServer, start_dicom_server
from bridge.adapters.dicom.storage_scp import storage_service
from bridge.adapters.http.app import create_app
from bridge.adapters.mllp.server import MLLPServer
from bridge.app.background import Background
from bridge.config.settings import Settings
from bridge.config.tls import server_context
from bridge.jobs.scheduler import every
from bridge.mapping.hl7.tables import load_hl7_tables
from bridge.services.archive.orphans import HEARTBEAT_SECONDS, RunMarker, sweep_orphans
from bridge.services.archive.orphans import MARGIN_SECONDS as ORPHAN_MARGIN_SECONDS
from bridge.services.archive.store import ArchiveStore
from bridge.services.hl7.ingest import HL7Ingest
from bridge.services.hl7.intake import HL7Intake
from bridge.store.db import checkpoint_wal, is_sqlite, make_engine, make_session_factory
from bridge.store.migrate import upgrade

log = logging.getLogger("bridge")


def _http_tls(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS options (it builds its own context from files) when ``http_tls``."""
    if not settings.http_tls:
        return {}
    verify = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
              "required": ssl.CERT_REQUIRED}[settings.tls_client_certificates]
    options: dict[str, Any] = {"ssl_certfile": str(settings.tls_certificate),
                               "ssl_keyfile": str(settings.tls_private_key),
                               "ssl_cert_reqs": verify}
    if verify != ssl.CERT_NONE:
        options["ssl_ca_certs"] = str(settings.tls_client_ca)
    return options


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url, background_checkpoint=True)
        self.sessions = make_session_factory(self.engine)
        self.tables = load_hl7_tables(settings.mappings_dir)
        self.ingest = HL7Ingest(self.sessions, self.tables, settings)
        self.writer = HL7Intake(self.ingest, batch_max=settings.hl7_batch_max,
                                linger=settings.hl7_batch_linger_ms / 1000,
                                expected=lambda: self.mllp.connections)
        self.mllp = MLLPServer(self.writer, max_message_bytes=settings.hl7_max_message_bytes,
                               idle_seconds=settings.mllp_idle_seconds,
                               max_connections=settings.mllp_max_connections)
        self.metrics = CollectorRegistry()
        #: One store for C-STORE and STOW-RS: their objects share group commits.
        self.archive = ArchiveStore(settings, self.sessions)
        self.background = Background.build(settings, self.sessions, self.metrics,
                                           archive=self.archive)
        #: Tells a restart after a crash (orphan files to sweep) from one after a clean stop.
        self.marker = RunMarker.in_folder(settings.data_dir)
        every(self.background.scheduler, HEARTBEAT_SECONDS, self.marker.touch, "run-marker")
        if is_sqlite(self.engine):  # its WAL checkpoints, off the commits that ACK
            every(self.background.scheduler, 1.0, partial(checkpoint_wal, self.engine),
                  "sqlite-checkpoint")
        self.dicom: DicomServer | None = None
        self.http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.mllp_port = self.dicom_port = self.http_port = 0
        self._sweeper: threading.Thread | None = None

    async def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(upgrade, self.engine)
        await asyncio.to_thread(self.archive.sweep_incoming)
        self._sweep_after_crash(self.marker.begin())
        self.writer.start()
        tls = server_context(s) if s.mllp_tls else None
        self.mllp_port = await self.mllp.start(s.bind, s.mllp_port, tls=tls,
                                               handshake_seconds=s.tls_handshake_seconds)
        extra = [storage_service(s, self.sessions, store=self.archive)]
        if s.grid_ae_title:
            extra.append(grid_service(s, self.sessions))
        self.dicom = start_dicom_server(
            s, self.sessions,
            services=(*DEFAULT_SERVICES, query_retrieve_service),
            extra_services=tuple(extra))
        self.dicom_port = self.dicom.port
        self.background.start()
        app = create_app(s, self.sessions, reprocess=self.ingest.reprocess,
                         archive_store=self.archive,
                         metrics_registry=self.metrics,
                         study_hooks=self.background.study_hooks,
                         delete_hooks=self.background.delete_hooks,
                         notify_trigger=self.background.notify_trigger,
                         storage=self.background.storage)
        config = uvicorn.Config(app, host=s.bind, port=s.http_port, log_config=None,
                                access_log=False, lifespan="off", **_http_tls(s))
        self.http = uvicorn.Server(config)
        self._http_task = asyncio.get_running_loop().create_task(self.http.serve())
        while not self.http.started:
            if self._http_task.done():
                self._http_task.result()  # re-raise why it could not start
            await asyncio.sleep(0.01)
        self.http_port = self.http.servers[0].sockets[0].getsockname()[1]
        # What start-up built (modules, tables, the app, pydicom's dictionaries) lives as
        # long as the process: out of the collector's sight, so that a full collection walks
        # only what requests made (without it, one took ~150 ms every few seconds of QIDO).
        gc.freeze()
        log.info("bridge started", extra={"mllp_port": self.mllp_port,
                                          "dicom_port": self.dicom_port,
                                          "http_port": self.http_port, "ae_title": s.ae_title})

    async def stop(self) -> None:
        """Stop taking new work first, finish what was accepted, then close the database."""
        await self.mllp.stop()
        if self.dicom is not None:
            await asyncio.to_thread(self.dicom.shutdown)
        await asyncio.to_thread(self.background.stop)
        if self.http is not None and self._http_task is not None:
            self.http.should_exit = True
            with suppress(Exception):
                await self._http_task
        await self.writer.stop()
        self.ingest.close()  # the HL7 writer's held connection
        if self._sweeper is not None:
            await asyncio.to_thread(self._sweeper.join)
        self.engine.dispose()
        self.marker.end()
        log.info("bridge stopped")

    def _sweep_after_crash(self, last_alive: float | None) -> None:
        """After an unclean stop, the files placed but never indexed, in the background
        (the walk of a large archive takes a while; nothing waits for it)."""
        if last_alive is None:
            return
        window = (last_alive - ORPHAN_MARGIN_SECONDS, time.time())
        self._sweeper = threading.Thread(
            target=sweep_orphans, name="orphan-sweep", daemon=True,
            args=(self.settings.archive_root, self.sessions),
            kwargs={"written_after": window[0], "written_before": window[1]})
        self._sweeper.start()


async def serve(settings: Settings) -> None:
    bridge = Bridge(settings)
    await bridge.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await bridge.stop()
