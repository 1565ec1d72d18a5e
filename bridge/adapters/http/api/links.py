"""``GET /api/links``: what the MIS asks when a doctor opens a patient's imaging — the
patient's studies (or one accession's, or one study), each with a signed viewer URL that opens
that study alone for a few minutes without a log-in (:mod:`bridge.services.links`).

For systems with the integration role (the MIS's token). The answer names studies, not the
patient: the MIS knows whom it asked about. Each call is an audit record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from bridge.adapters.http.api.schemas import ErrorBody
from bridge.adapters.http.deps import ContextDep, IntegrationToken
from bridge.domain import Identifier
from bridge.services.links.secret import console_secret
from bridge.services.links.viewer_links import LinkQuery, study_links
from bridge.services.patients.mpi import resolve_patient
from bridge.store.audit import append_audit
from bridge.store.db import read_session

router = APIRouter(prefix="/api/links", tags=["links"])


class StudyLinkOut(BaseModel):
    StudyInstanceUID: str
    StudyDate: str
    StudyDescription: str
    AccessionNumber: str
    ModalitiesInStudy: list[str]
    NumberOfStudyRelatedSeries: int
    NumberOfStudyRelatedInstances: int
    url: str = Field(description="Opens this study in the viewer; valid until `expires`.")
    expires: datetime


@router.get("", response_model=list[StudyLinkOut], responses={
    401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}})
def links(
    request: Request, context: ContextDep, principal: IntegrationToken,
    patient_id: Annotated[str, Query(alias="PatientID", max_length=64)] = "",
    issuer: Annotated[str, Query(alias="IssuerOfPatientID", max_length=64)] = "",
    accession: Annotated[str, Query(alias="AccessionNumber", max_length=64)] = "",
    study_uid: Annotated[str, Query(alias="StudyInstanceUID", max_length=64)] = "",
) -> list[StudyLinkOut]:
    """A link per study, newest first. Name one of PatientID (with IssuerOfPatientID when
    the hospital has several), AccessionNumber or StudyInstanceUID; no study is an empty
    list."""
    settings = context.settings
    query = LinkQuery(patient_id=patient_id, issuer=issuer, accession=accession,
                      study_uid=study_uid)
    with read_session(context.session_factory) as session:
        found = study_links(session, query, secret=console_secret(settings),
                            base_url=settings.base_url, seconds=settings.link_seconds)
        patient = resolve_patient(session, Identifier(patient_id, issuer)) \
            if patient_id else None
    with context.session_factory.begin() as session:
        append_audit(session, actor=principal.actor, action="links", entity="study",
                     entity_id=",".join(link.study.study_instance_uid for link in found)[:64]
                     or "-", patient_ref=f"Patient/{patient}" if patient else None,
                     details={"studies": len(found),
                              "source": request.client.host if request.client else ""})
    return [StudyLinkOut(
        StudyInstanceUID=link.study.study_instance_uid, StudyDate=link.study.study_date,
        StudyDescription=link.study.description, AccessionNumber=link.study.accession,
        ModalitiesInStudy=list(link.study.modalities),
        NumberOfStudyRelatedSeries=link.study.num_series,
        NumberOfStudyRelatedInstances=link.study.num_instances, url=link.url,
        expires=datetime.fromtimestamp(link.expires, UTC)) for link in found]
