"""Read side of the worklist API: steps with their order and patient, as response models.

Filters follow the indexes on procedure steps (station AE + date, modality + date, date) and
orders (accession). Only open steps are listed unless statuses are asked for explicitly.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, selectinload

from bridge.adapters.http.api.schemas import (
    OrderDetail,
    OrderOut,
    PatientOut,
    StepOut,
    WorklistItem,
)
from bridge.config.settings import Settings
from bridge.domain import CLOSED_STATUSES
from bridge.errors import NotFound
from bridge.services.access.visibility import order_visible
from bridge.services.links.viewer_links import order_links
from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep


def find_worklist(
    session: Session,
    *,
    station_ae: str | None = None,
    modality: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    statuses: Collection[str] | None = None,
    patient_id: str | None = None,
    accession: str | None = None,
    limit: int = 100,
    offset: int = 0,
    viewer: int | None = None,
    settings: Settings | None = None,
) -> list[WorklistItem]:
    """Steps matching every given filter, by scheduled date and time. Dates are inclusive.
    For a clinician (``viewer``) only the orders of patients they may see. With ``settings``
    asking for resource viewer links, an order with a study carries one."""
    primary = PatientIdentifier
    query = (
        select(ProcedureStep, Order, Patient, primary.value, primary.issuer)
        .join(Order, ProcedureStep.order_id == Order.id)
        .join(Patient, Order.patient_id == Patient.id)
        .outerjoin(primary, and_(primary.patient_id == Patient.id, primary.position == 0))
    )
    if viewer is not None:
        query = query.where(order_visible(viewer))
    if station_ae:
        query = query.where(ProcedureStep.station_ae == station_ae)
    if modality:
        query = query.where(ProcedureStep.modality == modality)
    if date_from:
        query = query.where(ProcedureStep.start_date >= date_from)
    if date_to:
        query = query.where(ProcedureStep.start_date <= date_to)
    if statuses:
        query = query.where(ProcedureStep.status.in_(list(statuses)))
    else:
        query = query.where(ProcedureStep.status.not_in([s.value for s in CLOSED_STATUSES]))
    if patient_id:
        query = query.where(Order.patient_id.in_(
            select(PatientIdentifier.patient_id).where(PatientIdentifier.value == patient_id)
        ))
    if accession:
        query = query.where(Order.accession == accession)
    query = (
        query.order_by(ProcedureStep.start_date, ProcedureStep.start_time, ProcedureStep.id)
        .limit(limit).offset(offset)
    )
    rows = session.execute(query).all()
    links = order_links(session, settings, (row[1].id for row in rows)) if settings else {}
    return [
        WorklistItem(
            step=StepOut.model_validate(step),
            order=OrderOut.model_validate(order).model_copy(
                update={"viewer_url": links.get(order.id)}),
            patient=_patient_out(patient, value, issuer),
        )
        for step, order, patient, value, issuer in rows
    ]


def load_order(session: Session, *, order_id: int, viewer: int | None = None) -> Order:
    query = select(Order).where(Order.id == order_id)
    if viewer is not None:
        query = query.where(order_visible(viewer))
    order = session.execute(
        query.options(
            selectinload(Order.steps),
            selectinload(Order.patient).selectinload(Patient.identifiers),
        )
    ).scalar_one_or_none()
    if order is None:
        raise NotFound(f"no order with id {order_id}", location="order_id")
    return order


def order_detail(session: Session, *, order_id: int, viewer: int | None = None,
                 settings: Settings | None = None) -> OrderDetail:
    order = load_order(session, order_id=order_id, viewer=viewer)
    primary = order.patient.identifiers[0] if order.patient.identifiers else None
    links = order_links(session, settings, (order.id,)) if settings else {}
    return OrderDetail.model_validate({
        **OrderOut.model_validate(order).model_dump(),
        "viewer_url": links.get(order.id),
        "patient": _patient_out(order.patient, primary.value if primary else None,
                                primary.issuer if primary else None),
        "steps": [StepOut.model_validate(step) for step in order.steps],
    })


def _patient_out(patient: Patient, value: str | None, issuer: str | None) -> PatientOut:
    return PatientOut(id=patient.id, patient_id=value, issuer=issuer, name=patient.name,
                      birth_date=patient.birth_date, sex=patient.sex)
