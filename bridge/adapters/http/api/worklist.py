"""The worklist API: list steps (viewer); create, change and cancel orders (integration).

Writes go through :func:`bridge.services.worklist.orders.apply_order_command`, the same use case the
HL7 intake uses, so an order created here and changed by the MIS (or the other way round)
stays one order. The route commits on success; any error rolls the whole change back.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from bridge.adapters.http.access import ClinicianOrViewer
from bridge.adapters.http.api.schemas import (
    AETitle,
    DicomDate,
    ErrorBody,
    Modality,
    Offset,
    OrderCreate,
    OrderDetail,
    OrderUpdate,
    RowId,
    WorklistItem,
)
from bridge.adapters.http.api.worklist_query import find_worklist, load_order, order_detail
from bridge.adapters.http.deps import (
    AppContext,
    ContextDep,
    IntegrationToken,
    SessionDep,
)
from bridge.domain import (
    CLOSED_STATUSES,
    Identifier,
    OrderAction,
    OrderCommand,
    OrderData,
    PatientData,
    StepStatus,
)
from bridge.errors import Conflict
from bridge.services.worklist.orders import apply_order_command, find_order
from bridge.store.models import Order

router = APIRouter(prefix="/api/worklist", tags=["worklist"])
_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (404, 409, 422)
}
MAX_LIMIT = 1000


@router.get("", response_model=list[WorklistItem])
def list_worklist(
    session: SessionDep,
    context: ContextDep,
    principal: ClinicianOrViewer,
    station_ae: Annotated[AETitle | None, Query()] = None,
    modality: Annotated[Modality | None, Query()] = None,
    date: Annotated[DicomDate | None, Query(description="YYYYMMDD")] = None,
    date_from: Annotated[DicomDate | None, Query(alias="from",
                                                 description="YYYYMMDD, inclusive")] = None,
    date_to: Annotated[DicomDate | None, Query(alias="to",
                                               description="YYYYMMDD, inclusive")] = None,
    step_status: Annotated[list[StepStatus] | None, Query(
        alias="status", description="repeatable; default: every open status")] = None,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    accession: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Offset = 0,
) -> list[WorklistItem]:
    """Scheduled procedure steps with their order and patient, by date and time."""
    if date and (date_from or date_to):
        raise RequestValidationError([{
            "type": "value_error", "loc": ("query", "date"),
            "msg": "give either date or from/to, not both", "input": None,
        }])
    return find_worklist(
        session, station_ae=station_ae, modality=modality,
        date_from=date or date_from, date_to=date or date_to,
        statuses=[s.value for s in step_status] if step_status else None,
        patient_id=patient_id, accession=accession, limit=limit, offset=offset,
        viewer=principal.id if principal.is_clinician else None, settings=context.settings,
    )


@router.get("/{order_id}", response_model=OrderDetail, responses=_ERRORS)
def read_order(order_id: RowId, session: SessionDep, context: ContextDep,
               principal: ClinicianOrViewer) -> OrderDetail:
    """One order with its patient and all its steps, closed ones included (and a viewer
    link to its study when BRIDGE_RESOURCE_VIEWER_LINKS is set)."""
    return order_detail(session, order_id=order_id,
                        viewer=principal.id if principal.is_clinician else None,
                        settings=context.settings)


@router.post("", response_model=OrderDetail, status_code=status.HTTP_201_CREATED,
             responses=_ERRORS)
def create_order(body: OrderCreate, session: SessionDep, context: ContextDep,
                 _token: IntegrationToken, response: Response) -> OrderDetail:
    """Create an order and its steps; accession, study UID and SPS IDs are generated when
    missing (per the ``accession_policy`` and ``study_uid_policy`` settings)."""
    command = OrderCommand(
        action=OrderAction.NEW,
        patient=PatientData(
            identifiers=[i.to_domain() for i in body.patient.identifiers],
            name=body.patient.name, birth_date=body.patient.birth_date, sex=body.patient.sex,
        ),
        order=_with_fields(OrderData(
            placer_number=body.placer_number, placer_issuer=body.placer_issuer,
            filler_number=body.filler_number, filler_issuer=body.filler_issuer,
            steps=[step.to_domain() for step in body.steps],
        ), body),
        step_status=StepStatus(body.status),
        source="api",
    )
    if find_order(session, command.order) is not None:
        raise Conflict("an order with this placer number or accession exists; "
                       "change it with PATCH", location="placer_number")
    order_id = apply_order_command(session, command, policy=context.order_policy)
    session.commit()
    response.headers["Location"] = f"/api/worklist/{order_id}"
    return order_detail(session, order_id=order_id)


@router.patch("/{order_id}", response_model=OrderDetail, responses=_ERRORS)
def update_order(order_id: RowId, body: OrderUpdate, session: SessionDep, context: ContextDep,
                 _token: IntegrationToken) -> OrderDetail:
    """Change an order: absent fields are kept, ``""`` clears; steps match by ``sps_id``."""
    order = load_order(session, order_id=order_id)
    demographics = body.patient
    patient = _stored_patient(order)
    if demographics is not None:
        patient.name = demographics.name
        patient.birth_date = demographics.birth_date
        patient.sex = demographics.sex
    data = _with_fields(_keys_of(order), body)
    if not body.accession:  # an accession is changed, never cleared
        data.accession = order.accession
    data.steps = [step.to_domain() for step in body.steps or []]
    _apply_to(session, order_id, OrderCommand(
        action=OrderAction.CHANGE, patient=patient, order=data,
        step_status=StepStatus.SCHEDULED, source="api",
    ), context)
    return order_detail(session, order_id=order_id)


@router.post("/{order_id}/cancel", response_model=OrderDetail, responses=_ERRORS)
def cancel_order(order_id: RowId, session: SessionDep, context: ContextDep,
                 _token: IntegrationToken) -> OrderDetail:
    """Cancel every open step of the order; completed or discontinued steps stay as they are."""
    order = load_order(session, order_id=order_id)
    if all(step.status in CLOSED_STATUSES for step in order.steps):
        raise Conflict(f"order {order_id} has no open step to cancel", location="order_id")
    _apply_to(session, order_id, OrderCommand(
        action=OrderAction.CANCEL, patient=PatientData(identifiers=[]), order=_keys_of(order),
        step_status=StepStatus.CANCELED, source="api",
    ), context)
    return order_detail(session, order_id=order_id)


def _apply_to(session: Session, order_id: int, command: OrderCommand,
              context: AppContext) -> None:
    """Apply a change meant for ``order_id``; refuse it if the order's keys would find another
    order (or none), which happens when the accession of an order without placer number
    changes."""
    target = find_order(session, command.order)
    if target is None or target.id != order_id:
        raise Conflict("the accession of an order without placer number cannot be changed",
                       location="accession")
    applied_to = apply_order_command(session, command, policy=context.order_policy)
    assert applied_to == order_id
    session.commit()
    session.expire_all()


def _with_fields(data: OrderData, body: OrderCreate | OrderUpdate) -> OrderData:
    """``data`` with the order fields the body gives (None: not given, keep the stored one)."""
    data.accession = body.accession or None
    data.study_instance_uid = body.study_instance_uid
    data.requested_procedure_id = body.requested_procedure_id
    data.procedure_code = body.procedure_code.to_domain() if body.procedure_code else None
    data.procedure_description = body.procedure_description
    data.priority = body.priority
    data.reason = body.reason
    data.requesting_physician = body.requesting_physician
    data.referring_physician = body.referring_physician
    data.admission_id = body.admission_id
    return data


def _keys_of(order: Order) -> OrderData:
    """The identifiers :func:`bridge.services.worklist.orders.find_order` finds this order by."""
    return OrderData(
        placer_number=order.placer_number, placer_issuer=order.placer_issuer,
        filler_number=order.filler_number, filler_issuer=order.filler_issuer,
        accession=order.accession,
    )


def _stored_patient(order: Order) -> PatientData:
    """The order's patient by primary identifier only: nothing about the patient changes."""
    identifiers = [Identifier(i.value, i.issuer, i.id_type) for i in order.patient.identifiers[:1]]
    return PatientData(identifiers=identifiers)
