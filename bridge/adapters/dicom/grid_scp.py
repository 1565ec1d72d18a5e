"""The grid gateway's DICOM face: the AE title ``BRIDGE_GRID_AE_TITLE`` on the bridge's port
(the server routes associations called to it here, :mod:`bridge.adapters.dicom.server`).
C-STORE, C-FIND, C-MOVE and C-GET go to :class:`~bridge.services.deid.grid.GridGateway`;
every failure is a DIMSE status with an Error Comment that names no patient."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
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
from bridge.adapters.dicom.storage_scp import STORAGE_SOP_CLASSES
from bridge.clients.dicom_scu import received_bytes
from bridge.config.settings import Settings
from bridge.errors import BridgeError
from bridge.services.deid.grid import GridGateway, GridObject

logger = logging.getLogger("bridge.dicom")

_FIND = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
_MOVE = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
_GET = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
PENDING = 0xFF00
SUCCESS = 0x0000


def grid_service(settings: Settings, sessions: sessionmaker[Session]) -> DicomService:
    gateway = GridGateway(settings, sessions)
    return DicomService(
        name="grid",
        called_ae=settings.grid_ae_title,
        sop_classes=(*STORAGE_SOP_CLASSES, *(str(u) for u in (*_FIND, *_MOVE, *_GET))),
        handlers=(
            (evt.EVT_C_STORE, handle_store, [gateway]),
            (evt.EVT_C_FIND, handle_find, [gateway]),
            (evt.EVT_C_MOVE, handle_move, [gateway, settings]),
            (evt.EVT_C_GET, handle_get, [gateway]),
            (evt.EVT_RELEASED, handle_end, [gateway]),
            (evt.EVT_ABORTED, handle_end, [gateway]),
        ),
        role_selection=True,
    )


def _calling(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def handle_store(event: Event, gateway: GridGateway) -> int | Dataset:
    extra = {"calling_ae": _calling(event), "accession": None}
    try:
        gateway.store(received_bytes(event), association=event.assoc, calling_ae=_calling(event))
    except BridgeError as exc:
        logger.warning("grid C-STORE refused: %s", exc.message, extra=extra)
        return failure(exc)
    except Exception as exc:
        logger.error("grid C-STORE failed (%s)", type(exc).__name__, extra=extra)
        logger.debug("grid C-STORE failure", exc_info=exc, extra=extra)
        return failure(exc, default_comment="internal error")
    return SUCCESS


def handle_end(event: Event, gateway: GridGateway) -> None:
    try:
        gateway.released(event.assoc)
    except Exception as exc:  # a notification handler must not raise into pynetdicom
        logger.error("grid export not finished (%s)", type(exc).__name__,
                     extra={"calling_ae": _calling(event), "accession": None})


FindAnswer = tuple[int | Dataset, Dataset | None]


def handle_find(event: Event, gateway: GridGateway) -> Iterator[FindAnswer]:
    try:
        answers = gateway.find(event.identifier, calling_ae=_calling(event))
    except Exception as exc:
        logger.warning("grid C-FIND failed (%s)", type(exc).__name__,
                       extra={"calling_ae": _calling(event), "accession": None})
        yield failure(exc, default_comment="grid query failed"), None
        return
    for answer in answers:
        if event.is_cancelled:
            yield 0xFE00, None
            return
        yield PENDING, answer


def _objects(event: Event, gateway: GridGateway) -> list[GridObject]:
    return gateway.retrieve_list(event.identifier)


def _datasets(event: Event, gateway: GridGateway, objects: list[GridObject], what: str
              ) -> Iterator[tuple[int, Dataset | None]]:
    for obj, data in zip(objects, gateway.fetch(objects, calling_ae=_calling(event), what=what),
                         strict=True):
        if event.is_cancelled:
            yield 0xFE00, None
            return
        if data is None:
            stand_in = Dataset()  # no file meta: pynetdicom counts a failed sub-operation
            stand_in.SOPClassUID = obj.sop_class_uid
            stand_in.SOPInstanceUID = obj.sop_uid
            yield PENDING, stand_in
            continue
        yield PENDING, dcmread(BytesIO(data))


def handle_move(event: Event, gateway: GridGateway, settings: Settings) -> Iterator[Any]:
    destination = (event.move_destination or "").strip()
    peer = settings.peer(destination) if destination else None
    if peer is None or not peer.host or not peer.port or peer.role == "scu":
        yield None, None  # 0xA801 Move Destination Unknown
        return
    try:
        objects = _objects(event, gateway)
    except Exception as exc:
        yield peer.host, peer.port, {"contexts": [build_context("1.2.840.10008.1.1")]}
        yield 1
        yield failure(exc, default_comment="grid retrieve failed"), None
        return
    classes = sorted({o.sop_class_uid for o in objects})[:128]
    # Explicit VR first: the restored objects go as they were stored (explicit VR little
    # endian, as nearly every modality sends), not converted to the implicit default.
    syntaxes: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    yield peer.host, peer.port, {"contexts": [build_context(c, syntaxes) for c in classes]
                                 or [build_context("1.2.840.10008.1.1")]}
    yield len(objects)
    yield from _datasets(event, gateway, objects, "C-MOVE")


def handle_get(event: Event, gateway: GridGateway) -> Iterator[Any]:
    try:
        objects = _objects(event, gateway)
    except Exception as exc:
        yield 1
        yield failure(exc, default_comment="grid retrieve failed"), None
        return
    yield len(objects)
    yield from _datasets(event, gateway, objects, "C-GET")
