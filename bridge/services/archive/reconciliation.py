"""Matching a received study to the MIS: to an order, else to a known patient.

A study is matched once, when its first object arrives, by the keys of
:class:`~bridge.mapping.dicom.reconciliation.ReconcilePolicy` in order (:func:`find_order`).
No order, but a PatientID that names a patient the MIS registered (:func:`find_patient`): the
study is *linked* to that patient (an unscheduled exam), unless its own birth date or name
contradicts the MIS (:mod:`bridge.mapping.dicom.patient_check`), which queues it as
``patient_mismatch``. Anything else waits in the queue as ``unmatched``. Orders that arrive
later attach to queued and linked studies in the periodic sweep
(:mod:`bridge.services.archive.late_orders`). An operator can assign a study by hand to an
order or to a patient (:func:`assign_study`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, or_, select, update
from sqlalchemy.orm import Session

from bridge.domain import Identifier
from bridge.errors import Conflict, MappingFailed, NotFound
from bridge.mapping.dicom.index_values import IndexValues
from bridge.mapping.dicom.patient_check import Demographics, contradictions
from bridge.mapping.dicom.reconciliation import ReconcilePolicy, date_window
from bridge.services.patients.mpi import lookup_identifier
from bridge.store.archive_models import (
    ASSIGNED,
    QUEUED,
    RECONCILED,
    STABLE,
    Study,
    StudyEvent,
)
from bridge.store.audit import append_audit
from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep, table_of, utcnow

ORD = table_of(Order)
S = table_of(Study)
STEP = table_of(ProcedureStep)
P = table_of(Patient)
PI = table_of(PatientIdentifier)
E = table_of(StudyEvent)


@dataclass(frozen=True, slots=True)
class Match:
    order_id: int
    patient_id: int
    key: str


@dataclass(frozen=True, slots=True)
class NoMatch:
    #: Why nothing matched, for the queue (no patient data in it).
    reason: str


@dataclass(frozen=True, slots=True)
class PatientLink:
    """No order, but the PatientID names this MIS patient and nothing contradicts it."""

    patient_id: int


@dataclass(frozen=True, slots=True)
class PatientMismatch:
    """The PatientID names this MIS patient, but the object's demographics contradict it."""

    patient_id: int
    #: The checks that failed (``birth_date``, ``name``): no values, so no PHI.
    failed: tuple[str, ...]

    @property
    def reason(self) -> str:
        return (f"PatientID names an MIS patient whose {' and '.join(self.failed)} the "
                "objects contradict")


def find_order(conn: Connection, values: IndexValues, policy: ReconcilePolicy, *,
               window_days: int, default_issuer: str = "") -> Match | NoMatch:
    """``default_issuer``: the sending AE's Issuer of Patient ID for objects without one."""
    tried: list[str] = []
    for key in policy.match_order:
        if key == "accession" and values.accession:
            found = _one_order(conn, ORD.c.accession == values.accession, policy)
        elif key == "study_instance_uid":
            found = _one_order(conn, ORD.c.study_instance_uid == values.study_instance_uid,
                               policy)
        elif key == "patient" and values.patient_id:
            found = _by_patient(conn, values, policy, window_days, default_issuer)
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


def find_patient(conn: Connection, values: IndexValues, policy: ReconcilePolicy, *,
                 default_issuer: str = "") -> PatientLink | PatientMismatch | None:
    """The MIS patient the object's PatientID names (None when the MIS knows none), checked
    against the object's own birth date and name."""
    if not values.patient_id:
        return None
    patient_id = _patient_for(conn, values.patient_id, values.issuer or default_issuer)
    if patient_id is None:
        return None
    mis = conn.execute(select(P.c.name, P.c.birth_date).where(P.c.id == patient_id)).one()
    failed = contradictions(Demographics(mis.name or "", mis.birth_date or ""),
                            Demographics(values.patient_name, values.birth_date),
                            sorted(policy.patient_checks))
    return PatientMismatch(patient_id, failed) if failed else PatientLink(patient_id)


def _by_patient(conn: Connection, values: IndexValues, policy: ReconcilePolicy,
                window_days: int, default_issuer: str) -> Match | NoMatch | None:
    patient_id = _patient_for(conn, values.patient_id, values.issuer or default_issuer)
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


def assign_study(session: Session, *, study_uid: str, actor: str, order_id: int | None = None,
                 accession: str | None = None, patient: Identifier | None = None) -> int:
    """An operator's decision: the study belongs to this order (or, with ``patient``, to
    this MIS patient without an order). Returns the study id."""
    conn = session.connection()
    study = conn.execute(select(S.c.id, S.c.state).where(
        S.c.study_instance_uid == study_uid)).first()
    if study is None:
        raise NotFound("no such study", location="study_instance_uid")
    if patient is not None:
        return _assign_to_patient(conn, study.id, study_uid, patient, actor)
    where = ORD.c.id == order_id if order_id is not None else ORD.c.accession == accession
    orders = conn.execute(select(ORD.c.id, ORD.c.patient_id).where(where)
                          .order_by(ORD.c.id.desc()).limit(2)).all()
    if not orders:
        raise NotFound("no such order", location="order_id" if order_id else "accession")
    if len(orders) > 1:
        raise Conflict("several orders have this accession; assign by order_id",
                       location="accession")
    order = orders[0]
    attach_study(conn, study.id, Match(order.id, order.patient_id, "operator"), ASSIGNED,
                 only_queued=False)
    append_audit(conn, actor=actor, action="assign", entity="study", entity_id=study_uid,
                 details={"order_id": order.id})
    return int(study.id)


def _assign_to_patient(conn: Connection, study_id: int, study_uid: str, patient: Identifier,
                       actor: str) -> int:
    if not patient.value:
        raise MappingFailed("a patient identifier is needed", location="patient")
    patient_id = _patient_for(conn, patient.value, patient.issuer)
    if patient_id is None:
        raise NotFound("no MIS patient has this identifier (or several: give the issuer)",
                       location="patient")
    attach_study(conn, study_id, Match(0, patient_id, "operator"), ASSIGNED, only_queued=False)
    append_audit(conn, actor=actor, action="assign", entity="study", entity_id=study_uid,
                 details={"patient_id": patient_id})
    return int(study_id)


def attach_study(conn: Connection, study_id: int, match: Match, how: str, *,
                 only_queued: bool = True, also: tuple[str, ...] = ()) -> bool:
    """Give a study its MIS patient (and order, when ``match.order_id``): ``how`` is the new
    reconciliation state. Only a queued study (or one in ``also``) unless ``only_queued`` is
    off: two sweeps never attach twice. A study event records it."""
    where = [S.c.id == study_id]
    if only_queued:
        where.append(S.c.reconciliation.in_((QUEUED, *also)))
    done = conn.execute(update(S).where(*where).values(
        patient_id=match.patient_id, order_id=match.order_id or None, reconciliation=how,
        match_key=match.key, queue_reason=None, queue_kind=None, candidate_patient_id=None,
        updated_at=utcnow())).rowcount
    if done:
        details: dict[str, Any] = {"key": match.key, "patient_id": match.patient_id}
        if match.order_id:
            details["order_id"] = match.order_id
        conn.execute(E.insert().values(study_id=study_id, kind="reconciled", details=details,
                                       created_at=utcnow()))
    return bool(done)


def is_forwardable(reconciliation: str, state: str) -> bool:
    return reconciliation in RECONCILED and state == STABLE
