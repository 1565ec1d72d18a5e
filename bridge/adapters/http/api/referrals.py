"""Referrals and shares over the API: ``/api/referrals`` (refer, a department's queue, move,
report the result) and ``/api/shares`` (share a study with a clinician, revoke).

The answers carry the referral's FHIR Task (as ``/fhir/Task`` serves it). Clinicians see
and move only their own referrals (see :mod:`bridge.services.referrals.views`); bad input
answers 404 (unknown patient, practitioner, organization or study), 422 (a role that cannot
perform the referral, a study of another patient), 409 (an illegal move: nothing changes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field

from bridge.adapters.http.access import patient_data_reader
from bridge.adapters.http.api.schemas import ErrorBody, RowId
from bridge.adapters.http.deps import ContextDep, SessionDep
from bridge.domain import Identifier
from bridge.mapping.referrals import fhir as rf
from bridge.services.access import shares
from bridge.services.auth.principal import Principal
from bridge.services.referrals import views
from bridge.services.referrals.workflow import NewReferral, add_report, create_referral, move

router = APIRouter(prefix="/api", tags=["referrals"])
Caller = Annotated[Principal, Depends(patient_data_reader("integration"))]
ReferralId = RowId
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422)}


class PatientKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: str = Field(min_length=1, max_length=64)
    issuer: str = Field(default="", max_length=64)


class ReferralIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient: PatientKey
    performer_kind: Literal["diagnostics", "consultant"]
    performer_org: str | None = Field(default=None, max_length=64)
    owner: str | None = Field(default=None, max_length=64,
                              description="The consultant: a username or Practitioner/N")
    requester: str | None = Field(default=None, max_length=64,
                                  description="Systems only: who refers")
    code: str = Field(default="", max_length=64)
    code_system: str = Field(default="", max_length=200)
    code_display: str = Field(default="", max_length=200)
    modality: str | None = Field(default=None, max_length=16)
    reason: str = Field(default="", max_length=2000)
    priority: Literal["routine", "urgent", "asap", "stat"] = "routine"
    studies: list[str] = Field(default_factory=list, max_length=100,
                               description="StudyInstanceUIDs the referral carries")
    documents: list[dict[str, Any]] = Field(default_factory=list, max_length=20)


class MoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str = Field(max_length=16)
    reason: str = Field(default="", max_length=2000)
    business_status: str | None = Field(default=None, max_length=64)


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conclusion: str = Field(max_length=100_000)
    status: str = "final"
    code: str = Field(default="", max_length=64)
    code_display: str = Field(default="", max_length=200)
    study_uid: str | None = Field(default=None, max_length=64)
    presented_form: list[dict[str, Any]] = Field(default_factory=list, max_length=10)


class ReferralOut(BaseModel):
    id: int
    status: str
    order_id: int | None
    task: dict[str, Any]
    #: StudyInstanceUIDs of the studies it carries (``task.input`` names their ImagingStudy).
    studies: list[str] = Field(default_factory=list)


class ShareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=64, description="username or Practitioner/N")
    study_uid: str | None = Field(default=None, max_length=64)
    patient: PatientKey | None = None
    expires_at: datetime | None = None
    source: Literal["share", "consent"] = "share"


class ShareOut(BaseModel):
    id: int
    user_id: int
    study_id: int | None
    patient_id: int | None
    source: str
    expires_at: datetime | None
    revoked_at: datetime | None


def _out(session: SessionDep, context: ContextDep, referral: Any) -> ReferralOut:
    view = views.referral_view(session, referral)
    uids = views.study_uids(session, [view])
    return ReferralOut(id=referral.id, status=referral.status, order_id=referral.order_id,
                       task=rf.task_resource(view, context.settings.fhir_version),
                       studies=[uids[sid] for sid in view.study_ids if sid in uids])


@router.post("/referrals", response_model=ReferralOut, status_code=status.HTTP_201_CREATED,
             responses=_ERRORS)
def refer(body: ReferralIn, principal: Caller, session: SessionDep,
          context: ContextDep) -> ReferralOut:
    new = NewReferral(
        patient=Identifier(body.patient.patient_id, body.patient.issuer),
        performer_kind=body.performer_kind, performer_org=body.performer_org,
        owner=body.owner, requester=body.requester, code=body.code,
        code_system=body.code_system, code_display=body.code_display, modality=body.modality,
        reason=body.reason, priority=body.priority, study_uids=tuple(body.studies),
        documents=tuple(body.documents), source="api")
    referral = create_referral(session, principal, new)
    answer = _out(session, context, referral)
    session.commit()
    return answer


@router.get("/referrals", response_model=list[ReferralOut], responses=_ERRORS)
def referral_queue(principal: Caller, session: SessionDep, context: ContextDep,
                   status_: Annotated[str | None, Query(alias="status")] = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[ReferralOut]:
    """The referrals the caller may see, newest first (``status=requested,received``: a
    department's inbox)."""
    wanted = tuple(s for s in (status_ or "").split(",") if s)
    found = views.referral_queue(session, principal, status=wanted, limit=limit)
    version = context.settings.fhir_version
    page = views.referral_views(session, found)
    uids = views.study_uids(session, page)
    return [ReferralOut(id=r.id, status=r.status, order_id=r.order_id,
                        task=rf.task_resource(view, version),
                        studies=[uids[sid] for sid in view.study_ids if sid in uids])
            for r, view in zip(found, page, strict=True)]


@router.get("/referrals/{referral_id}", response_model=ReferralOut, responses=_ERRORS)
def read_referral(referral_id: ReferralId, principal: Caller, session: SessionDep,
                  context: ContextDep) -> ReferralOut:
    return _out(session, context, views.visible_referral(session, principal, referral_id))


@router.post("/referrals/{referral_id}/status", response_model=ReferralOut, responses=_ERRORS)
def move_referral(referral_id: ReferralId, body: MoveIn, principal: Caller,
                  session: SessionDep, context: ContextDep) -> ReferralOut:
    """Move the Task; accepting a diagnostics referral puts an order on the worklist."""
    referral = move(session, principal, referral_id, body.status, reason=body.reason,
                    business_status=body.business_status, order_policy=context.order_policy)
    answer = _out(session, context, referral)
    session.commit()
    return answer


@router.post("/referrals/{referral_id}/report", response_model=ReferralOut,
             status_code=status.HTTP_201_CREATED, responses=_ERRORS)
def report_result(referral_id: ReferralId, body: ReportIn, principal: Caller,
                  session: SessionDep, context: ContextDep) -> ReferralOut:
    """The result (a DiagnosticReport); a final one completes the Task."""
    add_report(session, principal, referral_id, conclusion=body.conclusion,
               status=body.status, code=body.code, code_display=body.code_display,
               study_uid=body.study_uid, presented_form=body.presented_form,
               order_policy=context.order_policy)
    referral = views.visible_referral(session, principal, referral_id)
    answer = _out(session, context, referral)
    session.commit()
    return answer


@router.post("/shares", response_model=ShareOut, status_code=status.HTTP_201_CREATED,
             responses=_ERRORS)
def share(body: ShareIn, principal: Caller, session: SessionDep) -> ShareOut:
    grant = shares.share(
        session, principal, user=body.user, study_uid=body.study_uid,
        patient=Identifier(body.patient.patient_id, body.patient.issuer) if body.patient
        else None, expires_at=body.expires_at, source=body.source)
    session.commit()
    return ShareOut.model_validate(grant, from_attributes=True)


@router.post("/shares/{share_id}/revoke", response_model=ShareOut, responses=_ERRORS)
def revoke_share(share_id: ReferralId, principal: Caller, session: SessionDep) -> ShareOut:
    grant = shares.revoke(session, principal, share_id)
    session.commit()
    return ShareOut.model_validate(grant, from_attributes=True)
