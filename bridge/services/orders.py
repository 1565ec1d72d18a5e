"""Order use cases: create, change, cancel, discontinue and status-update orders and steps.

The same rules serve HL7 (ORM/OMI), the HTTP API and, later, FHIR: an order is found by its
placer number, else its accession, else its filler number, so an order created by one channel
and changed by another stays one order when the identifiers agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.config import Settings
from bridge.domain import (
    CLOSED_STATUSES,
    OrderAction,
    OrderCommand,
    OrderData,
    StepData,
    StepStatus,
)
from bridge.errors import MappingFailed, NotFound
from bridge.services.patients import upsert_patient
from bridge.store.models import Order, ProcedureStep

#: A step that has begun or ended is not put back to SCHEDULED by an order change.
_PROTECTED_FROM_RESCHEDULE = CLOSED_STATUSES | {StepStatus.STARTED}


@dataclass(frozen=True, slots=True)
class OrderPolicy:
    accession: Literal["generate", "reject"] = "generate"
    accession_prefix: str = "BR"
    study_uid: Literal["generate", "leave_empty"] = "generate"
    uid_root: str = "1.2.826.0.1.3680043.10.1137"

    @classmethod
    def from_settings(cls, settings: Settings) -> OrderPolicy:
        return cls(
            accession=settings.accession_policy,
            accession_prefix=settings.accession_prefix,
            study_uid=settings.study_uid_policy,
            uid_root=settings.uid_root,
        )


def apply_order_command(session: Session, command: OrderCommand, *, policy: OrderPolicy) -> int:
    """Apply one order message or API call; returns the order id. Raises BridgeError kinds."""
    data = command.order
    if not data.placer_number and not data.accession and not data.filler_number:
        raise MappingFailed("order has no placer number, accession or filler number",
                            location="ORC-2")
    order = find_order(session, data)
    if command.action in (OrderAction.NEW, OrderAction.CHANGE):
        patient_id = upsert_patient(session, command.patient)
        if order is None:
            order = _create_order(session, patient_id, command, policy)
        else:
            order.patient_id = patient_id  # the MIS wins, also when it moves the order
            _update_order(order, data)
            _upsert_steps(session, order, data.steps, command.step_status, policy)
        order.status = _order_status(order)
    else:
        if order is None:
            raise NotFound(f"no order with placer number {data.placer_number or '-'} / "
                           f"accession {data.accession or '-'}", location="ORC-2")
        if command.patient.identifiers and command.patient.primary.value:
            upsert_patient(session, command.patient)
        _update_order(order, data)
        for step in order.steps:
            if command.action is OrderAction.STATUS or step.status not in CLOSED_STATUSES:
                step.status = command.step_status.value
        order.status = command.step_status.value
    session.flush()
    return order.id


def find_order(session: Session, data: OrderData) -> Order | None:
    if data.placer_number:
        order = session.execute(
            select(Order).where(Order.placer_number == data.placer_number,
                                Order.placer_issuer == data.placer_issuer)
        ).scalar_one_or_none()
        if order is not None:
            return order
    if data.accession:
        order = session.execute(
            select(Order).where(Order.accession == data.accession).limit(1)
        ).scalar_one_or_none()
        if order is not None:
            return order
    if data.filler_number:
        return session.execute(
            select(Order).where(Order.filler_number == data.filler_number,
                                Order.filler_issuer == data.filler_issuer).limit(1)
        ).scalar_one_or_none()
    return None


def _create_order(session: Session, patient_id: int, command: OrderCommand,
                  policy: OrderPolicy) -> Order:
    data = command.order
    if not data.accession and policy.accession == "reject":
        raise MappingFailed("accession number missing", location="OBR-18")
    if not data.steps:
        raise MappingFailed("order has no procedure step", location="OBR")
    order = Order(patient_id=patient_id, source=command.source,
                  status=command.step_status.value)
    _update_order(order, data)
    if not order.study_instance_uid and policy.study_uid == "generate":
        order.study_instance_uid = generate_uid(prefix=policy.uid_root + ".")
    session.add(order)
    session.flush()
    if not order.accession:
        # Unique because the order id is; SH allows 16 characters.
        order.accession = f"{policy.accession_prefix}{order.id:08d}"[:16]
    if not order.requested_procedure_id:
        order.requested_procedure_id = order.accession
    _upsert_steps(session, order, data.steps, command.step_status, policy)
    return order


def _update_order(order: Order, data: OrderData) -> None:
    """Copy what the sender said onto the order; None means "not said", keep the stored value."""
    for name in ("placer_number", "filler_number", "accession", "study_instance_uid",
                 "requested_procedure_id", "procedure_description", "priority", "reason",
                 "requesting_physician", "referring_physician", "admission_id"):
        value = getattr(data, name)
        if value is not None:
            setattr(order, name, value or None)
    if data.placer_number:
        order.placer_issuer = data.placer_issuer
    if data.filler_number:
        order.filler_issuer = data.filler_issuer
    if data.procedure_code is not None:
        order.procedure_code = data.procedure_code.code or None
        order.procedure_scheme = data.procedure_code.scheme or None
        order.procedure_meaning = data.procedure_code.meaning or None
        if data.procedure_description is None and data.procedure_code.meaning:
            order.procedure_description = data.procedure_code.meaning


def _upsert_steps(session: Session, order: Order, steps: list[StepData], status: StepStatus,
                  policy: OrderPolicy) -> None:
    existing = {step.sps_id: step for step in order.steps} if order.id else {}
    for index, data in enumerate(steps, start=1):
        sps_id = data.sps_id or _generated_sps_id(order, index, len(steps))
        step = existing.get(sps_id)
        if step is None and not data.sps_id and len(existing) == 1 and len(steps) == 1:
            step = next(iter(existing.values()))  # the sender never names its only step
        if step is None:
            step = ProcedureStep(order_id=order.id, sps_id=sps_id, status=status.value)
            session.add(step)
            order.steps.append(step)
        elif not (status is StepStatus.SCHEDULED and step.status in _PROTECTED_FROM_RESCHEDULE
                  and step.status != StepStatus.CANCELED):
            step.status = status.value
        _copy_step(step, data)


def _generated_sps_id(order: Order, index: int, count: int) -> str:
    base = order.requested_procedure_id or order.accession or str(order.id)
    return base[:16] if count == 1 else f"{base[:12]}-{index}"


def _copy_step(step: ProcedureStep, data: StepData) -> None:
    for name in ("station_ae", "station_name", "location", "modality", "start_date",
                 "start_time", "description", "performing_physician"):
        value = getattr(data, name)
        if value is not None:
            setattr(step, name, value or None)
    if data.protocol_codes is not None:
        step.protocol_codes = [
            {"code": c.code, "scheme": c.scheme, "meaning": c.meaning} for c in data.protocol_codes
        ]


def _order_status(order: Order) -> str:
    """The order's status follows its most advanced open step, else its steps' end state."""
    statuses = [step.status for step in order.steps]
    open_statuses = [s for s in statuses if s not in CLOSED_STATUSES]
    if StepStatus.STARTED in open_statuses:
        return StepStatus.STARTED.value
    if open_statuses:
        return open_statuses[0]
    for final in (StepStatus.COMPLETED, StepStatus.DISCONTINUED, StepStatus.CANCELED):
        if final in statuses:
            return final.value
    return order.status
