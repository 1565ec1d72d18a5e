"""De-identified exports: the destinations, exports of a study (queued as jobs), their
progress and what was held back.

Who may export where is the destination's ``roles`` (admins always); a clinician whose role a
destination lists may export only the studies they may see. Every request and every export's
outcome is an audit record (:mod:`bridge.services.deid.exports`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from bridge.adapters.http.api.schemas import ErrorBody, RowId
from bridge.adapters.http.deps import ContextDep, CurrentPrincipal, SessionDep
from bridge.errors import NotFound
from bridge.services.access.visibility import study_visible
from bridge.services.deid import exports
from bridge.store.archive_models import Study
from bridge.store.deid_models import DeidExport, DeidObject

router = APIRouter(prefix="/api/deid", tags=["de-identification"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody}, 404: {"model": ErrorBody}, 500: {"model": ErrorBody}}


class DestinationOut(BaseModel):
    name: str
    kind: str
    options: list[str]
    roles: list[str]
    auto_modalities: list[str]


class ExportIn(BaseModel):
    study_instance_uid: str = Field(min_length=1, max_length=64, pattern=r"^[0-9.]+$")
    destination: str = Field(min_length=1, max_length=64)


class HeldOut(BaseModel):
    pseudo_sop_instance_uid: str | None
    sop_class_uid: str | None
    status: str
    reason: str


class ExportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    destination: str
    source: str
    status: str
    options: list[str]
    total: int
    sent: int
    held: int
    failed: int
    job_id: int | None
    error: str
    created_at: datetime
    finished_at: datetime | None
    not_sent: list[HeldOut] = []


@router.get("/destinations", response_model=list[DestinationOut])
def list_destinations(context: ContextDep, principal: CurrentPrincipal) -> list[DestinationOut]:
    """The destinations this caller may export to."""
    roles = (principal.role,)
    return [DestinationOut(name=d.name, kind=d.scheme, options=list(d.options),
                           roles=list(d.roles), auto_modalities=list(d.auto_modalities))
            for d in context.settings.deid_destinations if exports.may_export(d, roles)]


@router.post("/exports", response_model=ExportOut, status_code=status.HTTP_202_ACCEPTED,
             responses=_ERRORS)
def create_export(body: ExportIn, session: SessionDep, context: ContextDep,
                  principal: CurrentPrincipal) -> ExportOut:
    """Queue a study's de-identified export; 202 with the export to follow."""
    condition = select(Study.id).where(Study.study_instance_uid == body.study_instance_uid)
    if principal.is_clinician:
        condition = condition.where(study_visible(principal.user_id))
    study_id = session.execute(condition).scalar_one_or_none()
    if study_id is None:
        raise NotFound("no such study (or not one you may see)", location="study_instance_uid")
    export = exports.start_export(session, context.settings, study_id=study_id,
                                  destination=body.destination, actor=principal.actor,
                                  roles=(principal.role,), source="api")
    session.commit()
    return ExportOut.model_validate(export)


@router.get("/exports", response_model=list[ExportOut])
def list_exports(session: SessionDep, principal: CurrentPrincipal,
                 destination: Annotated[str | None, Query(max_length=64)] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[ExportOut]:
    """The latest exports (a clinician sees their own)."""
    query = select(DeidExport).order_by(DeidExport.id.desc()).limit(limit)
    if destination:
        query = query.where(DeidExport.destination == destination)
    if principal.is_clinician:
        query = query.where(DeidExport.actor == principal.actor)
    return [ExportOut.model_validate(e) for e in session.execute(query).scalars()]


@router.get("/exports/{export_id}", response_model=ExportOut, responses=_ERRORS)
def get_export(export_id: RowId, session: SessionDep,
               principal: CurrentPrincipal) -> ExportOut:
    """One export's progress, with each object held back or refused and why."""
    export = session.get(DeidExport, export_id)
    if export is None or (principal.is_clinician and export.actor != principal.actor):
        raise NotFound(f"no export {export_id}", location="export_id")
    out = ExportOut.model_validate(export)
    out.not_sent = [HeldOut(pseudo_sop_instance_uid=o.pseudo_sop_uid,
                            sop_class_uid=o.sop_class_uid, status=o.status, reason=o.reason)
                    for o in session.execute(select(DeidObject).where(
                        DeidObject.export_id == export_id,
                        DeidObject.status.in_(("held", "failed")))).scalars()]
    return out
