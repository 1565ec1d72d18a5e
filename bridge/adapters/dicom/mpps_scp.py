"""Modality Performed Procedure Step SCP: N-CREATE and N-SET."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.dimse_status import failure
from bridge.adapters.dicom.service import DicomService
from bridge.config.settings import Settings
from bridge.errors import BridgeError
from bridge.services.referrals.hooks import start_for_mpps
from bridge.services.worklist.mpps import create_mpps, set_mpps

logger = logging.getLogger("bridge.dicom")

SUCCESS = 0x0000

NResult = tuple[int | Dataset, Dataset | None]


@dataclass(frozen=True, slots=True)
class MppsDeps:
    settings: Settings
    session_factory: sessionmaker[Session]


def mpps_service(settings: Settings, session_factory: sessionmaker[Session]) -> DicomService:
    deps = MppsDeps(settings, session_factory)
    return DicomService(
        name="mpps",
        sop_classes=(str(ModalityPerformedProcedureStep),),
        handlers=(
            (evt.EVT_N_CREATE, handle_n_create, [deps]),
            (evt.EVT_N_SET, handle_n_set, [deps]),
        ),
    )


def handle_n_create(event: Event, deps: MppsDeps) -> NResult:
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    attributes = event.attribute_list
    uid = getattr(event.request, "AffectedSOPInstanceUID", None)
    created_uid = None
    if not uid:  # the SCU may leave it to us (PS3.4 F.7.2.1): we must return it
        uid = created_uid = generate_uid(prefix=deps.settings.uid_root + ".")
    extra = {"calling_ae": calling_ae, "accession": _accession(attributes)}
    try:
        with deps.session_factory.begin() as session:
            start_for_mpps(session, create_mpps(session, str(uid), attributes, calling_ae))
    except Exception as exc:
        _log_failure("N-CREATE", exc, extra)
        return failure(exc), None
    logger.info("MPPS %s created (IN PROGRESS)", uid, extra=extra)
    reply = Dataset()
    reply.update(attributes)
    if created_uid is not None:
        reply.AffectedSOPInstanceUID = created_uid
    return SUCCESS, reply


def handle_n_set(event: Event, deps: MppsDeps) -> NResult:
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    modification = event.modification_list
    uid = str(getattr(event.request, "RequestedSOPInstanceUID", ""))
    extra = {"calling_ae": calling_ae, "accession": _accession(modification)}
    try:
        with deps.session_factory.begin() as session:
            mpps = set_mpps(session, uid, modification)
            status = mpps.status
    except Exception as exc:
        _log_failure("N-SET", exc, extra)
        return failure(exc), None
    logger.info("MPPS %s set (%s)", uid, status, extra=extra)
    return SUCCESS, modification


def _log_failure(operation: str, exc: Exception, extra: dict[str, str | None]) -> None:
    if isinstance(exc, BridgeError):
        logger.warning("MPPS %s refused: %s", operation, exc, extra=extra)
    else:
        logger.exception("MPPS %s failed", operation, extra=extra)


def _accession(ds: Dataset) -> str | None:
    for item in ds.get("ScheduledStepAttributesSequence", None) or []:
        accession = item.get("AccessionNumber")
        if accession:
            return str(accession)
    return None
