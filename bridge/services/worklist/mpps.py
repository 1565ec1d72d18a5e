"""Modality Performed Procedure Step use cases: N-CREATE and N-SET from a modality.

The modality reports what it did; the bridge moves the scheduled step (and its order)
along: IN PROGRESS → STARTED, COMPLETED → COMPLETED, DISCONTINUED → DISCONTINUED, so a
finished step leaves the worklist. The caller owns the transaction (one per DIMSE request).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge.domain import CLOSED_STATUSES, StepStatus
from bridge.errors import BridgeError, Conflict, NotFound
from bridge.store.models import Order, PerformedProcedureStep, ProcedureStep

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
_FINAL = frozenset({COMPLETED, DISCONTINUED})
_STEP_STATUS = {
    IN_PROGRESS: StepStatus.STARTED,
    COMPLETED: StepStatus.COMPLETED,
    DISCONTINUED: StepStatus.DISCONTINUED,
}
_STATUS_TAG = "00400252"  # PerformedProcedureStepStatus in DICOM JSON


class MppsError(BridgeError):
    """An MPPS failure with its own DIMSE status (PS3.4 F.7.2), where no kind fits."""

    def __init__(self, message: str, *, dimse_status: int, location: str | None = None) -> None:
        super().__init__(message, location=location)
        self.dimse_status = dimse_status


def invalid_attribute_value(message: str) -> MppsError:
    return MppsError(message, dimse_status=0x0106, location="(0040,0252)")


def duplicate_instance(uid: str) -> MppsError:
    return MppsError(f"MPPS {uid} already exists", dimse_status=0x0111)


def create_mpps(
    session: Session, sop_instance_uid: str, attributes: Dataset, calling_ae: str | None
) -> PerformedProcedureStep:
    """N-CREATE: record the MPPS and start the scheduled step(s) it names."""
    status = str(attributes.get("PerformedProcedureStepStatus", "") or "").strip()
    if status != IN_PROGRESS:
        raise invalid_attribute_value(
            f"PerformedProcedureStepStatus must be IN PROGRESS on N-CREATE, not {status!r}"
        )
    if session.scalar(
        select(exists().where(PerformedProcedureStep.sop_instance_uid == sop_instance_uid))
    ):
        raise duplicate_instance(sop_instance_uid)
    steps = _scheduled_steps(session, attributes)
    mpps = PerformedProcedureStep(
        sop_instance_uid=sop_instance_uid,
        status=status,
        step_id=steps[0].id if steps else None,
        calling_ae=calling_ae,
        attributes=attributes.to_json_dict(),
    )
    session.add(mpps)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent N-CREATE of the same instance won
        raise duplicate_instance(sop_instance_uid) from exc
    _apply(session, steps, status)
    return mpps


def set_mpps(
    session: Session, sop_instance_uid: str, modification: Dataset
) -> PerformedProcedureStep:
    """N-SET: merge the modification; a final status closes the scheduled step(s)."""
    mpps = session.scalar(
        select(PerformedProcedureStep)
        .where(PerformedProcedureStep.sop_instance_uid == sop_instance_uid)
        .with_for_update()
    )
    if mpps is None:
        raise NotFound(f"no MPPS {sop_instance_uid}")
    if mpps.status in _FINAL:
        # PS3.4 F.7.2.2: 0110 with Error ID A710 in the Error Comment.
        raise Conflict("A710: Performed Procedure Step Object may no longer be updated")
    status = str(modification.get("PerformedProcedureStepStatus", mpps.status) or "").strip()
    if status not in _STEP_STATUS:
        raise invalid_attribute_value(f"invalid PerformedProcedureStepStatus {status!r}")
    merged: dict[str, Any] = dict(mpps.attributes or {})
    merged.update(modification.to_json_dict())
    merged[_STATUS_TAG] = {"vr": "CS", "Value": [status]}
    mpps.attributes = merged
    if status != mpps.status:
        mpps.status = status
        _apply(session, _linked_steps(session, mpps, merged), status)
    session.flush()
    return mpps


def _scheduled_steps(session: Session, attributes: Dataset) -> list[ProcedureStep]:
    """The steps named in Scheduled Step Attributes Sequence: by SPS ID + accession, else
    by study UID (+ SPS ID when given). An unscheduled MPPS (no match) links to nothing."""
    found: dict[int, ProcedureStep] = {}
    for item in attributes.get("ScheduledStepAttributesSequence", None) or []:
        sps_id = str(item.get("ScheduledProcedureStepID", "") or "")
        accession = str(item.get("AccessionNumber", "") or "")
        study_uid = str(item.get("StudyInstanceUID", "") or "")
        stmt = select(ProcedureStep).join(Order, Order.id == ProcedureStep.order_id)
        if accession:
            stmt = stmt.where(Order.accession == accession)
        elif study_uid:
            stmt = stmt.where(Order.study_instance_uid == study_uid)
        else:
            continue  # an SPS ID alone is only unique within its order
        if sps_id:
            stmt = stmt.where(ProcedureStep.sps_id == sps_id)
        for step in session.scalars(stmt.order_by(ProcedureStep.id)):
            found.setdefault(step.id, step)
    return list(found.values())


def _linked_steps(
    session: Session, mpps: PerformedProcedureStep, attributes: dict[str, Any]
) -> list[ProcedureStep]:
    stored = Dataset.from_json(attributes)
    steps = _scheduled_steps(session, stored)
    if not steps and mpps.step_id is not None:
        step = session.get(ProcedureStep, mpps.step_id)
        steps = [step] if step is not None else []
    return steps


def _apply(session: Session, steps: Iterable[ProcedureStep], mpps_status: str) -> None:
    step_status = _STEP_STATUS[mpps_status]
    orders: dict[int, Order] = {}
    for step in steps:
        if step.status in CLOSED_STATUSES and step_status == StepStatus.STARTED:
            continue  # a late IN PROGRESS never reopens a closed step
        step.status = step_status
        orders.setdefault(step.order_id, step.order)
    session.flush()
    for order in orders.values():
        order.status = _order_status(order)


def _order_status(order: Order) -> str:
    """The order follows its steps: finished when every step is, COMPLETED if any was
    performed, else DISCONTINUED; STARTED while any step is still open."""
    statuses = {step.status for step in order.steps}
    if statuses and statuses <= CLOSED_STATUSES:
        return StepStatus.COMPLETED if StepStatus.COMPLETED in statuses else StepStatus.DISCONTINUED
    return StepStatus.STARTED
