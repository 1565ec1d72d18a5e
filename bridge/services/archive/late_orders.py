"""Orders that arrive after the images: the periodic sweep attaches them.

Run by :class:`~bridge.services.archive.watch.StudyWatch`, so no intake path (HL7, FHIR, the
API) has to remember to call it:

- a **queued** study gets the order with its accession or Study Instance UID;
- a **linked** study (an unscheduled exam of a known patient, received within the policy's
  ``late_order_days``) gets an order of the same patient (merges followed) that has its
  accession or Study Instance UID, or, by the ``patient`` key, the one open order of that
  patient created or changed since the study arrived whose step has one of the study's
  modalities and a start date within the date window of the study date.

Either way the study gains the order's accession and Request Attributes on the way out, and
the order's open steps of the study's modalities are completed (the exam was performed
without them: no MPPS will come). A study with several candidate orders is left as it is.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from bridge.domain import CLOSED_STATUSES
from bridge.mapping.dicom.reconciliation import ReconcilePolicy, date_window
from bridge.services.archive.reconciliation import Match, attach_study
from bridge.services.worklist.orders import complete_for_study
from bridge.store.archive_models import LINKED, MATCHED, QUEUED, Study
from bridge.store.models import Order, Patient, ProcedureStep, table_of, utcnow

ORD = table_of(Order)
S = table_of(Study)
STEP = table_of(ProcedureStep)
_STUDY_PATIENT = table_of(Patient).alias("study_patient")
_ORDER_PATIENT = table_of(Patient).alias("order_patient")
_CLOSED = [s.value for s in CLOSED_STATUSES]


def _keyed(policy: ReconcilePolicy) -> list[tuple[str, Any]]:
    return [(key, condition) for key, condition in (
        ("accession", and_(S.c.accession != "", ORD.c.accession == S.c.accession)),
        ("study_instance_uid", ORD.c.study_instance_uid == S.c.study_instance_uid),
    ) if key in policy.match_order]


def _queued_by_key(policy: ReconcilePolicy, condition: Any) -> Select[Any]:
    return (select(S.c.id, S.c.modalities, ORD.c.id.label("order_id"), ORD.c.patient_id)
            .join(ORD, condition)
            .where(S.c.reconciliation == QUEUED,
                   ORD.c.status.not_in(policy.skip_order_statuses)))


def _linked_by_key(policy: ReconcilePolicy, condition: Any, cutoff: Any) -> Select[Any]:
    """Linked studies with an order of the same (current) patient by accession or UID."""
    sp, op = _STUDY_PATIENT, _ORDER_PATIENT
    return (select(S.c.id, S.c.modalities, ORD.c.id.label("order_id"), ORD.c.patient_id)
            .select_from(S.join(sp, sp.c.id == S.c.patient_id).join(ORD, condition)
                         .join(op, op.c.id == ORD.c.patient_id))
            .where(S.c.reconciliation == LINKED, S.c.created_at >= cutoff,
                   ORD.c.status.not_in(policy.skip_order_statuses),
                   func.coalesce(op.c.merged_into_id, op.c.id)
                   == func.coalesce(sp.c.merged_into_id, sp.c.id)))


def _linked_by_patient(policy: ReconcilePolicy, cutoff: Any) -> Select[Any]:
    """Open steps of the linked studies' patients, of orders newer than the study."""
    sp, op = _STUDY_PATIENT, _ORDER_PATIENT
    current = func.coalesce(sp.c.merged_into_id, sp.c.id)
    return (select(S.c.id, S.c.study_date, S.c.modalities, ORD.c.id.label("order_id"),
                   ORD.c.patient_id, STEP.c.modality, STEP.c.start_date)
            .select_from(S.join(sp, sp.c.id == S.c.patient_id)
                         .join(op, or_(op.c.id == current, op.c.merged_into_id == current))
                         .join(ORD, ORD.c.patient_id == op.c.id)
                         .join(STEP, STEP.c.order_id == ORD.c.id))
            .where(S.c.reconciliation == LINKED, S.c.created_at >= cutoff,
                   ORD.c.updated_at >= S.c.created_at,
                   ORD.c.status.not_in(policy.skip_order_statuses),
                   STEP.c.status.not_in(_CLOSED)))


def _patient_matches(conn: Connection, policy: ReconcilePolicy, cutoff: Any,
                     window_days: int) -> list[tuple[int, str, Match]]:
    """(study, modalities, match) for linked studies with exactly one fitting order."""
    candidates: dict[int, set[tuple[int, int]]] = defaultdict(set)
    modalities: dict[int, str] = {}
    for row in conn.execute(_linked_by_patient(policy, cutoff)):
        window = date_window(row.study_date, window_days)
        study_modalities = [m for m in (row.modalities or "").split("\\") if m]
        if (window is None or row.modality not in study_modalities
                or not row.start_date or not window[0] <= row.start_date <= window[1]):
            continue
        candidates[row.id].add((int(row.order_id), int(row.patient_id)))
        modalities[row.id] = row.modalities or ""
    return [(study_id, modalities[study_id], Match(order_id, patient_id, "patient"))
            for study_id, found in sorted(candidates.items()) if len(found) == 1
            for order_id, patient_id in found]


def _cutoff(policy: ReconcilePolicy) -> Any:
    return utcnow() - timedelta(days=policy.late_order_days)


def any_reconcilable(session: Session, policy: ReconcilePolicy, *,
                     window_days: int = 1) -> bool:
    """Whether :func:`reconcile_queued` has work: asked in a read-only session first, so the
    periodic sweep takes the (SQLite) write lock only when it will write."""
    conn = session.connection()
    cutoff = _cutoff(policy)
    for _key, condition in _keyed(policy):
        for query in (_queued_by_key(policy, condition),
                      _linked_by_key(policy, condition, cutoff)):
            if conn.execute(query.limit(1)).first() is not None:
                return True
    return "patient" in policy.match_order and bool(
        _patient_matches(conn, policy, cutoff, window_days))


def reconcile_queued(session: Session, policy: ReconcilePolicy, *,
                     window_days: int = 1) -> list[int]:
    """Attach orders that arrived since to queued and linked studies; the studies matched."""
    conn = session.connection()
    cutoff = _cutoff(policy)
    matched: list[int] = []
    found: list[tuple[int, str, Match, str]] = []
    for key, condition in _keyed(policy):
        for query, state in ((_queued_by_key(policy, condition), QUEUED),
                             (_linked_by_key(policy, condition, cutoff), LINKED)):
            rows = conn.execute(query.order_by(S.c.id, ORD.c.id.desc())).all()
            found.extend((int(r.id), r.modalities or "", Match(r.order_id, r.patient_id, key),
                          state) for r in rows)
    if "patient" in policy.match_order:
        found.extend((study_id, mods, match, LINKED) for study_id, mods, match
                     in _patient_matches(conn, policy, cutoff, window_days))
    for study_id, mods, match, state in found:
        if study_id in matched:
            continue  # the first key in the policy's order wins
        also = (LINKED,) if state == LINKED else ()
        if attach_study(conn, study_id, match, MATCHED, also=also):
            complete_for_study(conn, match.order_id, mods.split("\\"))
            matched.append(study_id)
    return matched
