"""Runs the HL7 intake (ingest service, writer thread, MLLP listener) on a free port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.mllp.server import MLLPServer
from bridge.app.runtime import Bridge
from bridge.config.settings import Settings
from bridge.mapping.hl7.tables import load_hl7_tables
from bridge.services.hl7.ingest import HL7Ingest
from bridge.services.hl7.intake import HL7Intake


@dataclass
class RunningMLLP:
    port: int
    ingest: HL7Ingest


def make_ingest(settings: Settings, sessions: sessionmaker[Session], *,
                bulk: bool = True) -> HL7Ingest:
    return HL7Ingest(sessions, load_hl7_tables(settings.mappings_dir), settings, bulk=bulk)


@contextmanager
def running_mllp(settings: Settings, sessions: sessionmaker[Session],
                 *, max_message_bytes: int | None = None) -> Iterator[RunningMLLP]:
    """The same wiring as ``bridge.app.runtime.Bridge``, on an event loop in a background thread."""
    ingest = make_ingest(settings, sessions)
    writer = HL7Intake(ingest, batch_max=64, linger=settings.hl7_batch_linger_ms / 1000,
                       expected=lambda: server.connections)
    server = MLLPServer(writer, max_message_bytes=max_message_bytes
                        or settings.hl7_max_message_bytes,
                        idle_seconds=settings.mllp_idle_seconds,
                        max_connections=settings.mllp_max_connections)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> int:
        writer.start()
        return await server.start("127.0.0.1", 0)

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield RunningMLLP(port=port, ingest=ingest)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        asyncio.run_coroutine_threadsafe(writer.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextmanager
def running_bridge(settings: Settings) -> Iterator[Bridge]:
    """The whole bridge (``bridge.app.runtime.Bridge``: MLLP, DICOM, HTTP, scheduler, job worker)
    on an event loop in a background thread; its ports are on the returned object."""
    bridge = Bridge(settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(bridge.start(), loop).result(60)
        yield bridge
    finally:
        asyncio.run_coroutine_threadsafe(bridge.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
