"""An operator's actions on one archived study: forward it to a DICOM peer now, or delete it.

Forwarding queues a job in the ``forward`` queue (the same job the forwarding rules queue,
sent with the MIS values; a failure lands in ``/api/jobs`` for requeue) and needs the
integration role. Deleting removes the study's rows and files with an audit record, refused
for a reconciled study still under retention unless overridden, and needs admin. Searching
studies is QIDO-RS (``/dicomweb/studies``).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from bridge.adapters.http.api.schemas import ErrorBody
from bridge.adapters.http.deps import (
    AdminToken,
    AppContext,
    ContextDep,
    IntegrationToken,
    SessionDep,
    actor_of,
)
from bridge.services.archive.admin import delete_study
from bridge.services.archive.forwarding import forward_study
from bridge.services.auth.principal import Principal
from bridge.storage.durable import remove_file
from bridge.storage.retention import retention_policy

log = logging.getLogger("bridge.http")
router = APIRouter(prefix="/api/studies", tags=["studies"])

StudyUid = Annotated[str, Path(max_length=64, pattern=r"^[0-9.]+$")]
_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 404, 409, 422)}


class ForwardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The peer's AE title, as in BRIDGE_DICOM_PEERS (role scp or both).
    destination: str = Field(min_length=1, max_length=16)


class ForwardOut(BaseModel):
    study_instance_uid: str
    destination: str
    #: The job in the ``forward`` queue (``/api/jobs``).
    job_id: int


class DeleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=512)
    #: Delete a reconciled study still under retention (BRIDGE_RETENTION_DAYS); audited.
    override_retention: bool = False


@router.post("/{study_uid}/forward", response_model=ForwardOut,
             status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
def forward(study_uid: StudyUid, body: ForwardIn, session: SessionDep, context: ContextDep,
            token: IntegrationToken) -> ForwardOut:
    """Send the reconciled study to the peer (queued; a study already waiting for that peer
    is the same job). The answer is the job to follow."""
    job_id = forward_study(session, study_uid=study_uid, destination=body.destination,
                           settings=context.settings, actor=actor_of(token))
    session.commit()
    log.info("study forward queued by operator", extra={"actor": actor_of(token)})
    return ForwardOut(study_instance_uid=study_uid, destination=body.destination,
                      job_id=job_id)


@router.post("/{study_uid}/delete", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
def delete(study_uid: StudyUid, body: DeleteIn, session: SessionDep, context: ContextDep,
           token: AdminToken) -> None:
    """Delete the study and its files; the audit log keeps who, when and why."""
    delete_archived_study(session, context, token, study_uid=study_uid, reason=body.reason,
                          override_retention=body.override_retention)
    log.info("study deleted by operator", extra={"actor": actor_of(token)})


def delete_archived_study(session: Session, context: AppContext, token: Principal, *,
                          study_uid: str, reason: str, override_retention: bool) -> None:
    """Delete under the retention policy, commit, then remove the online files (a file
    removed before the commit would be lost on a rollback). Shared with the reconciliation
    queue's reject."""
    settings = context.settings
    paths = delete_study(session, study_uid=study_uid, actor=actor_of(token), reason=reason,
                         before_delete=context.delete_hooks,
                         retention=retention_policy(settings.retention_days,
                                                    settings.retention_days_by_modality),
                         override_retention=override_retention)
    session.commit()
    for path in paths:
        remove_file(settings.archive_root / path)
