"""Modality Worklist SCP over real sockets: DCMTK findscu and a pynetdicom client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
)
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom import find_transport
from bridge.config.settings import DicomPeer, Settings
from bridge.store.models import Order, Patient, ProcedureStep
from tests.dicom_harness import (
    StartServer,
    c_find,
    c_find_cancelled,
    dicom_servers,
    findscu,
)
from tests.worklist_factories import BulkPlan, add_patient, bulk_schedule, schedule

pytestmark = pytest.mark.integration

MWL = ModalityWorklistInformationFind


@pytest.fixture
def start_server(settings: Settings, session_factory: sessionmaker[Session]
                 ) -> Iterator[StartServer]:
    with dicom_servers(settings, session_factory) as start:
        yield start


@pytest.fixture
def seeded(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        schedule(s, name="Ґалаґан^Олена", ids=[("UA100", "HOSP"), ("NI555", "NATIONAL")],
                 order={"accession": "ACCG", "procedure_code": "CTHEAD",
                        "procedure_scheme": "LOCAL", "procedure_meaning": "КТ голови",
                        "reason": "Головний біль", "referring_physician": "Франко^Іван"},
                 station_ae="CT1", modality="CT", start_date="20261122", start_time="090000",
                 protocol_codes=[{"code": "P1", "scheme": "LOCAL", "meaning": "Протокол"}])
        schedule(s, name="Galant^Ivan", ids=[("UA200", "HOSP")], order={"accession": "ACCI"},
                 station_ae="CT1", modality="CT", start_date="20261123", start_time="140000")
        schedule(s, name="Petrenko^Petro", ids=[("UA300", "HOSP")],
                 order={"accession": "ACCP"}, station_ae="MR1", modality="MR",
                 start_date="20261122", start_time="100000")
        # Out of range, and closed steps that must never be offered.
        schedule(s, name="Later^Case", station_ae="CT1", start_date="20261130")
        for status in ("CANCELED", "COMPLETED", "DISCONTINUED"):
            schedule(s, name=f"Closed^{status}", station_ae="CT1", start_date="20261122",
                     status=status, order={"accession": f"X{status[:5]}"})
        # A40: OLD1 merged into NEW1; the order already moved to the survivor.
        survivor = add_patient(s, "Survivor^Sam", [("NEW1", "HOSP")])
        prior = add_patient(s, "Prior^Sam", [("OLD1", "HOSP")])
        prior.merged_into_id = survivor.id
        schedule(s, patient=survivor, order={"accession": "ACCM"}, station_ae="CT2",
                 start_date="20261124")


def find(port: int, identifier: Dataset, calling_ae: str = "MODALITY") -> list[Dataset]:
    """pynetdicom client: the pending identifiers; asserts the final status is success."""
    status, results = c_find(port, identifier, MWL, calling_ae)
    assert status == 0x0000, hex(status)
    return results


def query(sps: dict[str, str] | None = None, **top: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    item = Dataset()
    item.ScheduledStationAETitle = ""
    item.ScheduledProcedureStepStartDate = ""
    item.Modality = ""
    item.ScheduledProcedureStepStatus = ""
    for keyword, value in (sps or {}).items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def accessions(results: list[Dataset]) -> list[str]:
    return sorted(str(ds.AccessionNumber) for ds in results)


@pytest.mark.usefixtures("seeded")
def test_findscu_station_and_date_range_in_utf8(start_server: StartServer,
                                                 tmp_path: Path) -> None:
    server = start_server()
    results = findscu(server.port, "-W", [
        "(0008,0005)=ISO_IR 192", "PatientName", "PatientID", "AccessionNumber",
        "(0040,0100)[0].ScheduledStationAETitle=CT1",
        "(0040,0100)[0].ScheduledProcedureStepStartDate=20261122-20261123",
        "(0040,0100)[0].ScheduledProcedureStepStartTime",
        "(0040,0100)[0].Modality",
    ], tmp_path / "rsp")
    assert accessions(results) == ["ACCG", "ACCI"]
    galagan = next(ds for ds in results if ds.AccessionNumber == "ACCG")
    assert galagan.SpecificCharacterSet == "ISO_IR 192"
    assert str(galagan.PatientName) == "Ґалаґан^Олена"
    assert galagan.ScheduledProcedureStepSequence[0].Modality == "CT"


@pytest.mark.usefixtures("seeded")
def test_findscu_cyrillic_name_wildcard_is_case_insensitive(start_server: StartServer,
                                                             tmp_path: Path) -> None:
    server = start_server()
    results = findscu(server.port, "-W", ["(0008,0005)=ISO_IR 192", "PatientName=ҐАЛАҐ*",
                                          "AccessionNumber"], tmp_path / "rsp")
    assert [str(ds.PatientName) for ds in results] == ["Ґалаґан^Олена"]


@pytest.mark.usefixtures("seeded")
def test_modality_and_date(start_server: StartServer) -> None:
    port = start_server().port
    results = find(port, query({"Modality": "MR", "ScheduledProcedureStepStartDate": "20261122"}))
    assert accessions(results) == ["ACCP"]


@pytest.mark.usefixtures("seeded")
def test_patient_id_with_issuer_and_accession(start_server: StartServer) -> None:
    port = start_server().port
    assert accessions(find(port, query(PatientID="UA100", IssuerOfPatientID="HOSP"))) == ["ACCG"]
    assert find(port, query(PatientID="UA100", IssuerOfPatientID="OTHER")) == []
    assert accessions(find(port, query(AccessionNumber="ACCI"))) == ["ACCI"]


@pytest.mark.usefixtures("seeded")
def test_question_mark_and_name_wildcards(start_server: StartServer) -> None:
    port = start_server().port
    assert accessions(find(port, query(PatientID="UA?00"))) == ["ACCG", "ACCI", "ACCP"]
    assert accessions(find(port, query(PatientName="gal*"))) == ["ACCI"]
    utf8 = query(PatientName="ґалаґан^олена")
    utf8.SpecificCharacterSet = "ISO_IR 192"
    assert accessions(find(port, utf8)) == ["ACCG"]


@pytest.mark.usefixtures("seeded")
def test_every_requested_key_is_returned(start_server: StartServer) -> None:
    port = start_server().port
    ds = query(AccessionNumber="ACCG")
    for keyword in ("IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedurePriority",
                    "ReasonForTheRequestedProcedure", "ReferringPhysicianName",
                    "RequestingPhysician", "AdmissionID",
                    "PlacerOrderNumberImagingServiceRequest",
                    "FillerOrderNumberImagingServiceRequest"):
        setattr(ds, keyword, "")
    ds.OtherPatientIDsSequence = []
    ds.RequestedProcedureCodeSequence = []
    ds.add_new(0x00101030, "DS", None)  # PatientWeight: not ours to know
    ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = []
    ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID = ""
    [result] = find(port, ds)
    for elem in ds:
        assert elem.tag in result, elem
    assert 0x00101030 in result and not result[0x00101030].value
    assert result.OtherPatientIDsSequence[0].PatientID == "NI555"
    assert result.RequestedProcedureCodeSequence[0].CodeValue == "CTHEAD"
    sps = result.ScheduledProcedureStepSequence[0]
    assert sps.ScheduledProtocolCodeSequence[0].CodeMeaning == "Протокол"
    assert sps.ScheduledProcedureStepID and sps.ScheduledProcedureStepStatus == "SCHEDULED"


@pytest.mark.usefixtures("seeded")
def test_closed_steps_are_never_offered(start_server: StartServer) -> None:
    port = start_server().port
    results = find(port, query({"ScheduledStationAETitle": "CT1"}))
    assert {"ACCG", "ACCI"} <= set(accessions(results))
    assert not [ds for ds in results if str(ds.AccessionNumber).startswith("X")]
    assert all(ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "SCHEDULED"
               for ds in results)


@pytest.mark.usefixtures("seeded")
def test_merged_away_patient_id_finds_the_survivors_items(start_server: StartServer) -> None:
    port = start_server().port
    [result] = find(port, query(PatientID="OLD1"))
    assert result.AccessionNumber == "ACCM"
    assert result.PatientID == "NEW1"
    assert str(result.PatientName) == "Survivor^Sam"


@pytest.mark.usefixtures("seeded")
def test_an_order_left_on_the_merged_patient_shows_the_survivor(
    start_server: StartServer, session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as s:
        prior = s.query(Patient).filter_by(name="Prior^Sam").one()
        schedule(s, patient=prior, order={"accession": "ACCL"}, station_ae="CT9")
    [result] = find(start_server().port, query({"ScheduledStationAETitle": "CT9"}))
    assert (result.PatientID, str(result.PatientName)) == ("NEW1", "Survivor^Sam")


@pytest.mark.usefixtures("seeded")
def test_latin_only_peer_gets_transliterated_names(start_server: StartServer,
                                                    tmp_path: Path) -> None:
    server = start_server(dicom_peers=(DicomPeer(ae_title="OLDCT", latin_only=True),))
    results = findscu(server.port, "-W", ["PatientName", "AccessionNumber=ACCG",
                                          "ReasonForTheRequestedProcedure"],
                      tmp_path / "rsp", aet="OLDCT")
    [result] = results
    assert str(result.PatientName) == "Galagan^Olena"
    assert result.ReasonForTheRequestedProcedure == "Holovnyi bil"
    assert not result.get("SpecificCharacterSet")


def test_strict_peers_reject_an_unknown_calling_ae(start_server: StartServer) -> None:
    server = start_server(dicom_strict_peers=True, dicom_peers=(
        DicomPeer(ae_title="KNOWN"), DicomPeer(ae_title="FARAWAY", host="192.0.2.10")))
    for calling_ae, accepted in (("KNOWN", True), ("STRANGER", False), ("FARAWAY", False)):
        ae = AE(ae_title=calling_ae)
        ae.add_requested_context(MWL)
        assoc = ae.associate("127.0.0.1", server.port, ae_title="BRIDGE")
        assert assoc.is_established is accepted, calling_ae
        if accepted:
            assoc.release()
        else:
            assert assoc.is_rejected
            assert assoc.acceptor.primitive is not None
            assert assoc.acceptor.primitive.diagnostic == 0x03  # calling AE not recognized


def test_c_cancel_stops_the_results(start_server: StartServer,
                                    session_factory: sessionmaker[Session]) -> None:
    """Cancelled after the first response of 20,000 (the client reading through a small
    window, see ``c_find_cancelled``): Pending responses already on their way may follow,
    then Cancel; never all of them, never Success. (The kernel buffers at most ~4 MB of the
    server's responses, about 14,000 of these: past that it must wait for the client, and
    sees the cancel.)"""
    with session_factory.begin() as s:
        bulk_schedule(s.connection(), BulkPlan(steps=20000, stations=1, days=1))
    port = start_server().port
    first, rest = c_find_cancelled(port, query({"ScheduledStationAETitle": "STATION00"}), MWL,
                                   "MODALITY")
    assert first == 0xFF00
    assert rest[-1] == 0xFE00
    assert set(rest[:-1]) <= {0xFF00}
    assert len(rest) < 20000


# --- Many responses: written in batches straight to the socket (find_transport) -----------

MANY = 300


@pytest.fixture
def many(session_factory: sessionmaker[Session]) -> list[str]:
    """MANY open steps on one station and day; their accessions in scheduled order."""
    with session_factory.begin() as s:
        bulk_schedule(s.connection(), BulkPlan(steps=MANY, stations=1, days=1,
                                               first_id=10_000))
    with session_factory() as s:
        rows = s.execute(select(Order.accession).join(ProcedureStep)
                         .order_by(ProcedureStep.start_date, ProcedureStep.start_time,
                                   ProcedureStep.id)).scalars().all()
    return [str(accession) for accession in rows]


def station_query() -> Dataset:
    ds = query({"ScheduledStationAETitle": "STATION00"})
    ds.StudyInstanceUID = ""
    ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = []
    return ds


def check_many(results: list[Dataset], expected: list[str]) -> None:
    """Complete (every key, every item) and in the scheduled order."""
    assert [str(ds.AccessionNumber) for ds in results] == expected
    for ds in results:
        n = int(str(ds.AccessionNumber)[1:])
        assert str(ds.PatientName) == f"Patient{n}^Test"
        assert ds.StudyInstanceUID == f"1.2.826.0.1.3680043.10.1137.8.{n}"
        [sps] = ds.ScheduledProcedureStepSequence
        assert sps.ScheduledStationAETitle == "STATION00"
        [code] = sps.ScheduledProtocolCodeSequence
        assert code.CodeValue == "P1"


def test_many_responses_arrive_complete_and_in_order(start_server: StartServer,
                                                     many: list[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    flush = find_transport.FindResponseStream.flush

    def counted(stream: find_transport.FindResponseStream) -> None:
        writes.append(stream.buffered)
        flush(stream)

    monkeypatch.setattr(find_transport.FindResponseStream, "flush", counted)
    check_many(find(start_server().port, station_query()), many)
    # Written by the batch writer: the first response alone, then growing batches.
    assert writes[0] == 1
    assert sum(writes) == MANY
    assert len(writes) < MANY // 4


@pytest.mark.parametrize("max_pdu", [0, 512, 128], ids=["unlimited", "512", "128"])
def test_several_finds_on_one_association_whatever_the_maximum_pdu(
        start_server: StartServer, many: list[str], max_pdu: int) -> None:
    """A response larger than the SCU's maximum PDU length is fragmented; the next C-FIND
    on the same association is answered after the previous one's final response."""
    port = start_server().port
    ae = AE(ae_title="MODALITY")
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", port, ae_title="BRIDGE")
    assert assoc.is_established
    try:
        for msg_id in (1, 2, 3):
            *pending, (final, _) = list(assoc.send_c_find(station_query(), MWL, msg_id=msg_id))
            assert final.Status == 0x0000
            assert all(status.Status == 0xFF00 for status, _ in pending)
            check_many([ds for _, ds in pending], many)
    finally:
        assoc.release()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian])
def test_many_responses_in_every_transfer_syntax(start_server: StartServer, many: list[str],
                                                 syntax: str) -> None:
    port = start_server().port
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MWL, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="BRIDGE")
    assert assoc.is_established
    try:
        *pending, (final, _) = list(assoc.send_c_find(station_query(), MWL))
    finally:
        assoc.release()
    assert final.Status == 0x0000
    check_many([ds for _, ds in pending], many)


def test_findscu_gets_many_responses_in_order(start_server: StartServer, many: list[str],
                                              tmp_path: Path) -> None:
    results = findscu(start_server().port, "-W",
                      ["PatientName", "AccessionNumber", "StudyInstanceUID",
                       "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=STATION00",
                       "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence"],
                      tmp_path / "rsp")
    check_many(results, many)


def test_pynetdicoms_own_response_path_still_answers(start_server: StartServer,
                                                     many: list[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With a pynetdicom version the direct writer was not verified against, responses go
    through pynetdicom's DIMSE layer instead."""
    monkeypatch.setattr(find_transport, "VERIFIED_PYNETDICOM", frozenset())
    check_many(find(start_server().port, station_query()), many)



def test_a_modality_gone_mid_stream_leaves_the_server_answering(
        start_server: StartServer, session_factory: sessionmaker[Session]) -> None:
    """Aborted (and its socket closed) after the first of 3,000 responses: the writer's
    send fails or the association ends, and the next modality is answered as usual."""
    with session_factory.begin() as s:
        bulk_schedule(s.connection(), BulkPlan(steps=3000, stations=1, days=1))
    port = start_server().port
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", port, ae_title="BRIDGE")
    assert assoc.is_established
    responses = assoc.send_c_find(query({"ScheduledStationAETitle": "STATION00"}), MWL)
    first, _ = next(responses)
    assert first.Status == 0xFF00
    assoc.abort()
    status, results = c_find(port, query(PatientID="P0000007"), MWL, "MODALITY")
    assert status == 0x0000
    assert [str(ds.PatientID) for ds in results] == ["P0000007"]


def test_a_peer_that_stops_mid_pdu_holds_up_nobody_and_is_closed(
        start_server: StartServer) -> None:
    """An A-ASSOCIATE-RQ cut short (the PDU header promises more than is sent), and a
    connection that sends nothing: C-ECHO from another peer meanwhile works; both silent
    connections are closed after ``dicom_network_timeout_seconds``."""
    server = start_server(dicom_network_timeout_seconds=1.0)
    cut = socket.create_connection(("127.0.0.1", server.port))
    cut.sendall(bytes([0x01, 0x00]) + (1000).to_bytes(4, "big") + b"\x00\x01\x00\x00BRIDGE")
    silent = socket.create_connection(("127.0.0.1", server.port))
    ae = AE(ae_title="ECHOER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="BRIDGE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    for stalled in (cut, silent):
        assert _closed_by_peer(stalled, within=15.0)
        stalled.close()


def _closed_by_peer(sock: socket.socket, *, within: float) -> bool:
    """True once the other end closes (an A-ABORT or other bytes may come first); a timeout
    fails the test."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True  # closed with a reset: closed all the same
    return True
