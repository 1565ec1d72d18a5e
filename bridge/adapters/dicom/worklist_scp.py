"""Modality Worklist SCP: C-FIND on Modality Worklist Information Model - FIND."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.dimse_status import failure
from bridge.adapters.dicom.service import DicomService
from bridge.config import Settings
from bridge.errors import BridgeError
from bridge.mapping.worklist_dataset import ResponseOptions, WorklistItem, build_identifier
from bridge.mapping.worklist_query import WorklistQuery, parse_worklist_query
from bridge.services.worklist import find_worklist
from bridge.store.db import read_session

logger = logging.getLogger("bridge.dicom")

PENDING = 0xFF00
CANCELLED = 0xFE00
#: Responses queued before waiting for the network to take them. pynetdicom's send is a
#: queue put, so without pacing a long result is queued whole in a few milliseconds, held in
#: memory, and a modality's C-CANCEL arrives after everything has been committed to send.
PACING = 16
SEND_WAIT_SECONDS = 2.0

FindResult = tuple[int | Dataset, Dataset | None]


@dataclass(frozen=True, slots=True)
class WorklistDeps:
    settings: Settings
    session_factory: sessionmaker[Session]


def worklist_service(settings: Settings, session_factory: sessionmaker[Session]) -> DicomService:
    deps = WorklistDeps(settings, session_factory)
    return DicomService(
        name="worklist",
        sop_classes=(str(ModalityWorklistInformationFind),),
        handlers=((evt.EVT_C_FIND, handle_find, [deps]),),
    )


def handle_find(event: Event, deps: WorklistDeps) -> Iterator[FindResult]:
    """Yield one pending response per open worklist item; failures become a status.

    The matches are read in one short transaction and only then sent: on SQLite every
    transaction holds the write lock (``BEGIN IMMEDIATE``), which a slow network peer must
    not keep from the HL7 intake.
    """
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    peer = deps.settings.peer(calling_ae)
    extra = {"calling_ae": calling_ae, "accession": None}
    try:
        query = parse_worklist_query(
            event.identifier, undeclared_charset=peer.charset if peer else None
        )
        extra["accession"] = _accession(query)
        with read_session(deps.session_factory) as session:
            items = list(find_worklist(session, query))
    except BridgeError as exc:
        logger.warning("C-FIND refused: %s", exc, extra=extra)
        yield failure(exc), None
        return
    except Exception as exc:
        logger.exception("C-FIND failed", extra=extra)
        yield failure(exc, default_comment="worklist query failed"), None
        return

    options = ResponseOptions(
        character_set=deps.settings.mwl_character_set,
        latin_only=bool(peer and peer.latin_only),
        language=deps.settings.mwl_translit_language,
    )
    logger.info("C-FIND: %d worklist items", len(items), extra=extra)
    if query.ignored_keys:
        logger.debug("C-FIND keys not matched on: %s", ", ".join(query.ignored_keys), extra=extra)
    yield from _responses(event, items, query, options, extra)


def _responses(
    event: Event,
    items: list[WorklistItem],
    query: WorklistQuery,
    options: ResponseOptions,
    extra: dict[str, str | None],
) -> Iterator[FindResult]:
    for sent, item in enumerate(items):
        if sent and sent % PACING == 0:
            _wait_until_sent(event)
        if event.is_cancelled:
            logger.info("C-FIND cancelled after %d of %d items", sent, len(items), extra=extra)
            yield CANCELLED, None
            return
        try:
            identifier = build_identifier(item, query.return_keys, options)
        except Exception as exc:
            logger.exception("C-FIND response failed", extra={**extra, "accession": item.accession})
            yield failure(exc, default_comment="worklist response failed"), None
            return
        logger.debug("C-FIND item %s", item.patient_name, extra={**extra,
                                                                 "accession": item.accession})
        yield PENDING, identifier


def _wait_until_sent(event: Event) -> None:
    """Wait (briefly) until the association has written what was queued so far."""
    outgoing = event.assoc.dul.to_provider_queue
    deadline = time.monotonic() + SEND_WAIT_SECONDS
    while not outgoing.empty() and time.monotonic() < deadline:
        time.sleep(0.0005)


def _accession(query: WorklistQuery) -> str | None:
    if query.accession is None:
        return None
    return query.accession.pattern or ",".join(query.accession.values)
