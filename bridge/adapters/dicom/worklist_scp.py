"""Modality Worklist SCP: C-FIND on Modality Worklist Information Model - FIND."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.dimse_status import failure
from bridge.adapters.dicom.find_transport import StreamClosed, open_stream
from bridge.adapters.dicom.service import DicomService
from bridge.config.settings import Settings
from bridge.errors import BridgeError
from bridge.mapping.worklist.dataset import ResponseOptions, WorklistItem, build_identifier
from bridge.mapping.worklist.encoder import response_encoder
from bridge.mapping.worklist.query import WorklistQuery, parse_worklist_query
from bridge.services.worklist.query import find_worklist
from bridge.store.db import read_session

logger = logging.getLogger("bridge.dicom")

PENDING = 0xFF00
CANCELLED = 0xFE00
#: Responses queued before waiting for the network to take them. pynetdicom's send is a
#: queue put, so without pacing a long result is queued whole in a few milliseconds, held in
#: memory, and a modality's C-CANCEL arrives after everything has been committed to send.
PACING = 16
SEND_WAIT_SECONDS = 2.0
#: Pending responses in the first and (at most) in any later write of
#: :func:`streamed_responses`; batches double in between.
FIRST_BATCH = 1
MAX_BATCH = 32

FindResult = tuple[int | Dataset, Dataset | None]
Match = TypeVar("Match")


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
    except Exception as exc:
        yield refusal("C-FIND", exc, extra, comment="worklist query failed"), None
        return

    options = ResponseOptions(
        character_set=deps.settings.mwl_character_set,
        latin_only=bool(peer and peer.latin_only),
        language=deps.settings.mwl_translit_language,
    )
    logger.info("C-FIND: %d worklist items", len(items), extra=extra)
    if query.ignored_keys:
        logger.debug("C-FIND keys not matched on: %s", ", ".join(query.ignored_keys), extra=extra)

    if logger.isEnabledFor(logging.DEBUG):  # PHI: debug only
        for item in items:
            logger.debug("C-FIND item %s", item.patient_name,
                         extra={**extra, "accession": item.accession})

    def identifier(item: WorklistItem) -> Dataset:
        return build_identifier(item, query.return_keys, options)

    syntax = event.context.transfer_syntax
    encoder = None if syntax is None else response_encoder(
        query.return_keys, options, implicit_vr=syntax.is_implicit_VR,
        little_endian=syntax.is_little_endian, deflated=syntax.is_deflated)

    yield from streamed_responses(event, items, identifier, extra,
                                  comment="worklist response failed",
                                  encoded=None if encoder is None else encoder.encode)


def streamed_responses(
    event: Event,
    matches: Iterable[Match],
    identifier: Callable[[Match], Dataset],
    extra: dict[str, str | None],
    *,
    comment: str,
    sent: int = 0,
    encoded: Callable[[Match], bytes | None] | None = None,
) -> Generator[FindResult, None, int | None]:
    """:func:`paced_responses`' contract, with the pending responses written in batches
    by :mod:`bridge.adapters.dicom.find_transport` instead of one by one through
    pynetdicom; only a Cancel or failure status is yielded (pynetdicom sends the final
    Success when the handler returns). Falls back to :func:`paced_responses` when that
    path is unavailable. ``encoded`` may give a match's identifier already encoded in the
    context's transfer syntax (None: ``identifier`` builds it and pydicom encodes it).

    Batches grow 1, 2, 4 ... :data:`MAX_BATCH` responses: the first match leaves at once
    (the peer starts decoding while the rest is built), later ones in few writes; a
    C-CANCEL is looked at before every response.
    """
    stream = open_stream(event)
    if stream is None:
        return (yield from paced_responses(event, matches, identifier, extra,
                                           comment=comment, sent=sent))
    batch = FIRST_BATCH
    try:
        for match in matches:
            if event.is_cancelled:
                stream.discard()
                logger.info("C-FIND cancelled after %d responses", sent + stream.sent,
                            extra=extra)
                yield CANCELLED, None
                return None
            try:
                data = None if encoded is None else encoded(match)
                stream.add(identifier(match) if data is None else data)
            except Exception as exc:
                logger.exception("C-FIND response failed", extra=extra)
                stream.flush()
                yield failure(exc, default_comment=comment), None
                return None
            if stream.buffered >= batch:
                stream.flush()
                batch = min(batch * 2, MAX_BATCH)
        stream.flush()
    except StreamClosed as exc:
        logger.warning("C-FIND responses not delivered, connection closed: %s", exc,
                       extra=extra)
        return None
    return sent + stream.sent


def paced_responses(
    event: Event,
    matches: Iterable[Match],
    identifier: Callable[[Match], Dataset],
    extra: dict[str, str | None],
    *,
    comment: str,
    sent: int = 0,
) -> Generator[FindResult, None, int | None]:
    """One pending C-FIND response per match, its identifier built only when it is due.

    Every :data:`PACING` responses it waits until the network has taken those queued, so
    a C-CANCEL is seen between them; a cancel ends the responses with Cancel, a response
    that cannot be built with a failure (``comment``). ``sent`` counts responses already
    sent (a query answered page by page); returns the count after these, or None when the
    responses were ended (the caller must send nothing more).
    """
    for match in matches:
        if sent and sent % PACING == 0:
            _wait_until_sent(event)
        if event.is_cancelled:
            logger.info("C-FIND cancelled after %d responses", sent, extra=extra)
            yield CANCELLED, None
            return None
        try:
            built = identifier(match)
        except Exception as exc:
            logger.exception("C-FIND response failed", extra=extra)
            yield failure(exc, default_comment=comment), None
            return None
        sent += 1
        yield PENDING, built
    return sent


def refusal(what: str, exc: Exception, extra: dict[str, str | None], *, comment: str
            ) -> Dataset:
    """Log why a request cannot be answered and give its failure status. A
    :class:`BridgeError` is the peer's doing (a warning; its message is the Error Comment);
    anything else is ours (logged with its traceback; ``comment`` is the Error Comment)."""
    log_refusal(what, exc, extra)
    if isinstance(exc, BridgeError):
        return failure(exc)
    return failure(exc, default_comment=comment)


def log_refusal(what: str, exc: Exception, extra: dict[str, str | None]) -> None:
    if isinstance(exc, BridgeError):
        logger.warning("%s refused: %s", what, exc, extra=extra)
    else:
        logger.exception("%s failed", what, extra=extra)


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
