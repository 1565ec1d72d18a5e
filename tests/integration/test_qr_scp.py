"""Query/Retrieve SCP over real sockets: DCMTK findscu, movescu + storescp, getscu, and a
pynetdicom client where the exact DIMSE status matters.

The archive is filled by :mod:`tests.archive_factories` (real Part 10 files and index rows),
so these tests do not depend on the storage SCP.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityWorklistInformationFind,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import Engine, event, text, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.dicom.qr_scp import query_retrieve_service
from bridge.adapters.dicom.server import DEFAULT_SERVICES, verification_service
from bridge.adapters.dicom.service import DicomService
from bridge.adapters.dicom.storage_scp import storage_service
from bridge.config.settings import DicomPeer, Settings
from bridge.mapping.dicom.qr_query import ArchiveQuery, Level
from bridge.mapping.worklist.query import Range, TextMatch
from bridge.services.archive import query as archive_query
from bridge.store.db import read_session
from bridge.store.models import Patient
from tests.archive_factories import (
    UID_PREFIX,
    ArchivedStudy,
    SeriesPlan,
    Source,
    archive_study,
    bulk_index,
    bulk_studies,
)
from tests.conftest import free_port, require_tool
from tests.dicom_harness import (
    StartServer,
    c_find,
    c_find_cancelled,
    dicom_servers,
    findscu,
)
from tests.worklist_factories import add_order, add_patient

pytestmark = pytest.mark.integration

STUDY_FIND = StudyRootQueryRetrieveInformationModelFind
PATIENT_FIND = PatientRootQueryRetrieveInformationModelFind
#: C-GET sends over the requestor's association: the storage classes must be accepted with
#: the SCU role as well (the storage service does this in the application).
STORAGE_ROLES = DicomService(
    name="storage-roles",
    sop_classes=tuple(str(cx.abstract_syntax) for cx in StoragePresentationContexts),
    role_selection=True,
)


@dataclass(slots=True)
class Archive:
    galagan: ArchivedStudy  # CT + MR, 3 instances, matched to order ACCG
    galant_ct: ArchivedStudy  # CT, 1 instance, order ACCI
    galant_mr: ArchivedStudy  # MR, 1 instance, order ACCJ, later date
    queued: ArchivedStudy  # no MIS patient yet: served with the modality's values
    galant_pk: int


@pytest.fixture
def archive(settings: Settings, session_factory: sessionmaker[Session]) -> Archive:
    root = settings.archive_root
    with session_factory.begin() as s:
        galagan = add_patient(s, "Ґалаґан^Олена", [("UA100", "HOSP")], birth_date="19800101")
        galant = add_patient(s, "Galant^Ivan", [("UA200", "HOSP")], birth_date="19750505",
                             sex="M")
        studies = Archive(
            galagan=archive_study(
                s, root, patient=galagan,
                order=add_order(s, galagan, accession="ACCG", referring_physician="Франко^Іван"),
                # The modality typed the patient wrongly and sent its own accession number.
                source=Source(patient_id="123", name="GALAGAN", accession="MOD1"),
                study_date="20261122", study_time="101500", description="КТ голови",
                series=[SeriesPlan("CT", 2, 1, "Аксіальні"), SeriesPlan("MR", 1, 2)],
            ),
            galant_ct=archive_study(
                s, root, patient=galant, order=add_order(s, galant, accession="ACCI"),
                source=Source(patient_id="UA200", name="Galant^Ivan"),
                study_date="20261123", study_time="143000", series=[SeriesPlan("CT", 1)],
            ),
            galant_mr=archive_study(
                s, root, patient=galant, order=add_order(s, galant, accession="ACCJ"),
                source=Source(patient_id="UA200", name="Galant^Ivan"),
                study_date="20261201", study_time="080000", series=[SeriesPlan("MR", 1)],
            ),
            queued=archive_study(
                s, root, source=Source(patient_id="Q1", name="Queued^Quinn", accession="QACC",
                                       birth_date="19900909", sex="F"),
                study_date="20261122", study_time="170000", series=[SeriesPlan("OT", 1)],
            ),
            galant_pk=galant.id,
        )
    return studies


@pytest.fixture
def start_server(settings: Settings, session_factory: sessionmaker[Session]
                 ) -> Iterator[StartServer]:
    with dicom_servers(settings, session_factory,
                       services=(verification_service, query_retrieve_service),
                       extra_services=(STORAGE_ROLES,)) as start:
        yield start


def find(port: int, identifier: Dataset, model: str = STUDY_FIND) -> tuple[int, list[Dataset]]:
    """pynetdicom client: the final status and the pending identifiers."""
    return c_find(port, identifier, model, "FINDSCU")


def identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def values(results: list[Dataset], keyword: str) -> list[str]:
    return sorted(str(ds.get(keyword, "")) for ds in results)


# --- C-FIND ----------------------------------------------------------------------------------


def test_findscu_patient_level_counts_and_case_insensitive_name(
    archive: Archive, start_server: StartServer, tmp_path: Path
) -> None:
    port = start_server().port
    [galant] = findscu(port, "-P", [
        "QueryRetrieveLevel=PATIENT", "PatientName=GAL*", "PatientID", "PatientBirthDate",
        "PatientSex", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    ], tmp_path / "rsp")
    assert (galant.PatientID, str(galant.PatientName), galant.PatientSex) == (
        "UA200", "Galant^Ivan", "M")
    assert galant.QueryRetrieveLevel == "PATIENT"
    assert (galant.NumberOfPatientRelatedStudies, galant.NumberOfPatientRelatedSeries,
            galant.NumberOfPatientRelatedInstances) == (2, 2, 2)

    everyone = findscu(port, "-P", ["QueryRetrieveLevel=PATIENT", "PatientID",
                                    "NumberOfPatientRelatedInstances"], tmp_path / "all")
    assert [(ds.PatientID, ds.NumberOfPatientRelatedInstances) for ds in everyone] == [
        ("UA100", 3), ("UA200", 2), ("Q1", 1)]


def test_findscu_study_root_date_range_counts_and_utf8(
    archive: Archive, start_server: StartServer, tmp_path: Path
) -> None:
    port = start_server().port
    results = findscu(port, "-S", [
        "QueryRetrieveLevel=STUDY", "StudyDate=20261122-20261123", "StudyInstanceUID",
        "AccessionNumber", "PatientName", "PatientID", "ModalitiesInStudy",
        "ReferringPhysicianName", "StudyDescription", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ], tmp_path / "rsp")
    assert values(results, "AccessionNumber") == ["ACCG", "ACCI", "QACC"]
    galagan = next(ds for ds in results if ds.AccessionNumber == "ACCG")
    # The MIS values, not the file's ("GALAGAN", "123", "MOD1").
    assert galagan.SpecificCharacterSet == "ISO_IR 192"
    assert (str(galagan.PatientName), galagan.PatientID) == ("Ґалаґан^Олена", "UA100")
    assert str(galagan.ReferringPhysicianName) == "Франко^Іван"
    assert galagan.StudyDescription == "КТ голови"
    assert list(galagan.ModalitiesInStudy) == ["CT", "MR"]
    assert (galagan.NumberOfStudyRelatedSeries, galagan.NumberOfStudyRelatedInstances) == (2, 3)
    queued = next(ds for ds in results if ds.AccessionNumber == "QACC")
    assert (str(queued.PatientName), queued.PatientID) == ("Queued^Quinn", "Q1")
    assert "SpecificCharacterSet" not in queued  # plain ASCII needs no character set


def test_findscu_patient_root_study_level_needs_the_patient(
    archive: Archive, start_server: StartServer, tmp_path: Path
) -> None:
    port = start_server().port
    results = findscu(port, "-P", ["QueryRetrieveLevel=STUDY", "PatientID=UA200",
                                   "StudyDate", "AccessionNumber"], tmp_path / "rsp")
    assert values(results, "AccessionNumber") == ["ACCI", "ACCJ"]
    status, found = find(port, identifier("STUDY", AccessionNumber=""), PATIENT_FIND)
    assert (status, found) == (0xA900, [])


def test_series_and_image_levels(archive: Archive, start_server: StartServer,
                                 tmp_path: Path) -> None:
    port = start_server().port
    study = archive.galagan
    series = findscu(port, "-S", [
        "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study.study_instance_uid}",
        "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ], tmp_path / "series")
    assert [(ds.Modality, ds.SeriesNumber, ds.NumberOfSeriesRelatedInstances)
            for ds in series] == [("CT", 1, 2), ("MR", 2, 1)]
    assert series[0].SeriesDescription == "Аксіальні"
    assert all(ds.StudyInstanceUID == study.study_instance_uid for ds in series)

    status, [mr] = find(port, identifier("SERIES", StudyInstanceUID=study.study_instance_uid,
                                         Modality="MR", SeriesInstanceUID=""))
    assert status == 0 and mr.SeriesInstanceUID == study.series[1].series_instance_uid

    ct = study.series[0]
    images = findscu(port, "-S", [
        "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study.study_instance_uid}",
        f"SeriesInstanceUID={ct.series_instance_uid}", "SOPInstanceUID", "SOPClassUID",
        "InstanceNumber",
    ], tmp_path / "images")
    assert [(ds.SOPInstanceUID, ds.SOPClassUID, ds.InstanceNumber) for ds in images] == [
        (i.sop_instance_uid, CTImageStorage, n) for n, i in enumerate(ct.instances, 1)]
    status, [second] = find(port, identifier(
        "IMAGE", StudyInstanceUID=study.study_instance_uid,
        SeriesInstanceUID=ct.series_instance_uid, InstanceNumber="2", SOPInstanceUID=""))
    assert (status, second.SOPInstanceUID) == (0, ct.instances[1].sop_instance_uid)


def test_wildcards_lists_and_open_ranges(archive: Archive, start_server: StartServer) -> None:
    port = start_server().port

    def accessions(**keys: Any) -> list[str]:
        status, results = find(port, identifier("STUDY", **{"AccessionNumber": "", **keys}))
        assert status == 0
        return values(results, "AccessionNumber")

    assert accessions(PatientID="UA?00") == ["ACCG", "ACCI", "ACCJ"]
    assert accessions(PatientID="UA100\\Q1") == ["ACCG", "QACC"]
    assert accessions(StudyDate="20261123-") == ["ACCI", "ACCJ"]
    assert accessions(StudyDate="-20261122", StudyTime="1600-") == ["QACC"]
    assert accessions(AccessionNumber="ACC*") == ["ACCG", "ACCI", "ACCJ"]
    # The modality's accession is replaced by the order's.
    assert accessions(AccessionNumber="MOD1") == []
    assert accessions(ModalitiesInStudy="MR") == ["ACCG", "ACCJ"]
    # Family name only, in any case.
    assert accessions(SpecificCharacterSet="ISO_IR 192", PatientName="ҐАЛАҐАН") == ["ACCG"]
    assert accessions(PatientBirthDate="19900101-19991231") == ["QACC"]
    assert accessions(StudyInstanceUID="\\".join(
        (archive.galant_mr.study_instance_uid, archive.queued.study_instance_uid))) == [
        "ACCJ", "QACC"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_bad_identifiers_get_a_failure_status(archive: Archive,
                                              start_server: StartServer) -> None:
    port = start_server().port
    no_level = Dataset()
    no_level.PatientID = ""
    assert find(port, no_level) == (0xA900, [])
    assert find(port, identifier("PATIENT", PatientID=""))[0] == 0xA900  # not in Study Root
    assert find(port, identifier("SERIES", Modality="CT"))[0] == 0xA900  # no study UID
    assert find(port, identifier("STUDY", StudyDate="2026-11-22"))[0] == 0xA900


def test_a40_merge_after_storage_shows_the_survivor(
    archive: Archive, start_server: StartServer, session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    with session_factory.begin() as s:
        survivor = add_patient(s, "Survivor^Sam", [("NEW1", "HOSP")], birth_date="19750505")
        s.execute(update(Patient).where(Patient.id == archive.galant_pk)
                  .values(merged_into_id=survivor.id))
    port = start_server().port
    results = findscu(port, "-S", ["QueryRetrieveLevel=STUDY", "PatientID=UA200",
                                   "PatientName", "AccessionNumber"], tmp_path / "rsp")
    # The old identifier still finds the studies; they show the survivor.
    assert [(ds.PatientID, str(ds.PatientName), ds.AccessionNumber) for ds in results] == [
        ("NEW1", "Survivor^Sam", "ACCI"), ("NEW1", "Survivor^Sam", "ACCJ")]
    assert find(port, identifier("STUDY", PatientName="galant*"))[1] == []
    status, [patient] = find(port, identifier("PATIENT", PatientID="NEW1",
                                              NumberOfPatientRelatedStudies=""), PATIENT_FIND)
    assert (status, patient.NumberOfPatientRelatedStudies) == (0, 2)


def test_latin_only_peer_gets_transliterated_names(
    archive: Archive, start_server: StartServer
) -> None:
    port = start_server(dicom_peers=(DicomPeer(ae_title="FINDSCU", latin_only=True),)).port
    status, [result] = find(port, identifier("STUDY", AccessionNumber="ACCG", PatientName=""))
    assert (status, str(result.PatientName)) == (0, "Galagan^Olena")
    assert "SpecificCharacterSet" not in result


def test_c_cancel_stops_the_results(session_factory: sessionmaker[Session],
                                    start_server: StartServer) -> None:
    """Cancelled after the first response (the client reading through a small window, see
    ``c_find_cancelled``): Cancel, not all 15,000 matches. (The kernel buffers at most
    ~4 MB of the server's responses, about 10,000 of these: past that it must wait for the
    client, and sees the cancel.)"""
    with session_factory.begin() as s:
        bulk_studies(s, 15000)
    port = start_server().port
    first, rest = c_find_cancelled(port, identifier("STUDY", StudyInstanceUID=""), STUDY_FIND,
                                   "FINDSCU")
    assert first == 0xFF00
    assert rest[-1] == 0xFE00
    assert set(rest[:-1]) <= {0xFF00}
    assert len(rest) < 15000


# --- C-MOVE ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreScp:
    port: int
    #: Where it writes what it receives.
    received: Path

    def peer(self, ae_title: str = "STORESCP", role: Literal["scu", "scp", "both"] = "scp"
             ) -> DicomPeer:
        """A ``dicom_peers`` entry for it (by any AE title: storescp accepts every one)."""
        return DicomPeer(ae_title=ae_title, host="127.0.0.1", port=self.port, role=role)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreScp]:
    """DCMTK storescp as a C-MOVE destination, on a free port, stopped after the test."""
    tool = require_tool("storescp")
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    process = subprocess.Popen([tool, "-aet", "STORESCP", "-od", str(received), str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_port(port, process)
        yield StoreScp(port, received)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert process.poll() is None, "storescp exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("storescp did not start listening")


def movescu(port: int, destination: str, keys: list[str]) -> subprocess.CompletedProcess[bytes]:
    tool = require_tool("movescu")
    args = [tool, "-S", "-aet", "MOVESCU", "-aec", "BRIDGE", "-aem", destination,
            "127.0.0.1", str(port)]
    for key in keys:
        args += ["-k", key]
    return subprocess.run(args, capture_output=True, timeout=60, check=False)


def test_movescu_sends_a_study_with_the_mis_values_to_a_known_peer(
    archive: Archive, start_server: StartServer, storescp: StoreScp
) -> None:
    port = start_server(dicom_peers=(storescp.peer(),)).port
    done = movescu(port, "STORESCP", ["QueryRetrieveLevel=STUDY",
                                      f"StudyInstanceUID={archive.galagan.study_instance_uid}"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    files = [dcmread(path) for path in sorted(storescp.received.iterdir())]
    assert sorted(ds.SOPInstanceUID for ds in files) == sorted(
        i.sop_instance_uid for i in archive.galagan.instances)
    assert {(ds.PatientID, str(ds.PatientName), ds.AccessionNumber) for ds in files} == {
        ("UA100", "Ґалаґан^Олена", "ACCG")}
    assert {ds.SOPClassUID for ds in files} == {CTImageStorage, MRImageStorage}


def test_movescu_to_an_unknown_destination_is_refused(
    archive: Archive, start_server: StartServer, storescp: StoreScp
) -> None:
    # Known but not reachable as a destination (a modality: role scu), and unknown.
    port = start_server(dicom_peers=(storescp.peer("MODALITY", role="scu"),)).port
    for destination in ("MODALITY", "STRANGER"):
        done = movescu(port, destination, [
            "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.galagan.study_instance_uid}"])
        assert done.returncode != 0, destination
        assert b"MoveDestinationUnknown" in done.stderr, destination
    assert list(storescp.received.iterdir()) == []
    assert retrieve_status(port, archive.galagan.study_instance_uid,
                           destination="STRANGER") == 0xA801


def retrieve_status(port: int, study_uid: str, *, level: str = "STUDY",
                    destination: str | None = None) -> int:
    """The final status of a C-MOVE to ``destination`` or, without one, of a C-GET."""
    model = (StudyRootQueryRetrieveInformationModelMove if destination
             else StudyRootQueryRetrieveInformationModelGet)
    ae = AE(ae_title="MOVESCU" if destination else "GETSCU")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="BRIDGE")
    assert assoc.is_established
    keys = identifier(level, StudyInstanceUID=study_uid)
    try:
        responses = (assoc.send_c_move(keys, destination, model) if destination
                     else assoc.send_c_get(keys, model))
        *_, (final, _) = responses
    finally:
        assoc.release()
    return int(final.Status)


def test_retrieves_without_their_unique_keys_are_refused(
    archive: Archive, start_server: StartServer, storescp: StoreScp
) -> None:
    port = start_server(dicom_peers=(storescp.peer(),)).port
    study_uid = archive.galagan.study_instance_uid
    # A SERIES level retrieve without SeriesInstanceUID: not "every series of the study".
    assert retrieve_status(port, study_uid, level="SERIES", destination="STORESCP") == 0xA900
    assert list(storescp.received.iterdir()) == []
    assert retrieve_status(port, study_uid, level="SERIES") == 0xA900  # C-GET


def test_movescu_after_a_merge_sends_the_survivor(
    archive: Archive, start_server: StartServer, storescp: StoreScp,
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as s:
        survivor = add_patient(s, "Survivor^Sam", [("NEW1", "HOSP")])
        s.execute(update(Patient).where(Patient.id == archive.galant_pk)
                  .values(merged_into_id=survivor.id))
    port = start_server(dicom_peers=(storescp.peer(role="both"),)).port
    done = subprocess.run(
        [require_tool("movescu"), "-P", "-aet", "MOVESCU", "-aec", "BRIDGE", "-aem", "STORESCP",
         "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=UA200", "127.0.0.1", str(port)],
        capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    files = [dcmread(path) for path in storescp.received.iterdir()]
    assert sorted(ds.AccessionNumber for ds in files) == ["ACCI", "ACCJ"]
    assert {(ds.PatientID, str(ds.PatientName)) for ds in files} == {("NEW1", "Survivor^Sam")}


# --- C-GET -----------------------------------------------------------------------------------


def test_getscu_retrieves_a_series(archive: Archive, start_server: StartServer,
                                   tmp_path: Path) -> None:
    tool = require_tool("getscu")
    port = start_server().port
    out = tmp_path / "got"
    out.mkdir()
    study, ct = archive.galagan, archive.galagan.series[0]
    done = subprocess.run(
        [tool, "-S", "-aet", "GETSCU", "-aec", "BRIDGE", "-od", str(out),
         "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study.study_instance_uid}",
         "-k", f"SeriesInstanceUID={ct.series_instance_uid}", "127.0.0.1", str(port)],
        capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    files = [dcmread(path) for path in out.iterdir()]
    assert sorted(ds.SOPInstanceUID for ds in files) == sorted(
        i.sop_instance_uid for i in ct.instances)
    assert {(ds.PatientID, ds.AccessionNumber) for ds in files} == {("UA100", "ACCG")}
    stored = {i.sop_instance_uid: dcmread(i.path).PixelData for i in ct.instances}
    assert all(ds.PixelData == stored[ds.SOPInstanceUID] for ds in files)


def test_c_get_counts_an_unreadable_object_as_failed(
    archive: Archive, start_server: StartServer
) -> None:
    port = start_server().port
    lost, kept = archive.galagan.series[0].instances
    lost.path.unlink()
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in (CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage):
        ae.add_requested_context(sop_class)
    roles: list[Any] = [build_role(c, scp_role=True)
             for c in (CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage)]
    assoc = ae.associate("127.0.0.1", port, ae_title="BRIDGE", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        *_, (final, failed) = assoc.send_c_get(
            identifier("STUDY", StudyInstanceUID=archive.galagan.study_instance_uid),
            StudyRootQueryRetrieveInformationModelGet)
    finally:
        assoc.release()
    assert final.Status == 0xB000  # warning: some sub-operations failed
    assert failed is not None
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert failed.FailedSOPInstanceUIDList == lost.sop_instance_uid  # a list of one
    assert kept.sop_instance_uid in received and lost.sop_instance_uid not in received


# --- index use -------------------------------------------------------------------------------

TYPICAL_QUERIES = {
    "patient id": ArchiveQuery(patient_id=TextMatch(values=("P42",))),
    "patient id+issuer": ArchiveQuery(patient_id=TextMatch(values=("P42",)),
                                      issuer_of_patient_id=TextMatch(values=("HOSP",))),
    "queued patient id": ArchiveQuery(patient_id=TextMatch(values=("Q7",))),
    "study date": ArchiveQuery(study_date=Range("20261130", "20261130")),
    "recent week": ArchiveQuery(study_date=Range("20261224", None)),
    "accession": ArchiveQuery(accession=TextMatch(values=("A42_1",))),
    "study uid": ArchiveQuery(study_uids=(f"{UID_PREFIX}1.7",)),
    "patient level by id": ArchiveQuery(level=Level.PATIENT,
                                        patient_id=TextMatch(values=("P42",))),
}


def test_typical_queries_use_indexes(engine: Engine,
                                     session_factory: sessionmaker[Session]) -> None:
    """No typical query reads ``studies`` or ``instances`` whole. PostgreSQL plans are
    read after ANALYZE: on a few rows without statistics a scan is rightly cheaper."""
    with session_factory.begin() as s:
        bulk_index(s, patients=300, studies_per_patient=5, queued=1500)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    for name, query in TYPICAL_QUERIES.items():
        statements.clear()
        event.listen(engine, "before_cursor_execute", capture)
        try:
            with read_session(session_factory) as session:
                found = archive_query.find(session, query, limit=200)
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        assert found, name
        statement, parameters = statements[0]  # the matching query; the rest read values
        scanned = full_scans(engine, statement, parameters)
        assert not scanned & {"studies", "instances"}, (name, scanned)


def full_scans(engine: Engine, statement: str, parameters: Any) -> set[str]:
    """Tables the plan reads whole."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return {detail.split()[1] for *_, detail in rows if detail.startswith("SCAN ")}
        [plan] = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement,
                                      parameters).scalar_one()
    scans: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if node.get("Node Type") == "Seq Scan":
            scans.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return scans


# --- with the application's services ---------------------------------------------------------


def test_the_applications_services_answer_worklist_query_and_get(
    archive: Archive, settings: Settings, session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """As ``bridge.app.runtime`` composes them: worklist and Q/R share C-FIND (dispatched by SOP
    class), and the storage service's contexts carry the SCU role C-GET needs."""
    with dicom_servers(settings, session_factory, services=(
            *DEFAULT_SERVICES, storage_service, query_retrieve_service)) as start:
        server = start()
        status, studies = find(server.port, identifier("STUDY", AccessionNumber="ACCG"))
        assert (status, values(studies, "AccessionNumber")) == (0, ["ACCG"])
        worklist = identifier("STUDY", PatientName="")  # any MWL identifier: nothing scheduled
        del worklist.QueryRetrieveLevel
        assert find(server.port, worklist, ModalityWorklistInformationFind) == (0, [])
        out = tmp_path / "got"
        out.mkdir()
        done = subprocess.run(
            [require_tool("getscu"), "-S", "-aet", "GETSCU", "-aec", "BRIDGE", "-od", str(out),
             "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={archive.galant_ct.study_instance_uid}",
             "127.0.0.1", str(server.port)],
            capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert [dcmread(p).AccessionNumber for p in out.iterdir()] == ["ACCI"]
