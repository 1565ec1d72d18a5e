"""The reconciliation queue: studies no order matched (or whose objects name two patients,
or whose demographics contradict the MIS patient their PatientID names), with the reason;
an operator assigns one to an order or to an MIS patient, or rejects it (deleted, audited).
``/summary`` counts studies by how they were reconciled (order, patient, operator) and the
queue by kind, per modality.

Listing shows the modality's patient data, so it needs the integration role; deleting needs
admin. Every decision is written to the audit log with the token's name.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.adapters.http.api.schemas import MAX_ROW_ID, ErrorBody, Offset
from bridge.adapters.http.api.studies import delete_archived_study
from bridge.adapters.http.deps import AdminToken, ContextDep, IntegrationToken, SessionDep, actor_of
from bridge.domain import Identifier
from bridge.services.archive.reconciliation import assign_study
from bridge.services.archive.reconciliation_view import (
    WAITING,
    QueuedStudy,
    ReconciliationSummary,
    list_queue,
    summary,
)
from bridge.services.archive.stability import is_stable

log = logging.getLogger("bridge.http")
router = APIRouter(prefix="/api/reconciliation", tags=["reconciliation"])

StudyUid = Annotated[str, Path(max_length=64, pattern=r"^[0-9.]+$")]


class PatientRef(BaseModel):
    """An MIS patient by one of its identifiers (PatientID and its issuer)."""

    model_config = ConfigDict(extra="forbid")

    patient_id: str = Field(min_length=1, max_length=64)
    issuer: str = Field(default="", max_length=64)


class AssignIn(BaseModel):
    """What the study belongs to: an order by id or accession number, or an MIS patient
    (an unscheduled exam: no order)."""

    model_config = ConfigDict(extra="forbid")

    order_id: int | None = Field(default=None, ge=1, le=MAX_ROW_ID)
    accession: str | None = Field(default=None, min_length=1, max_length=16)
    patient: PatientRef | None = None

    @model_validator(mode="after")
    def _one_key(self) -> AssignIn:
        given = [k for k in (self.order_id, self.accession, self.patient) if k is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of order_id, accession and patient")
        return self


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=512)
    #: Delete a reconciled study still under retention (BRIDGE_RETENTION_DAYS); audited.
    override_retention: bool = False


class AssignOut(BaseModel):
    study_instance_uid: str
    order_id: int | None
    accession: str | None
    patient: PatientRef | None = None


_ERRORS: dict[int | str, dict[str, object]] = {404: {"model": ErrorBody},
                                               409: {"model": ErrorBody}}


# The service's dataclass is the response shape: one field list, not two to keep in step.
@router.get("", response_model=list[QueuedStudy])
def queued_studies(
    session: SessionDep,
    _token: IntegrationToken,
    state: Annotated[Literal["queued", "conflict"] | None, Query()] = None,
    kind: Annotated[Literal["unmatched", "patient_mismatch", "conflict"] | None,
                    Query(description="Why the studies wait.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[QueuedStudy]:
    """Studies waiting for an operator, oldest first, each with why it waits (``kind``) and,
    for a ``patient_mismatch``, the MIS values (``mis``) beside the modality's."""
    states = (state,) if state else WAITING
    return list_queue(session, states=states, kind=kind, limit=limit, offset=offset)


@router.get("/summary", response_model=ReconciliationSummary)
def reconciliation_summary(session: SessionDep, _token: IntegrationToken
                           ) -> ReconciliationSummary:
    """Studies by ``reconciled_by`` (``order``, ``patient``: unscheduled exams linked by
    their PatientID, ``operator``) and the queue by kind, per modality. No patient data."""
    return summary(session)


@router.post("/{study_uid}/assign", response_model=AssignOut, responses=_ERRORS)
def assign(study_uid: StudyUid, body: AssignIn, session: SessionDep, context: ContextDep,
           token: IntegrationToken) -> AssignOut:
    """The study belongs to this order: the MIS patient and order values apply from now on
    (C-FIND, retrieve, WADO), and a stable study is forwarded as its rules say."""
    patient = (Identifier(value=body.patient.patient_id, issuer=body.patient.issuer)
               if body.patient is not None else None)
    study_id = assign_study(session, study_uid=study_uid, actor=actor_of(token),
                            order_id=body.order_id, accession=body.accession,
                            patient=patient)
    if is_stable(session, study_id):
        for hook in context.study_hooks:
            hook(session, study_id)
    session.commit()
    log.info("study assigned by operator", extra={"actor": actor_of(token)})
    return AssignOut(study_instance_uid=study_uid, order_id=body.order_id,
                     accession=body.accession, patient=body.patient)


@router.post("/{study_uid}/reject", status_code=status.HTTP_204_NO_CONTENT,
             responses=_ERRORS)
def reject(study_uid: StudyUid, body: RejectIn, session: SessionDep, context: ContextDep,
           token: AdminToken) -> None:
    """Delete the study and its files; the audit log keeps who, when and why."""
    delete_archived_study(session, context, token, study_uid=study_uid, reason=body.reason,
                          override_retention=body.override_retention)
    log.info("study rejected by operator", extra={"actor": actor_of(token)})
