"""The HL7 use cases against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.domain import Identifier
from bridge.services.hl7.ingest import HL7Ingest, Inbound
from bridge.services.patients.mpi import resolve_patient
from bridge.store.models import HL7Message, Order, Patient, PatientIdentifier, ProcedureStep
from tests.conftest import hl7_fixture
from tests.hl7_harness import make_ingest

HOSP = "KYIV_CITY_HOSP_1"


def send(ingest: HL7Ingest, *names: str) -> list[str]:
    return [ingest.handle_one(Inbound(hl7_fixture(f"{n}.hl7"))).ack_code for n in names]


def count(session: Session, model: type) -> int:
    return session.execute(select(func.count()).select_from(model)).scalar_one()


def test_adt_creates_then_updates_one_patient(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    assert send(ingest, "adt_a01_utf8", "adt_a08_update") == ["AA", "AA"]
    with session_factory() as s:
        assert count(s, Patient) == 1
        patient = s.execute(select(Patient)).scalar_one()
        assert patient.name == "Ґалаґан^Олена^Павлівна"
        assert patient.name_search == "ґалаґан^олена^павлівна"
        assert patient.birth_date == "19850315"
        idents = s.execute(select(PatientIdentifier).order_by(PatientIdentifier.position)).scalars()
        assert [(i.value, i.issuer, i.position) for i in idents] == [
            ("P10001", HOSP, 0), ("1234567890", "UA_ESOZ", 1), ("АА123456", "UA_PASSPORT", 2)]


def test_8859_5_and_a28_a31_a05(settings: Settings,
                                session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    assert send(ingest, "adt_a04_8859_5", "adt_a28_add", "adt_a31_update",
                "adt_a05_preadmit") == ["AA"] * 4
    with session_factory() as s:
        names = set(s.execute(select(Patient.name)).scalars())
        assert any(n.startswith("Шевченко^Тарас") for n in names)
        assert count(s, Patient) == 3
        p3 = resolve_patient(s, Identifier("P10003", HOSP))
        patient = s.get(Patient, p3)
        assert patient is not None and (patient.sex, patient.birth_date) == ("F", "19920717")


def test_order_lifecycle_nw_xo_ca(settings: Settings,
                                  session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    assert send(ingest, "orm_o01_nw") == ["AA"]
    with session_factory() as s:
        order = s.execute(select(Order)).scalar_one()
        assert (order.accession, order.priority, order.status) == ("ACC1001", "STAT", "SCHEDULED")
        step = s.execute(select(ProcedureStep)).scalar_one()
        assert (step.sps_id, step.start_time, step.station_ae) == ("SPS1001", "100000",
                                                                   "CT_SCANNER_1")
    assert send(ingest, "orm_o01_xo") == ["AA"]
    with session_factory() as s:
        step = s.execute(select(ProcedureStep)).scalar_one()
        assert step.start_time == "113000"
        assert s.execute(select(Order.priority)).scalar_one() == "ROUTINE"
        assert count(s, Order) == 1
    assert send(ingest, "orm_o01_ca") == ["AA"]
    with session_factory() as s:
        assert s.execute(select(ProcedureStep.status)).scalar_one() == "CANCELED"
        assert s.execute(select(Order.status)).scalar_one() == "CANCELED"


def test_dc_and_sc_cm(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    assert send(ingest, "orm_o01_nw_2", "orm_o01_dc") == ["AA", "AA"]
    with session_factory() as s:
        assert s.execute(select(ProcedureStep.status)).scalar_one() == "DISCONTINUED"
    assert send(ingest, "orm_o01_sc_cm") == ["AA"]
    with session_factory() as s:
        assert s.execute(select(ProcedureStep.status)).scalar_one() == "COMPLETED"


def test_cancel_of_unknown_order_is_ae_and_changes_nothing(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    outcome = ingest.handle_one(Inbound(hl7_fixture("orm_o01_ca.hl7")))
    assert (outcome.ack_code, outcome.error_location) == ("AE", "ORC-2")
    with session_factory() as s:
        assert count(s, Order) == 0
        assert count(s, Patient) == 0  # the savepoint rolled the patient back too
        assert s.execute(select(HL7Message.status)).scalar_one() == "error"


def test_omi_three_ipc_three_steps_one_study(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    assert send(ingest, "omi_o23_three_ipc") == ["AA"]
    with session_factory() as s:
        steps = s.execute(select(ProcedureStep).order_by(ProcedureStep.sps_id)).scalars().all()
        assert [(st.sps_id, st.modality) for st in steps] == [
            ("SPS2001", "CT"), ("SPS2002", "CT"), ("SPS2003", "MR")]
        assert count(s, Order) == 1


def test_generated_accession_and_study_uid(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    assert send(ingest, "orm_o01_nw_minimal") == ["AA"]
    with session_factory() as s:
        order = s.execute(select(Order)).scalar_one()
        assert order.accession is not None and order.accession.startswith("BR")
        assert len(order.accession) <= 16
        assert order.study_instance_uid is not None
        assert order.study_instance_uid.startswith(settings.uid_root + ".")
        assert len(order.study_instance_uid) <= 64


def test_reject_policy_for_missing_accession(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    strict = settings.model_copy(update={"accession_policy": "reject"})
    outcome = make_ingest(strict, session_factory).handle_one(
        Inbound(hl7_fixture("orm_o01_nw_minimal.hl7")))
    assert (outcome.ack_code, outcome.error_location) == ("AE", "OBR-18")


def test_a40_merge_moves_orders_and_prior_id_resolves(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    assert send(ingest, "adt_a01_utf8", "adt_a28_add") == ["AA", "AA"]
    # An order for the prior patient, placed before the merge.
    with session_factory() as s:
        prior_id = resolve_patient(s, Identifier("P10003", HOSP))
    assert send(ingest, "orm_o01_nw") == ["AA"]
    with session_factory() as s, s.begin():
        s.execute(Order.__table__.update().values(patient_id=prior_id))
    assert send(ingest, "adt_a40_merge") == ["AA"]
    with session_factory() as s:
        survivor = resolve_patient(s, Identifier("P10001", HOSP))
        assert resolve_patient(s, Identifier("P10003", HOSP)) == survivor
        assert set(s.execute(select(Order.patient_id)).scalars()) == {survivor}
        prior = s.get(Patient, prior_id)
        assert prior is not None and prior.merged_into_id == survivor


def test_a47_changes_the_identifier(settings: Settings,
                                    session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    assert send(ingest, "adt_a04_8859_5", "adt_a47_change_id") == ["AA", "AA"]
    with session_factory() as s:
        assert resolve_patient(s, Identifier("P10002", HOSP)) is None
        assert resolve_patient(s, Identifier("P20002", HOSP)) is not None
    # The old ID is gone: a second A47 for it names MRG-1.
    outcome = ingest.handle_one(Inbound(hl7_fixture("adt_a47_change_id.hl7").replace(
        b"ADT0008", b"ADT0108")))
    assert (outcome.ack_code, outcome.error_location) == ("AE", "MRG-1")


def test_duplicate_gets_stored_ack_and_is_not_processed_again(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    first = ingest.handle_one(Inbound(hl7_fixture("orm_o01_nw.hl7")))
    assert send(ingest, "orm_o01_ca") == ["AA"]
    again = ingest.handle_one(Inbound(hl7_fixture("orm_o01_nw.hl7")))
    assert again.duplicate
    assert again.replies == first.replies
    with session_factory() as s:
        # Not processed again: the cancel stands, one order, one log row per control ID.
        assert s.execute(select(ProcedureStep.status)).scalar_one() == "CANCELED"
        assert count(s, HL7Message) == 2


def test_every_message_is_logged_with_raw_bytes_and_ack(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    names = ["adt_a04_8859_5", "bad_missing_pid3", "bad_unknown_type", "bad_no_msh"]
    codes = send(ingest, *names)
    assert codes == ["AA", "AE", "AR", "AR"]
    with session_factory() as s:
        rows = s.execute(select(HL7Message).order_by(HL7Message.id)).scalars().all()
        assert [r.raw for r in rows] == [hl7_fixture(f"{n}.hl7") for n in names]
        assert [r.status for r in rows] == ["processed", "error", "rejected", "rejected"]
        assert rows[0].charset == "iso-8859-5" and rows[0].text is not None
        assert "Шевченко" in rows[0].text
        assert all(r.ack for r in rows)
        assert rows[1].error_location == "PID-3"


def test_batch_with_failures_keeps_the_good_ones(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    outcomes = ingest.handle_batch([Inbound(hl7_fixture(f"{n}.hl7")) for n in (
        "orm_o01_nw", "bad_unmapped_orc", "orm_o01_nw_2", "orm_o01_nw")])
    assert [o.ack_code for o in outcomes] == ["AA", "AE", "AA", "AA"]
    assert outcomes[3].duplicate
    with session_factory() as s:
        assert count(s, Order) == 2
        assert count(s, HL7Message) == 3


def test_an_msh_without_field_separator_is_rejected_and_logged(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    """'MSH' then the end of its line: no header to read, but still an answer (AR) and a
    log row, never an exception out of the intake (which would ask the sender to resend)."""
    raw = b"MSH\rPID|||P1||DOE^JOHN\r"
    ingest = make_ingest(settings, session_factory)
    prepared = ingest.prepare(Inbound(raw))
    assert prepared.header is None and prepared.error is not None
    [outcome] = ingest.handle_prepared([prepared])
    assert (outcome.ack_code, outcome.status) == ("AR", "rejected")
    with session_factory() as s:
        row = s.execute(select(HL7Message)).scalar_one()
        assert row.raw == raw and row.status == "rejected"


def test_concurrent_messages_for_one_new_patient_create_one_patient(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    """Two independent writers (as two bridge processes would be) race on one new patient."""
    template = hl7_fixture("adt_a01_utf8.hl7")
    writers = [make_ingest(settings, session_factory) for _ in range(4)]
    barrier = threading.Barrier(len(writers))
    codes: list[str] = []

    def run(index: int, ingest: HL7Ingest) -> None:
        raw = template.replace(b"ADT0001", f"RACE{index:04d}".encode())
        barrier.wait()
        codes.append(ingest.handle_one(Inbound(raw)).ack_code)

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(codes) == ["AA"] * len(writers)
    with session_factory() as s:
        assert count(s, Patient) == 1
        assert count(s, PatientIdentifier) == 3


def test_reprocess_after_fixing_the_sender_charset(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    outcome = make_ingest(settings, session_factory).handle_one(
        Inbound(hl7_fixture("orm_o01_win1251.hl7")))
    assert outcome.ack_code == "AR"
    fixed = settings.model_copy(update={"hl7_sender_charsets": {"OLD_MIS": "cp1251"}})
    with session_factory() as s:
        message_id = s.execute(select(HL7Message.id)).scalar_one()
    result = make_ingest(fixed, session_factory).reprocess(message_id)
    assert (result.status, result.ack_code) == ("processed", "AA")
    with session_factory() as s:
        row = s.get(HL7Message, message_id)
        assert row is not None and row.status == "processed" and row.attempts == 2
        assert s.execute(select(Patient.name)).scalar_one().startswith("Ковальчук^Ірина")


def test_database_down_is_answered_ar_and_nothing_claims_acceptance(settings: Settings) -> None:
    """When the message cannot be committed, the sender is told to resend (AR), never AA."""
    from bridge.store.db import make_engine, make_session_factory
    from tests.conftest import free_port

    dead = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
                       connect_args={"connect_timeout": 2})
    ingest = make_ingest(settings, make_session_factory(dead))
    outcome = ingest.handle_one(Inbound(hl7_fixture("orm_o01_nw.hl7")))
    assert (outcome.status, outcome.ack_code) == ("unstored", "AR")
    assert "MSA|AR|ORM0001" in outcome.replies[0]
    assert "resend later" in outcome.replies[0]
    enhanced = ingest.handle_one(Inbound(hl7_fixture("enhanced_orm_nw.hl7")))
    assert enhanced.ack_code == "CE"
    dead.dispose()
