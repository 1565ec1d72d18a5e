"""Build worklist data for tests and benchmarks.

:func:`schedule` inserts one patient + order + step with the ORM (readable tests);
:func:`bulk_schedule` inserts many with Core ``insert`` statements (benchmarks, query plans).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.orm import Session

from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep

_counter = itertools.count(1)

MODALITIES = ("CT", "MR", "US", "CR", "DX", "MG")


def add_patient(
    session: Session,
    name: str = "Test^Patient",
    ids: Sequence[tuple[str, str]] = (),
    *,
    birth_date: str | None = "19800101",
    sex: str | None = "F",
) -> Patient:
    """A patient with identifiers ``[(value, issuer), ...]``; the first one is primary."""
    patient = Patient(name=name, name_search=name.casefold(), birth_date=birth_date, sex=sex)
    session.add(patient)
    session.flush()
    for position, (value, issuer) in enumerate(ids or [(f"PID{next(_counter)}", "")]):
        session.add(
            PatientIdentifier(
                patient_id=patient.id, value=value, issuer=issuer, id_type="MR", position=position
            )
        )
    session.flush()
    return patient


def add_order(session: Session, patient: Patient, **fields: Any) -> Order:
    n = next(_counter)
    values: dict[str, Any] = {
        "placer_number": f"PL{n}",
        "filler_number": f"FL{n}",
        "accession": f"ACC{n}",
        "study_instance_uid": f"1.2.826.0.1.3680043.10.1137.9.{n}",
        "requested_procedure_id": f"RP{n}",
        "priority": "ROUTINE",
    }
    values.update(fields)
    order = Order(patient_id=patient.id, **values)
    session.add(order)
    session.flush()
    return order


def add_step(session: Session, order: Order, **fields: Any) -> ProcedureStep:
    n = next(_counter)
    values: dict[str, Any] = {
        "sps_id": f"SPS{n}",
        "station_ae": "CT1",
        "modality": "CT",
        "start_date": "20261122",
        "start_time": "090000",
        "status": "SCHEDULED",
        "protocol_codes": [],
    }
    values.update(fields)
    step = ProcedureStep(order_id=order.id, **values)
    session.add(step)
    session.flush()
    return step


def schedule(
    session: Session,
    *,
    name: str = "Test^Patient",
    ids: Sequence[tuple[str, str]] = (),
    patient: Patient | None = None,
    order: dict[str, Any] | None = None,
    **step_fields: Any,
) -> ProcedureStep:
    """One worklist item: a patient (new unless given), an order and a step."""
    if patient is None:
        patient = add_patient(session, name, ids)
    new_order = add_order(session, patient, **(order or {}))
    return add_step(session, new_order, **step_fields)


@dataclass(frozen=True, slots=True)
class BulkPlan:
    steps: int
    stations: int = 30
    days: int = 365
    first_day: date = date(2026, 1, 1)
    seed: int = 1137
    #: Primary keys are given explicitly (bulk inserts); PostgreSQL sequences do not move,
    #: so a test mixing ORM inserts should start these far above them.
    first_id: int = 1


def bulk_schedule(conn: Connection, plan: BulkPlan, *, batch: int = 5000) -> None:
    """``plan.steps`` steps, one patient and one order each, spread over stations,
    modalities and days. Deterministic for a seed, so benchmarks compare like with like."""
    rng = random.Random(plan.seed)
    for chunk in _chunks(range(plan.first_id, plan.first_id + plan.steps), batch):
        patients, identifiers, orders, steps = [], [], [], []
        for n in chunk:
            station = rng.randrange(plan.stations)
            day = plan.first_day + timedelta(days=rng.randrange(plan.days))
            name = f"Patient{n}^Test"
            patients.append({"id": n, "name": name, "name_search": name.casefold(),
                             "birth_date": "19700101", "sex": "M" if n % 2 else "F"})
            identifiers.append({"id": n, "patient_id": n, "value": bulk_patient_id(n),
                                "issuer": "HOSP", "id_type": "MR", "position": 0})
            orders.append({"id": n, "patient_id": n, "placer_number": f"PL{n}",
                           "placer_issuer": "", "filler_issuer": "", "filler_number": f"FL{n}",
                           "accession": f"A{n}", "requested_procedure_id": f"RP{n}",
                           "study_instance_uid": f"1.2.826.0.1.3680043.10.1137.8.{n}",
                           "priority": "ROUTINE", "status": "SCHEDULED", "source": "bench",
                           "procedure_code": "P1", "procedure_scheme": "L",
                           "procedure_meaning": "Procedure",
                           "procedure_description": "Procedure"})
            steps.append({"id": n, "order_id": n, "sps_id": f"S{n}",
                          "station_ae": bulk_station(station),
                          "station_name": f"ST{station}",
                          "modality": MODALITIES[station % len(MODALITIES)],
                          "start_date": day.strftime("%Y%m%d"),
                          "start_time": _time(rng),
                          "description": "Procedure", "status": "SCHEDULED",
                          "protocol_codes": [{"code": "P1", "scheme": "L", "meaning": "Proc"}]})
        conn.execute(insert(Patient), patients)
        conn.execute(insert(PatientIdentifier), identifiers)
        conn.execute(insert(Order), orders)
        conn.execute(insert(ProcedureStep), steps)


def _time(rng: random.Random) -> str:
    return f"{rng.randrange(7, 20):02d}{rng.randrange(0, 60, 5):02d}00"


def bulk_station(index: int) -> str:
    return f"STATION{index:02d}"


def bulk_patient_id(n: int) -> str:
    return f"P{n:07d}"


def bulk_modality(station_index: int) -> str:
    return MODALITIES[station_index % len(MODALITIES)]


def _chunks(items: range, size: int) -> Iterator[range]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
