"""Order use cases: create, change, cancel, discontinue and status-update orders and steps.

The same rules serve HL7 (ORM/OMI), the HTTP API and, later, FHIR: an order is found by its
placer number, else its accession, else its filler number, so an order created by one channel
and changed by another stays one order when the identifiers agree.

Like :mod:`bridge.services.patients.mpi` this is on the HL7 hot path and uses SQLAlchemy Core
with statements built once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.uid import generate_uid
from sqlalchemy import Connection, and_, bindparam, insert, select, update
from sqlalchemy.orm import Session

from bridge.config.settings import Settings
from bridge.domain import (
    CLOSED_STATUSES,
    OrderAction,
    OrderCommand,
    OrderData,
    StepData,
    StepStatus,
)
from bridge.errors import MappingFailed, NotFound
from bridge.mapping.worklist import order_rules as rules
from bridge.services.patients.mpi import upsert_patient
from bridge.store.models import Order, ProcedureStep, table_of, utcnow

O = table_of(Order)  # noqa: E741 - the table, as in SQL
S = table_of(ProcedureStep)


_BY_PLACER = select(O).where(O.c.placer_number == bindparam("number"),
                             O.c.placer_issuer == bindparam("issuer"))
#: Placer or accession in one round trip (each side uses its own index); placer wins.
_BY_PLACER_OR_ACCESSION = select(O).where(
    and_(O.c.placer_number == bindparam("number"), O.c.placer_issuer == bindparam("issuer"))
    | (O.c.accession == bindparam("accession")))
_BY_ACCESSION = select(O).where(O.c.accession == bindparam("accession")).limit(1)
_BY_FILLER = select(O).where(O.c.filler_number == bindparam("number"),
                             O.c.filler_issuer == bindparam("issuer")).limit(1)
_STEPS = select(S.c.id, S.c.sps_id, S.c.status).where(S.c.order_id == bindparam("order_id"))
_INSERT_ORDER = insert(O).returning(O.c.id)
_INSERT_STEP = insert(S)


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
    conn = session.connection()
    order = _find(conn, data)
    if command.action in (OrderAction.NEW, OrderAction.CHANGE):
        patient_id = upsert_patient(session, command.patient)
        if order is None:
            return _create_order(conn, patient_id, command, policy)
        changes = rules.order_changes(order._mapping, data)
        if order.patient_id != patient_id:
            changes["patient_id"] = patient_id  # the MIS wins, also when it moves the order
        statuses = _upsert_steps(conn, order, data.steps, command.step_status)
        status = rules.order_status(statuses, order.status)
        if status != order.status:
            changes["status"] = status
        if changes:
            conn.execute(update(O).where(O.c.id == order.id).values(updated_at=utcnow(),
                                                                    **changes))
        return int(order.id)
    if order is None:
        raise NotFound(f"no order with placer number {data.placer_number or '-'} / "
                       f"accession {data.accession or '-'}", location="ORC-2")
    if command.patient.identifiers and command.patient.primary.value:
        upsert_patient(session, command.patient)
    steps = update(S).where(S.c.order_id == order.id).values(
        status=command.step_status.value, updated_at=utcnow())
    if command.action is not OrderAction.STATUS:
        steps = steps.where(S.c.status.not_in(rules.CLOSED))  # an ended step stays ended
    conn.execute(steps)
    conn.execute(update(O).where(O.c.id == order.id).values(
        status=command.step_status.value, updated_at=utcnow(),
        **rules.order_changes(order._mapping, data)))
    return int(order.id)


def find_order(session: Session, data: OrderData) -> Any:
    """The stored order row (``.id``, ``.accession``, ...) these identifiers name, or None."""
    return _find(session.connection(), data)


def _find(conn: Connection, data: OrderData) -> Any:
    if data.placer_number and data.accession:
        rows = conn.execute(_BY_PLACER_OR_ACCESSION, {
            "number": data.placer_number, "issuer": data.placer_issuer,
            "accession": data.accession}).all()
        for row in rows:
            if (row.placer_number, row.placer_issuer) == (data.placer_number, data.placer_issuer):
                return row
        if rows:
            return rows[0]
    elif data.placer_number:
        by_placer = conn.execute(_BY_PLACER, {"number": data.placer_number,
                                              "issuer": data.placer_issuer}).first()
        if by_placer is not None:
            return by_placer
    elif data.accession:
        by_accession = conn.execute(_BY_ACCESSION, {"accession": data.accession}).first()
        if by_accession is not None:
            return by_accession
    if data.filler_number:
        return conn.execute(_BY_FILLER, {"number": data.filler_number,
                                         "issuer": data.filler_issuer}).first()
    return None


#: Built once: constructing it per order cost a quarter of the FHIR intake's time.
_SET_GENERATED_ACCESSION = update(O).where(O.c.id == bindparam("order_id")).values(
    accession=bindparam("accession"), requested_procedure_id=bindparam("procedure_id"))


def _create_order(conn: Connection, patient_id: int, command: OrderCommand,
                  policy: OrderPolicy) -> int:
    data = command.order
    check_creatable(data, policy)
    values = new_order_values(data, policy)
    now = utcnow()
    values.update(patient_id=patient_id, source=command.source,
                  status=command.step_status.value, created_at=now, updated_at=now)
    order_id = int(conn.execute(_INSERT_ORDER, values).scalar_one())
    accession, procedure_id = values.get("accession"), values.get("requested_procedure_id")
    if not accession or not procedure_id:
        accession = accession or rules.generated_accession(policy.accession_prefix, order_id)
        procedure_id = procedure_id or accession
        conn.execute(_SET_GENERATED_ACCESSION, {"order_id": order_id, "accession": accession,
                                                "procedure_id": procedure_id})
    base = procedure_id or accession or str(order_id)
    steps = []
    for n, step in enumerate(data.steps, start=1):
        sps_id = step.sps_id or rules.generated_sps_id(base, n, len(data.steps))
        steps.append({**rules.new_step(step, sps_id, command.step_status), "order_id": order_id,
                      "updated_at": now})
    conn.execute(_INSERT_STEP, steps)
    return order_id


def check_creatable(data: OrderData, policy: OrderPolicy) -> None:
    if not data.accession and policy.accession == "reject":
        raise MappingFailed("accession number missing", location="OBR-18")
    if not data.steps:
        raise MappingFailed("order has no procedure step", location="OBR")


def new_order_values(data: OrderData, policy: OrderPolicy) -> dict[str, Any]:
    """The columns of a new order (a Study Instance UID generated by policy)."""
    values: dict[str, Any] = dict.fromkeys(rules.ORDER_FIELDS)
    values.update(procedure_code=None, procedure_scheme=None, procedure_meaning=None,
                  placer_issuer=data.placer_issuer, filler_issuer=data.filler_issuer)
    values.update(rules.order_said(data))
    if not values.get("study_instance_uid") and policy.study_uid == "generate":
        values["study_instance_uid"] = generate_uid(prefix=policy.uid_root + ".")
    return values


def _upsert_steps(conn: Connection, order: Any, steps: list[StepData],
                  status: StepStatus) -> list[str]:
    """Insert or update the order's steps; returns every step's status afterwards."""
    existing = {row.sps_id: row for row in conn.execute(_STEPS, {"order_id": order.id})}
    statuses = {sps_id: row.status for sps_id, row in existing.items()}
    base = order.requested_procedure_id or order.accession or str(order.id)
    new_rows = []
    now = utcnow()
    for index, data in enumerate(steps, start=1):
        sps_id = data.sps_id or rules.generated_sps_id(base, index, len(steps))
        row = rules.match_step(existing, data, sps_id, len(steps))
        if row is None:
            new_rows.append({**rules.new_step(data, sps_id, status), "order_id": order.id,
                             "updated_at": now})
            statuses[sps_id] = status.value
            continue
        values = rules.step_said(data)
        if not rules.keeps_status(row.status, status):
            values["status"] = status.value
            statuses[row.sps_id] = status.value
        conn.execute(update(S).where(S.c.id == row.id).values(updated_at=now, **values))
    if new_rows:
        conn.execute(_INSERT_STEP, new_rows)
    return list(statuses.values())


def complete_for_study(conn: Connection, order_id: int, modalities: Sequence[str]) -> int:
    """An order attached to a study that was already performed (it arrived after the images:
    no MPPS will come for it): its open steps of the study's modalities (or with none) are
    completed, and the order follows its steps as MPPS makes it do. Returns the steps
    completed."""
    closed = [s.value for s in CLOSED_STATUSES]
    now = utcnow()
    mods = [m for m in modalities if m]
    which = S.c.modality.is_(None) | (S.c.modality == "")
    if mods:
        which = which | S.c.modality.in_(mods)
    done = conn.execute(update(S).where(S.c.order_id == order_id, S.c.status.not_in(closed),
                                        which)
                        .values(status=StepStatus.COMPLETED.value, updated_at=now)).rowcount
    statuses = set(conn.execute(select(S.c.status).where(S.c.order_id == order_id)).scalars())
    if statuses and statuses <= set(closed):
        status = (StepStatus.COMPLETED if StepStatus.COMPLETED.value in statuses
                  else StepStatus.DISCONTINUED)
    else:
        status = StepStatus.STARTED
    if done:
        conn.execute(update(O).where(O.c.id == order_id).values(status=status.value,
                                                                updated_at=now))
    return int(done)
