"""Operator actions on the archive: the reconciliation queue listing, and deleting a study
(with its files) under an audit record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bridge.errors import NotFound
from bridge.services.study_stability import StudyHook
from bridge.store.archive_models import (
    CONFLICT,
    QUEUED,
    AuditRecord,
    Instance,
    Series,
    Study,
    StudyEvent,
)
from bridge.store.models import table_of, utcnow

S = table_of(Study)
SE = table_of(Series)
I = table_of(Instance)  # noqa: E741
E = table_of(StudyEvent)
AUDIT = table_of(AuditRecord)

WAITING = (QUEUED, CONFLICT)


@dataclass(frozen=True, slots=True)
class QueuedStudy:
    study_instance_uid: str
    reconciliation: str
    reason: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    accession: str
    study_date: str
    modalities: str
    num_series: int
    num_instances: int
    received_at: datetime


def list_queue(session: Session, *, states: tuple[str, ...] = WAITING, limit: int = 100,
               offset: int = 0) -> list[QueuedStudy]:
    rows = session.connection().execute(
        select(S).where(S.c.reconciliation.in_(states))
        .order_by(S.c.created_at, S.c.id).limit(limit).offset(offset)).all()
    return [QueuedStudy(
        study_instance_uid=r.study_instance_uid, reconciliation=r.reconciliation,
        reason=r.queue_reason or "", patient_id=r.source_patient_id, issuer=r.source_issuer,
        patient_name=r.source_patient_name, birth_date=r.source_birth_date, sex=r.source_sex,
        accession=r.accession, study_date=r.study_date, modalities=r.modalities,
        num_series=r.num_series, num_instances=r.num_instances, received_at=r.created_at)
        for r in rows]


def delete_study(session: Session, *, study_uid: str, actor: str, reason: str,
                 before_delete: Sequence[StudyHook] = ()) -> list[str]:
    """Remove the study's rows and write the audit record; returns the files to remove once
    the transaction has committed (removing them earlier would lose data on a rollback).
    ``before_delete`` hooks run first, in the same transaction (e.g. queue the withdrawal of
    a published ImagingStudy)."""
    conn = session.connection()
    # Locked first (PostgreSQL): an object being indexed into the study holds the row, and
    # its instance must be seen (and its file listed) rather than fail the delete on a key.
    study = conn.execute(select(S.c.id, S.c.num_instances, S.c.reconciliation).where(
        S.c.study_instance_uid == study_uid).with_for_update()).first()
    if study is None:
        raise NotFound("no such study", location="study_instance_uid")
    for hook in before_delete:
        hook(session, int(study.id))
    paths = list(conn.execute(select(I.c.path).where(I.c.study_id == study.id)).scalars())
    conn.execute(delete(I).where(I.c.study_id == study.id))
    conn.execute(delete(SE).where(SE.c.study_id == study.id))
    conn.execute(delete(E).where(E.c.study_id == study.id))
    conn.execute(delete(S).where(S.c.id == study.id))
    conn.execute(AUDIT.insert().values(
        at=utcnow(), actor=actor, action="delete", entity="study", entity_id=study_uid,
        details={"reason": reason, "instances": study.num_instances,
                 "reconciliation": study.reconciliation}))
    return paths
