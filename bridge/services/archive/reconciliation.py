"""Matching received studies to MIS orders, and the reconciliation queue.

A study is matched once, when its first object arrives (:func:`find_order`), by the keys of
:class:`~bridge.mapping.dicom.reconciliation.ReconcilePolicy` in order. A study nothing matches
waits in the queue (``studies.reconciliation = 'queued'`` with a reason) until an order with
its accession or Study Instance UID arrives, by any path (HL7, FHIR, the API):
:func:`reconcile_queued` is run by the scheduler, so no intake path has to remember to call
it. An operator can assign a study by hand (:func:`assign_study`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.orm import Session

from bridge.domain import Identifier
from bridge.errors import Conflict, NotFound
from bridge.mapping.dicom.index_values import IndexValues
from bridge.mapping.dicom.reconciliation import ReconcilePolicy, date_window
from bridge.services.patients.mpi import lookup_identifier
from bridge.store.archive_models import (
    ASSIGNED,
    MATCHED,
    QUEUED,
    STABLE,
    AuditRecord,
    Study,
    StudyEvent,
)
from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep, table_of, utcnow

ORD = table_of(Order)
S = table_of(Study)
STEP = table_of(ProcedureStep)
P = table_of(Patient)
PI = table_of(PatientIdentifier)
E = table_of(StudyEvent)
AUDIT = table_of(AuditRecord)


@dataclass(frozen=True, slots=True)
class Match:
    order_id: int
    patient_id: int
    key: str


@dataclass(frozen=True, slots=True)
class NoMatch:
    #: Why nothing matched, for the queue (no patient data in it).
    reason: str


def find_order(conn: Connection, values: IndexValues, policy: ReconcilePolicy, *,
               window_days: int) -> Match | NoMatch:
    tried: list[str] = []
    for key in policy.match_order:
        if key == "accession" and values.accession:
            found = _one_order(conn, ORD.c.accession == values.accession, policy)
        elif key == "study_instance_uid":
            found = _one_order(conn, ORD.c.study_instance_uid == values.study_instance_uid,
                               policy)
        elif key == "patient" and values.patient_id:
            found = _by_patient(conn, values, policy, window_days)
        else:
            continue
        if isinstance(found, Match):
            return Match(found.order_id, found.patient_id, key)
        tried.append(found.reason if isinstance(found, NoMatch) else f"no order by {key}")
    if not tried:
        return NoMatch("no accession, study or patient key to match on")
    return NoMatch("; ".join(tried))


def _one_order(conn: Connection, where: Any, policy: ReconcilePolicy) -> Match | NoMatch | None:
    rows = conn.execute(
        select(ORD.c.id, ORD.c.patient_id)
        .where(where, ORD.c.status.not_in(policy.skip_order_statuses))
        .order_by(ORD.c.id.desc()).limit(2)).all()
    if not rows:
        return None
    if len(rows) > 1:
        return NoMatch("several open orders share the key")
    return Match(int(rows[0].id), int(rows[0].patient_id), "")


def _by_patient(conn: Connection, values: IndexValues, policy: ReconcilePolicy,
                window_days: int) -> Match | NoMatch | None:
    patient_id = _patient_for(conn, values.patient_id, values.issuer)
    if patient_id is None:
        return NoMatch("PatientID unknown to the MIS")
    window = date_window(values.study_date, window_days)
    if window is None or not values.modality:
        return NoMatch("patient known, but no study date or modality to match an order")
    owners = select(P.c.id).where(or_(P.c.id == patient_id, P.c.merged_into_id == patient_id))
    rows = conn.execute(
        select(ORD.c.id, ORD.c.patient_id).distinct().join(STEP, STEP.c.order_id == ORD.c.id).where(
            ORD.c.patient_id.in_(owners), STEP.c.modality == values.modality,
            STEP.c.start_date.between(*window),
            ORD.c.status.not_in(policy.skip_order_statuses))
        .limit(2)).all()
    if not rows:
        return NoMatch("patient known, no open order for this modality and date")
    if len(rows) > 1:
        return NoMatch("patient known, several orders match modality and date")
    return Match(int(rows[0].id), int(rows[0].patient_id), "")


def _patient_for(conn: Connection, value: str, issuer: str) -> int | None:
    if issuer:
        found = lookup_identifier(conn, Identifier(value=value, issuer=issuer))
        return None if found is None else found.id
    # No issuer from the modality: the value alone must name exactly one (current) patient.
    current = func.coalesce(P.c.merged_into_id, P.c.id)
    rows = conn.execute(select(current.label("pid")).distinct()
                        .join(P, P.c.id == PI.c.patient_id)
                        .where(PI.c.value == value).limit(2)).all()
    return int(rows[0].pid) if len(rows) == 1 else None


def _reconcilable(policy: ReconcilePolicy) -> list[tuple[str, Any]]:
    return [(key, condition) for key, condition in (
        ("accession", and_(S.c.accession != "", ORD.c.accession == S.c.accession)),
        ("study_instance_uid", ORD.c.study_instance_uid == S.c.study_instance_uid),
    ) if key in policy.match_order]


def any_reconcilable(session: Session, policy: ReconcilePolicy) -> bool:
    """Whether :func:`reconcile_queued` has work: asked in a read-only session first, so the
    periodic sweep takes the (SQLite) write lock only when it will write."""
    conn = session.connection()
    for _key, condition in _reconcilable(policy):
        found = conn.execute(
            select(S.c.id).join(ORD, condition)
            .where(S.c.reconciliation == QUEUED,
                   ORD.c.status.not_in(policy.skip_order_statuses)).limit(1)).first()
        if found is not None:
            return True
    return False


def reconcile_queued(session: Session, policy: ReconcilePolicy) -> list[int]:
    """Match queued studies to orders that have arrived since; returns the studies matched."""
    conn = session.connection()
    matched: list[int] = []
    for key, condition in _reconcilable(policy):
        rows = conn.execute(
            select(S.c.id, ORD.c.id.label("order_id"), ORD.c.patient_id).join(ORD, condition)
            .where(S.c.reconciliation == QUEUED,
                   ORD.c.status.not_in(policy.skip_order_statuses))
            .order_by(S.c.id, ORD.c.id.desc())).all()
        seen: set[int] = set()
        for row in rows:
            if row.id in seen or row.id in matched:
                continue
            seen.add(row.id)
            if _attach(conn, row.id, Match(row.order_id, row.patient_id, key), MATCHED):
                matched.append(int(row.id))
    return matched


def _attach(conn: Connection, study_id: int, match: Match, how: str, *,
            only_queued: bool = True) -> bool:
    where = [S.c.id == study_id]
    if only_queued:
        where.append(S.c.reconciliation == QUEUED)
    done = conn.execute(update(S).where(*where).values(
        patient_id=match.patient_id, order_id=match.order_id, reconciliation=how,
        match_key=match.key, queue_reason=None, updated_at=utcnow())).rowcount
    if done:
        conn.execute(E.insert().values(study_id=study_id, kind="reconciled",
                                       details={"order_id": match.order_id, "key": match.key},
                                       created_at=utcnow()))
    return bool(done)


def assign_study(session: Session, *, study_uid: str, actor: str, order_id: int | None = None,
                 accession: str | None = None) -> int:
    """An operator's decision: the study belongs to this order. Returns the study id."""
    conn = session.connection()
    study = conn.execute(select(S.c.id, S.c.state).where(
        S.c.study_instance_uid == study_uid)).first()
    if study is None:
        raise NotFound("no such study", location="study_instance_uid")
    where = ORD.c.id == order_id if order_id is not None else ORD.c.accession == accession
    orders = conn.execute(select(ORD.c.id, ORD.c.patient_id).where(where)
                          .order_by(ORD.c.id.desc()).limit(2)).all()
    if not orders:
        raise NotFound("no such order", location="order_id" if order_id else "accession")
    if len(orders) > 1:
        raise Conflict("several orders have this accession; assign by order_id",
                       location="accession")
    order = orders[0]
    _attach(conn, study.id, Match(order.id, order.patient_id, "operator"), ASSIGNED,
            only_queued=False)
    conn.execute(AUDIT.insert().values(
        at=utcnow(), actor=actor, action="assign", entity="study", entity_id=study_uid,
        details={"order_id": order.id}))
    return int(study.id)


def is_forwardable(reconciliation: str, state: str) -> bool:
    return reconciliation in (MATCHED, ASSIGNED) and state == STABLE
