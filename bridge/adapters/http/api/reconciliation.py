"""The reconciliation queue: studies no order matched (or whose objects name two patients),
with the reason; an operator assigns one to an order, or rejects it (deleted, audited).

Listing shows the modality's patient data, so it needs the integration role; deleting needs
admin. Every decision is written to the audit log with the token's name.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.adapters.http.api.schemas import ErrorBody
from bridge.adapters.http.deps import AdminToken, ContextDep, IntegrationToken, SessionDep, actor_of
from bridge.services.archive.admin import WAITING, QueuedStudy, delete_study, list_queue
from bridge.services.archive.reconciliation import assign_study
from bridge.services.archive.stability import is_stable
from bridge.storage.durable import remove_file
from bridge.storage.retention import retention_policy

log = logging.getLogger("bridge.http")
router = APIRouter(prefix="/api/reconciliation", tags=["reconciliation"])

StudyUid = Annotated[str, Path(max_length=64, pattern=r"^[0-9.]+$")]


class AssignIn(BaseModel):
    """The order the study belongs to: by id, or by accession number."""

    model_config = ConfigDict(extra="forbid")

    order_id: int | None = Field(default=None, ge=1)
    accession: str | None = Field(default=None, min_length=1, max_length=16)

    @model_validator(mode="after")
    def _one_key(self) -> AssignIn:
        if (self.order_id is None) == (self.accession is None):
            raise ValueError("give exactly one of order_id and accession")
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


_ERRORS: dict[int | str, dict[str, object]] = {404: {"model": ErrorBody},
                                               409: {"model": ErrorBody}}


# The service's dataclass is the response shape: one field list, not two to keep in step.
@router.get("", response_model=list[QueuedStudy])
def queued_studies(
    session: SessionDep,
    _token: IntegrationToken,
    state: Annotated[Literal["queued", "conflict"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[QueuedStudy]:
    """Studies waiting for an operator, oldest first."""
    states = (state,) if state else WAITING
    return list_queue(session, states=states, limit=limit, offset=offset)


@router.post("/{study_uid}/assign", response_model=AssignOut, responses=_ERRORS)
def assign(study_uid: StudyUid, body: AssignIn, session: SessionDep, context: ContextDep,
           token: IntegrationToken) -> AssignOut:
    """The study belongs to this order: the MIS patient and order values apply from now on
    (C-FIND, retrieve, WADO), and a stable study is forwarded as its rules say."""
    study_id = assign_study(session, study_uid=study_uid, actor=actor_of(token),
                            order_id=body.order_id, accession=body.accession)
    if is_stable(session, study_id):
        for hook in context.study_hooks:
            hook(session, study_id)
    session.commit()
    log.info("study assigned by operator", extra={"actor": actor_of(token)})
    return AssignOut(study_instance_uid=study_uid, order_id=body.order_id,
                     accession=body.accession)


@router.post("/{study_uid}/reject", status_code=status.HTTP_204_NO_CONTENT,
             responses=_ERRORS)
def reject(study_uid: StudyUid, body: RejectIn, session: SessionDep, context: ContextDep,
           token: AdminToken) -> None:
    """Delete the study and its files; the audit log keeps who, when and why."""
    settings = context.settings
    paths = delete_study(session, study_uid=study_uid, actor=actor_of(token), reason=body.reason,
                         before_delete=context.delete_hooks,
                         retention=retention_policy(settings.retention_days,
                                                    settings.retention_days_by_modality),
                         override_retention=body.override_retention)
    session.commit()
    root = context.settings.archive_root
    for path in paths:
        remove_file(root / path)
    log.info("study rejected by operator", extra={"actor": actor_of(token)})
