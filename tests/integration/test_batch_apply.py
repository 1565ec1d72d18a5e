"""A batch applied in bulk leaves the database as the same messages applied one by one."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.services.hl7 import batch_apply
from bridge.services.hl7.ingest import Inbound
from bridge.store.db import make_engine, make_session_factory
from bridge.store.migrate import upgrade
from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep
from tests.conftest import hl7_fixture
from tests.hl7_harness import make_ingest

SEQUENCE = [
    "adt_a01_utf8", "adt_a04_8859_5", "adt_a08_update", "adt_a28_add", "adt_a31_update",
    "adt_a05_preadmit", "orm_o01_nw", "orm_o01_xo", "orm_o01_nw_minimal", "orm_o01_nw_2",
    "orm_o01_dc", "omi_o23_three_ipc", "enhanced_orm_nw", "adt_a40_merge", "bad_missing_pid3",
    "bad_unmapped_orc", "orm_o01_ca", "adt_a47_change_id",
]


def variants() -> list[bytes]:
    """Messages that touch the same patients and orders inside one batch."""
    base = hl7_fixture("orm_o01_nw.hl7")
    out = []
    for i in range(6):
        raw = base.replace(b"ORM0001", f"V{i:05d}".encode())
        raw = raw.replace(b"PLC1001", f"PLV{i % 3}".encode())        # orders repeat: NW as XO
        raw = raw.replace(b"ACC1001", f"ACV{i % 3}".encode())
        raw = raw.replace(b"P10001^", f"PV{i % 2}^".encode())          # patients repeat
        raw = raw.replace(b"20261122100000", f"2026112{i % 3}0{i}0000".encode())
        out.append(raw)
    # A new patient whose extra identifier belongs to another: the primary ID decides.
    out.append(hl7_fixture("adt_a01_utf8.hl7").replace(b"ADT0001", b"V10001")
               .replace(b"P10001^", b"PNEW^"))
    # An order that moves to another patient.
    out.append(base.replace(b"ORM0001", b"V20001").replace(b"PLC1001", b"PLV0")
               .replace(b"ACC1001", b"ACV0").replace(b"P10001^", b"PV9^"))
    # A completed order (per-message path) is not put back to SCHEDULED by a later NW/XO.
    out.append(hl7_fixture("orm_o01_sc_cm.hl7").replace(b"ORM0007", b"V40001")
               .replace(b"PLC1002", b"PLV1").replace(b"ACC1002", b"ACV1")
               .replace(b"SPS1002", b"SPS1001").replace(b"P10002^", b"PV1^"))
    out.append(base.replace(b"ORM0001", b"V40002").replace(b"PLC1001", b"PLV1")
               .replace(b"ACC1001", b"ACV1").replace(b"P10001^", b"PV1^")
               .replace(b"20261122100000", b"20261130090000"))
    # A known patient's name changes (A01 carries the older middle name).
    out.append(hl7_fixture("adt_a01_utf8.hl7").replace(b"ADT0001", b"V30001")
               .replace(b"P10001^", b"PV1^"))
    return out


def state(engine: Engine) -> dict[str, Any]:
    factory: sessionmaker[Session] = make_session_factory(engine)
    with factory() as s:
        patients = {}
        for p in s.execute(select(Patient)).scalars():
            ids = s.execute(select(PatientIdentifier.value, PatientIdentifier.issuer)
                            .where(PatientIdentifier.patient_id == p.id)).all()
            survivor = s.get(Patient, p.merged_into_id) if p.merged_into_id else None
            key = min((v, i) for v, i in ids)
            patients[key] = (p.name, p.birth_date, p.sex, sorted(ids),
                             _first_id(s, survivor.id) if survivor else None)
        orders = {}
        for o in s.execute(select(Order)).scalars():
            steps = s.execute(select(ProcedureStep).where(ProcedureStep.order_id == o.id)
                              .order_by(ProcedureStep.sps_id)).scalars().all()
            orders[o.placer_number] = (
                _first_id(s, o.patient_id), o.accession is not None, o.priority, o.status,
                o.reason, o.procedure_code, o.requested_procedure_id,
                [(st.sps_id, st.modality, st.start_date, st.start_time, st.status,
                  st.station_ae, st.protocol_codes) for st in steps])
        return {"patients": patients, "orders": orders}


def _first_id(s: Session, patient_id: int) -> tuple[str, str]:
    return min(s.execute(select(PatientIdentifier.value, PatientIdentifier.issuer)
                         .where(PatientIdentifier.patient_id == patient_id)).all())


def fresh(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    return engine


def test_bulk_equals_one_by_one(settings: Settings, engine: Engine, database_url: str,
                                tmp_path: Any) -> None:
    messages = [hl7_fixture(f"{n}.hl7") for n in SEQUENCE] + variants()
    bulk = make_ingest(settings, make_session_factory(engine))
    codes_bulk = [o.ack_code for o in bulk.handle_batch([Inbound(m) for m in messages])]

    if database_url.startswith("sqlite"):
        other_url = f"sqlite:///{tmp_path / 'one_by_one.db'}"
        other = fresh(other_url)
    else:
        # A second schema on the same server.
        from sqlalchemy import create_engine, text

        base, _, _ = database_url.partition("?")
        schema = f"one_by_one_{uuid.uuid4().hex[:8]}"  # concurrent runs must not collide
        admin = create_engine(base)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        other = fresh(f"{base}?options=-csearch_path%3D{schema}")
    try:
        single = make_ingest(settings, make_session_factory(other), bulk=False)
        codes_single = [single.handle_one(Inbound(m)).ack_code for m in messages]
        assert codes_bulk == codes_single
        assert state(engine) == state(other)
    finally:
        other.dispose()
        if not database_url.startswith("sqlite"):
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def test_a_batch_of_many_new_orders(settings: Settings,
                                    session_factory: sessionmaker[Session]) -> None:
    base = hl7_fixture("orm_o01_nw.hl7")
    batch = [Inbound(base.replace(b"ORM0001", f"M{i:05d}".encode())
                     .replace(b"PLC1001", f"PL{i:05d}".encode())
                     .replace(b"ACC1001", f"AC{i:05d}".encode())
                     .replace(b"P10001^", f"PM{i // 4}^".encode())) for i in range(100)]
    outcomes = make_ingest(settings, session_factory).handle_batch(batch)
    assert {o.ack_code for o in outcomes} == {"AA"}
    with session_factory() as s:
        assert len(s.execute(select(Order.id)).all()) == 100
        assert len(s.execute(select(ProcedureStep.id)).all()) == 100
        assert len(s.execute(select(Patient.id)).all()) == 25


def test_a_new_patient_claimed_by_another_writer_mid_batch(
        settings: Settings, session_factory: sessionmaker[Session],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the batch's reads and its writes, another patient takes the new patient's
    primary identifier. The bulk write fails on the unique key, nothing of the attempt is
    committed (on PostgreSQL the COMMIT travelled in that pipeline), and the batch runs
    again message by message: every message AA, one order per message, and the identifier
    belongs to the one patient that holds it."""
    ingest = make_ingest(settings, session_factory)
    base = hl7_fixture("orm_o01_nw.hl7")
    batch = [Inbound(base.replace(b"ORM0001", f"C{i:05d}".encode())
                     .replace(b"PLC1001", f"PLC{i:05d}".encode())
                     .replace(b"ACC1001", f"ACC{i:05d}".encode())) for i in range(3)]
    command = ingest.prepare(batch[0]).command
    assert command is not None
    primary = command.patient.primary
    original_load = batch_apply.BatchApplier.load
    raced: list[int] = []

    def load_then_lose_the_claim(self: batch_apply.BatchApplier, reads: Any) -> None:
        original_load(self, reads)
        if raced:
            return
        conn = self._conn  # the batch's own transaction: the claim is lost inside it
        rival = conn.execute(insert(Patient).values(name="RIVAL^WRITER", name_search="rival")
                             .returning(Patient.id)).scalar_one()
        conn.execute(insert(PatientIdentifier).values(
            patient_id=rival, value=primary.value, issuer=primary.issuer,
            id_type=primary.id_type, position=0))
        raced.append(rival)

    monkeypatch.setattr(batch_apply.BatchApplier, "load", load_then_lose_the_claim)
    outcomes = ingest.handle_batch(batch)
    assert raced, "the bulk path ran"
    assert [o.ack_code for o in outcomes] == ["AA"] * 3
    with session_factory() as s:
        names = s.execute(select(Patient.name)).scalars().all()
        assert len(names) == 1 and "RIVAL" not in names[0]
        owner = s.execute(select(PatientIdentifier.patient_id).where(
            PatientIdentifier.value == primary.value)).scalar_one()
        assert len(s.execute(select(Order.id).where(Order.patient_id == owner)).all()) == 3
