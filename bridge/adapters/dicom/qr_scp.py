"""Query/Retrieve SCP: C-FIND, C-MOVE and C-GET on the Patient Root and Study Root models.

C-FIND reads the matches a page at a time, each page in its own short read transaction, and
sends them paced (see :mod:`bridge.adapters.dicom.worklist_scp`), so a query over the whole
archive neither holds the database nor fills memory, and a C-CANCEL stops it.

C-MOVE and C-GET find the instances first (a list of file paths, small even for a large
study), then read and patch one object at a time as pynetdicom asks for the next
sub-operation, so memory holds one object. Objects go out with the current MIS values
(:func:`bridge.services.egress.objects.egress_dataset`). A C-MOVE destination must be a known peer
(``dicom_peers`` with host, port and role ``scp`` or ``both``); any other answers 0xA801.
C-GET sends over the requestor's own association: the storage SOP classes must be accepted
with the SCU role too (the storage service's ``role_selection``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import build_context, evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.dimse_status import failure
from bridge.adapters.dicom.service import DicomService
from bridge.adapters.dicom.worklist_scp import (
    CANCELLED,
    PENDING,
    log_refusal,
    refusal,
    streamed_responses,
)
from bridge.config.settings import DicomPeer, Settings
from bridge.mapping.dicom.patch import SubjectValues
from bridge.mapping.dicom.qr_query import (
    ArchiveQuery,
    Model,
    parse_find_identifier,
    parse_retrieve_identifier,
)
from bridge.mapping.dicom.qr_results import ArchiveRecord, build_find_response
from bridge.mapping.worklist.dataset import ResponseOptions
from bridge.services.archive.query import StoredInstance, find, instances_for_retrieve
from bridge.services.egress.objects import egress_dataset, load_subjects
from bridge.services.egress.transcode import (
    AcceptedContexts,
    ContextSource,
    can_decompress,
    fit_to_contexts,
)
from bridge.storage.reader import reader_for
from bridge.store.db import read_session

logger = logging.getLogger("bridge.dicom")

FIND_MODELS: Mapping[str, Model] = {
    PatientRootQueryRetrieveInformationModelFind: Model.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: Model.STUDY_ROOT,
}
MOVE_MODELS: Mapping[str, Model] = {
    PatientRootQueryRetrieveInformationModelMove: Model.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelMove: Model.STUDY_ROOT,
}
GET_MODELS: Mapping[str, Model] = {
    PatientRootQueryRetrieveInformationModelGet: Model.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelGet: Model.STUDY_ROOT,
}
#: Records read per database transaction while answering a C-FIND.
PAGE_SIZE = 200
#: PS3.8 9.3.2.2: at most 128 presentation contexts in one association request.
MAX_CONTEXTS = 128
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: Syntaxes pynetdicom can convert an object between while sending it.
_NATIVE = frozenset({*_UNCOMPRESSED, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian})

FindResult = tuple[int | Dataset, Dataset | None]
StoreResult = tuple[int | Dataset, Dataset | None]


@dataclass(frozen=True, slots=True)
class QueryRetrieveDeps:
    settings: Settings
    session_factory: sessionmaker[Session]


def query_retrieve_service(
    settings: Settings, session_factory: sessionmaker[Session]
) -> DicomService:
    deps = QueryRetrieveDeps(settings, session_factory)
    return DicomService(
        name="query-retrieve",
        sop_classes=tuple(str(uid) for uid in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS)),
        handlers=(
            (evt.EVT_C_FIND, handle_find, [deps]),
            (evt.EVT_C_MOVE, handle_move, [deps]),
            (evt.EVT_C_GET, handle_get, [deps]),
        ),
    )


# --- C-FIND ------------------------------------------------------------------------------------


def handle_find(event: Event, deps: QueryRetrieveDeps) -> Iterator[FindResult]:
    """One pending response per matching record; bad identifiers and failures become a
    status (0xA900 for an identifier we cannot use, 0xC000 for our own trouble)."""
    calling_ae = _calling_ae(event)
    peer = deps.settings.peer(calling_ae)
    extra: dict[str, str | None] = {"calling_ae": calling_ae, "accession": None}
    try:
        model = FIND_MODELS[str(event.request.AffectedSOPClassUID)]
        query = parse_find_identifier(
            event.identifier, model, undeclared_charset=peer.charset if peer else None
        )
    except Exception as exc:
        yield refusal("C-FIND", exc, extra, comment="query identifier unreadable"), None
        return
    if query.ignored_keys:
        logger.debug("C-FIND keys not matched on: %s", ", ".join(query.ignored_keys),
                     extra=extra)
    options = ResponseOptions(
        latin_only=bool(peer and peer.latin_only),
        language=deps.settings.mwl_translit_language,
    )
    yield from _find_responses(event, deps, query, options, extra)


def _find_responses(
    event: Event,
    deps: QueryRetrieveDeps,
    query: ArchiveQuery,
    options: ResponseOptions,
    extra: dict[str, str | None],
) -> Iterator[FindResult]:
    def identifier(record: ArchiveRecord) -> Dataset:
        return build_find_response(record, query.return_keys, options,
                                   retrieve_ae_title=deps.settings.ae_title)

    sent = 0
    after: int | None = None
    while True:
        try:
            with read_session(deps.session_factory) as session:
                page = find(session, query, limit=PAGE_SIZE, after=after)
        except Exception as exc:
            logger.exception("C-FIND %s query failed after %d matches", query.level, sent,
                             extra=extra)
            yield failure(exc, default_comment="archive query failed"), None
            return
        now = yield from streamed_responses(event, page, identifier, extra,
                                            comment="query response failed", sent=sent)
        if now is None:  # cancelled, or a response failed
            return
        sent = now
        if len(page) < PAGE_SIZE:
            break
        after = page[-1].pk
    logger.info("C-FIND %s: %d matches", query.level, sent, extra=extra)


# --- C-MOVE and C-GET ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Matches:
    instances: list[StoredInstance]
    subjects: dict[int, SubjectValues | None]


def handle_move(event: Event, deps: QueryRetrieveDeps) -> Iterator[Any]:
    """pynetdicom's order: the destination ``(host, port, {associate kwargs})``, the number
    of sub-operations, then one ``(0xFF00, dataset)`` per object."""
    calling_ae = _calling_ae(event)
    extra: dict[str, str | None] = {"calling_ae": calling_ae, "accession": None}
    destination = (event.move_destination or "").strip()
    peer = _destination(deps.settings, destination)
    if peer is None:
        logger.warning("C-MOVE refused: destination %r is not a known peer with an address",
                       destination, extra=extra)
        yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
        return
    assert peer.host is not None and peer.port is not None
    try:
        matches = _matches(event, deps, MOVE_MODELS)
    except Exception as exc:
        log_refusal("C-MOVE", exc, extra)
        # A status can only come after the destination and a count (pynetdicom's order):
        # the association is opened with Verification only and released with the status.
        yield peer.host, peer.port, {"contexts": [build_context("1.2.840.10008.1.1")]}
        yield 1
        yield failure(exc, default_comment="retrieve failed"), None
        return
    logger.info("C-MOVE of %d objects to %s", len(matches.instances), destination,
                extra=extra)
    # The destination's accepted contexts decide, per object, whether it is decompressed.
    accepted = AcceptedContexts()
    yield peer.host, peer.port, {"contexts": storage_contexts(matches.instances),
                                 "evt_handlers": accepted.handlers}
    yield len(matches.instances)
    yield from _sub_operations(event, deps, matches, "C-MOVE", extra, accepted)


def handle_get(event: Event, deps: QueryRetrieveDeps) -> Iterator[Any]:
    """pynetdicom's order: the number of sub-operations, then ``(0xFF00, dataset)`` each,
    sent back over the requestor's association."""
    calling_ae = _calling_ae(event)
    extra: dict[str, str | None] = {"calling_ae": calling_ae, "accession": None}
    try:
        matches = _matches(event, deps, GET_MODELS)
    except Exception as exc:
        log_refusal("C-GET", exc, extra)
        yield 1
        yield failure(exc, default_comment="retrieve failed"), None
        return
    logger.info("C-GET of %d objects", len(matches.instances), extra=extra)
    yield len(matches.instances)
    yield from _sub_operations(event, deps, matches, "C-GET", extra,
                               lambda: event.assoc.accepted_contexts)


def storage_contexts(instances: list[StoredInstance]) -> list[PresentationContext]:
    """Contexts to propose to a C-MOVE destination: per SOP class one for the uncompressed
    syntaxes (pynetdicom converts between them) and one per compressed syntax stored. A
    compressed object goes as it is where its syntax is accepted, else decompressed over the
    uncompressed context (:func:`bridge.services.egress.transcode.fit_to_contexts`). Beyond 128 the
    rest are left out; their objects then fail as sub-operations, counted and listed."""
    syntaxes: dict[str, dict[str, None]] = {}
    for instance in instances:
        syntaxes.setdefault(instance.sop_class_uid, {})[instance.transfer_syntax_uid] = None
    contexts: list[PresentationContext] = []
    for sop_class, stored in syntaxes.items():
        native = [ts for ts in stored if ts in _NATIVE]
        # Compressed objects go out decompressed to a destination refusing their syntax.
        if native or any(can_decompress(ts) for ts in stored):
            contexts.append(build_context(
                sop_class, [*_UNCOMPRESSED, *(ts for ts in native if ts not in _UNCOMPRESSED)]))
        contexts.extend(build_context(sop_class, ts) for ts in stored if ts not in _NATIVE)
    if len(contexts) > MAX_CONTEXTS:
        logger.warning("C-MOVE needs %d presentation contexts; only %d can be proposed",
                       len(contexts), MAX_CONTEXTS,
                       extra={"calling_ae": None, "accession": None})
    return contexts[:MAX_CONTEXTS]


def _matches(event: Event, deps: QueryRetrieveDeps, models: Mapping[str, Model]) -> _Matches:
    model = models[str(event.request.AffectedSOPClassUID)]
    keys = parse_retrieve_identifier(event.identifier, model)
    with read_session(deps.session_factory) as session:
        instances = instances_for_retrieve(session, keys)
        subjects = load_subjects(session, {i.study_pk for i in instances})
    return _Matches(instances, subjects)


def _sub_operations(
    event: Event,
    deps: QueryRetrieveDeps,
    matches: _Matches,
    what: str,
    extra: dict[str, str | None],
    contexts: ContextSource,
) -> Iterator[StoreResult]:
    """One object at a time: read and patched only when pynetdicom asks for it, from the
    nearest intact copy (:mod:`bridge.storage.reader`), fetched a few objects ahead."""
    fetched = reader_for(deps.settings, deps.session_factory).local_paths(matches.instances)
    for done, (instance, local) in enumerate(fetched):
        if event.is_cancelled:
            fetched.close()
            logger.info("%s cancelled after %d of %d objects", what, done,
                        len(matches.instances), extra=extra)
            yield CANCELLED, None
            return
        yield PENDING, fit_to_contexts(
            _outgoing(deps, instance, local, matches.subjects.get(instance.study_pk), what,
                      extra), contexts())


def _outgoing(
    deps: QueryRetrieveDeps,
    instance: StoredInstance,
    local: Future[Path],
    subject: SubjectValues | None,
    what: str,
    extra: dict[str, str | None],
) -> Dataset:
    try:
        return egress_dataset(deps.settings.archive_root, instance, subject,
                              local=local.result())
    except Exception:
        logger.exception("%s: stored object %s cannot be read", what, instance.path,
                         extra=extra)
        return _unsendable(instance)


def _unsendable(instance: StoredInstance) -> Dataset:
    """A stand-in for an object we cannot read: it has no file meta, so pynetdicom fails its
    C-STORE before sending anything and counts it as a failed sub-operation, listing its
    SOP Instance UID in the final response's Failed SOP Instance UID List."""
    ds = Dataset()
    ds.SOPClassUID = instance.sop_class_uid
    ds.SOPInstanceUID = instance.sop_instance_uid
    return ds


def _destination(settings: Settings, ae_title: str) -> DicomPeer | None:
    peer = settings.peer(ae_title) if ae_title else None
    if peer is None or not peer.host or not peer.port or peer.role == "scu":
        return None
    return peer


def _calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()
