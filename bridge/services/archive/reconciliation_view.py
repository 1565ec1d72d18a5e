"""What operators see of reconciliation: the queue with the reason for each study, and how
studies came to their MIS patient (``reconciled_by``: ``order``, ``patient`` for an
unscheduled exam linked by its PatientID, ``operator``), per modality.

A ``patient_mismatch`` study shows the modality's values beside the MIS values of the patient
its PatientID names, so an operator can decide; nothing of those MIS values is applied to
the study until someone assigns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge.store.archive_models import CONFLICT, QUEUED, RECONCILED_BY, Study
from bridge.store.models import Patient, PatientIdentifier, table_of

S = table_of(Study)
P = table_of(Patient)
PI = table_of(PatientIdentifier)

WAITING = (QUEUED, CONFLICT)


@dataclass(frozen=True, slots=True)
class MisPatient:
    """The MIS values of the patient a queued study's PatientID names."""

    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str


@dataclass(frozen=True, slots=True)
class QueuedStudy:
    study_instance_uid: str
    reconciliation: str
    #: ``unmatched``, ``patient_mismatch`` or ``conflict``.
    kind: str
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
    #: The MIS patient the PatientID names (a mismatch, or a known patient kept queued).
    mis: MisPatient | None = None


def list_queue(session: Session, *, states: tuple[str, ...] = WAITING,
               kind: str | None = None, limit: int = 100, offset: int = 0) -> list[QueuedStudy]:
    """Studies waiting for an operator, oldest first."""
    current = P.alias("current")
    primary = (select(PI.c.id).where(PI.c.patient_id == current.c.id)
               .order_by(PI.c.position, PI.c.id).limit(1).correlate(current).scalar_subquery())
    query = (select(S, current.c.name.label("mis_name"),
                    current.c.birth_date.label("mis_birth_date"),
                    current.c.sex.label("mis_sex"), PI.c.value.label("mis_patient_id"),
                    PI.c.issuer.label("mis_issuer"))
             .select_from(S.outerjoin(P, P.c.id == S.c.candidate_patient_id)
                          .outerjoin(current,
                                     current.c.id == func.coalesce(P.c.merged_into_id, P.c.id))
                          .outerjoin(PI, PI.c.id == primary))
             .where(S.c.reconciliation.in_(states)))
    if kind is not None:
        query = query.where(S.c.queue_kind == kind)
    rows = session.connection().execute(
        query.order_by(S.c.created_at, S.c.id).limit(limit).offset(offset)).all()
    return [QueuedStudy(
        study_instance_uid=r.study_instance_uid, reconciliation=r.reconciliation,
        kind=r.queue_kind or ("conflict" if r.reconciliation == CONFLICT else "unmatched"),
        reason=r.queue_reason or "", patient_id=r.source_patient_id, issuer=r.source_issuer,
        patient_name=r.source_patient_name, birth_date=r.source_birth_date, sex=r.source_sex,
        accession=r.accession, study_date=r.study_date, modalities=r.modalities,
        num_series=r.num_series, num_instances=r.num_instances, received_at=r.created_at,
        mis=MisPatient(r.mis_patient_id or "", r.mis_issuer or "", r.mis_name or "",
                       r.mis_birth_date or "", r.mis_sex or "")
        if r.candidate_patient_id is not None else None)
        for r in rows]


@dataclass(frozen=True, slots=True)
class ReconciledCount:
    reconciled_by: str
    modality: str
    studies: int


@dataclass(frozen=True, slots=True)
class QueueCount:
    kind: str
    modality: str
    studies: int


@dataclass(frozen=True, slots=True)
class ReconciliationSummary:
    reconciled: list[ReconciledCount]
    queued: list[QueueCount]


def summary(session: Session) -> ReconciliationSummary:
    """Studies per ``reconciled_by`` and per queue kind, by modality (ModalitiesInStudy as
    stored: ``CT``, or ``CT\\SR`` for a study of two)."""
    rows = session.connection().execute(
        select(S.c.reconciliation, S.c.queue_kind, S.c.modalities,
               func.count().label("studies"))
        .group_by(S.c.reconciliation, S.c.queue_kind, S.c.modalities)
        .order_by(S.c.reconciliation, S.c.queue_kind, S.c.modalities)).all()
    reconciled = [ReconciledCount(RECONCILED_BY[r.reconciliation], r.modalities, r.studies)
                  for r in rows if r.reconciliation in RECONCILED_BY]
    queued = [QueueCount(r.queue_kind or ("conflict" if r.reconciliation == CONFLICT
                                          else "unmatched"), r.modalities, r.studies)
              for r in rows if r.reconciliation in WAITING]
    return ReconciliationSummary(reconciled, queued)
