"""Unscheduled exams: a study of a known MIS patient with no order belongs to that patient.

As a hospital's engineer tries it, over real sockets on both databases: the MIS registers a
patient (ADT A04 over MLLP), a modality sends a study for that PatientID with no accession
and no order (DCMTK storescu), the MIS corrects the name (A08); C-GET, C-FIND, WADO-RS and the
published ImagingStudy then carry the MIS values, with the modality's own in the Original
Attributes Sequence. Objects whose demographics contradict the MIS are queued as
``patient_mismatch`` with both sets of values; an order arriving later attaches; an A40 merge
moves a linked study to the survivor; ``BRIDGE_RECONCILE_UNORDERED=queue`` keeps today's
behaviour.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.app.runtime import Bridge
from bridge.clients.mllp import MLLPClient
from bridge.config.settings import DicomPeer, Settings
from bridge.services.auth.tokens import create_token
from bridge.store.archive_models import Study
from bridge.store.models import Order, ProcedureStep
from tests.conftest import require_tool
from tests.dicom_factories import write_series
from tests.fhir_peer import SekmetPeer, running_sekmet
from tests.hl7_harness import running_bridge
from tests.waiting import eventually

pytestmark = pytest.mark.integration

HOSPITAL = "KYIV_CITY_HOSP_1"
ROOT = "1.2.826.0.1.3680043.10.1137.18"


# ----------------------------------------------------------------------------- helpers


def adt(event: str, control: str, mrn: str, name: str, birth_date: str, sex: str = "M",
        merge_from: str = "") -> bytes:
    """An ADT message as an MIS sends it (UTF-8, MSH-18 UNICODE UTF-8)."""
    structure = "ADT_A39" if event == "A40" else "ADT_A01"
    segments = [
        f"MSH|^~\\&|MIS|{HOSPITAL}|BRIDGE|RADIOLOGY|20261207080000||ADT^{event}^{structure}|"
        f"{control}|P|2.5|||||UKR|UNICODE UTF-8",
        f"EVN|{event}|20261207080000",
        f"PID|1||{mrn}^^^{HOSPITAL}^MR||{name}||{birth_date}|{sex}",
    ]
    if merge_from:
        segments.append(f"MRG|{merge_from}^^^{HOSPITAL}^MR")
    else:
        segments.append("PV1|1|E")
    return ("\r".join(segments) + "\r").encode()


def order(control: str, mrn: str, name: str, birth_date: str, accession: str,
          study_date: str = "20261207") -> bytes:
    """A new CT order for the patient (ORM^O01), scheduled on the study's date."""
    return ("\r".join([
        f"MSH|^~\\&|MIS|{HOSPITAL}|BRIDGE|RADIOLOGY|20261207100000||ORM^O01^ORM_O01|"
        f"{control}|P|2.5|||||UKR|UNICODE UTF-8",
        f"PID|1||{mrn}^^^{HOSPITAL}^MR||{name}||{birth_date}|M",
        "PV1|1|E",
        f"ORC|NW|PLC{accession}^MIS|||SC||^^^{study_date}0900^^R",
        f"OBR|1|PLC{accession}^MIS||CTCHEST^CT chest^LOCAL||||||||||||||{accession}|"
        f"RP{accession}|SPS{accession}||||CT",
    ]) + "\r").encode()


def send(bridge: Bridge, *messages: bytes) -> None:
    with MLLPClient("127.0.0.1", bridge.mllp_port) as mis:
        for message in messages:
            ack = mis.send(message)
            assert b"MSA|AA|" in ack, ack.decode(errors="replace")


def store(bridge: Bridge, folder: Path, *, calling_ae: str = "CT_ER_1", count: int = 2,
          **attributes: Any) -> str:
    """A study from the modality by storescu, with no accession; returns its UID."""
    study_uid = generate_uid(prefix=f"{ROOT}.")
    files = write_series(folder, count, study_uid=study_uid, AccessionNumber="",
                         StudyDate="20261207", SpecificCharacterSet="ISO_IR 192", **attributes)
    sent = subprocess.run([require_tool("storescu"), "-aet", calling_ae, "-aec", "BRIDGE",
                           "127.0.0.1", str(bridge.dicom_port), *map(str, files)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0, sent.stderr
    return study_uid


def study_row(sessions: sessionmaker[Session], study_uid: str) -> Study:
    with sessions() as session:
        study = session.scalars(select(Study).where(
            Study.study_instance_uid == study_uid)).one()
        session.expunge(study)
        return study


def find_study(bridge: Bridge, out: Path, study_uid: str) -> pydicom.Dataset:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [require_tool("findscu"), "-S", "-X", "-od", str(out), "-aet", "VIEWER", "-aec",
         "BRIDGE", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "-k", "PatientID", "-k", "PatientName", "-k", "PatientBirthDate",
         "-k", "IssuerOfPatientID", "-k", "AccessionNumber", "127.0.0.1",
         str(bridge.dicom_port)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    [found] = [pydicom.dcmread(p) for p in out.glob("*.dcm")]
    return found


def get_study(bridge: Bridge, out: Path, study_uid: str) -> list[pydicom.Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [require_tool("getscu"), "-S", "-aet", "VIEWER", "-aec", "BRIDGE", "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "127.0.0.1", str(bridge.dicom_port)], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


@pytest.fixture
def api(bridge_settings: Settings, session_factory: sessionmaker[Session]
        ) -> Iterator[tuple[Bridge, httpx.Client]]:
    with session_factory.begin() as session:
        token = create_token(session, role="integration", name="unscheduled")
    with running_bridge(bridge_settings) as bridge, httpx.Client(
            base_url=f"http://127.0.0.1:{bridge.http_port}", timeout=30,
            headers={"Authorization": f"Bearer {token}"}) as client:
        yield bridge, client


@pytest.fixture
def bridge_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "worker_poll_seconds": 0.2, "study_stable_seconds": 0.5,
        # The ER scanner's PatientIDs are the hospital's MRNs: it sends no issuer.
        "dicom_peers": (DicomPeer(ae_title="CT_ER_1", issuer_of_patient_id=HOSPITAL),),
    })


# ----------------------------------------------------------------------------- the story


def test_a04_unordered_store_a08_then_every_way_out_has_the_mis_values(
        api: tuple[Bridge, httpx.Client], session_factory: sessionmaker[Session],
        tmp_path: Path) -> None:
    bridge, client = api
    send(bridge, adt("A04", "U1", "P20001", "Шевченко^Тарас^Григорович", "19700309"))
    # The ER typed the name in Latin letters on a console without Cyrillic.
    study_uid = store(bridge, tmp_path / "ct", PatientID="P20001",
                      PatientName="SHEVCHENKO^TARAS", PatientBirthDate="19700309",
                      PatientSex="M")
    study = study_row(session_factory, study_uid)
    assert (study.reconciliation, study.order_id, study.queue_kind) == ("linked", None, None)
    assert client.get("/api/reconciliation").json() == []

    send(bridge, adt("A08", "U2", "P20001", "Шевченко^Тарас^Іванович", "19700309"))

    retrieved = get_study(bridge, tmp_path / "got", study_uid)
    assert len(retrieved) == 2
    for ds in retrieved:
        assert (ds.PatientID, ds.IssuerOfPatientID) == ("P20001", HOSPITAL)
        assert str(ds.PatientName) == "Шевченко^Тарас^Іванович"
        original = ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
        assert str(original.PatientName) == "SHEVCHENKO^TARAS"

    found = find_study(bridge, tmp_path / "find", study_uid)
    assert (found.PatientID, str(found.PatientName)) == ("P20001", "Шевченко^Тарас^Іванович")
    assert found.AccessionNumber == ""

    metadata = client.get(f"/dicomweb/studies/{study_uid}/metadata")
    assert metadata.status_code == 200, metadata.text
    for instance in metadata.json():
        assert instance["00100010"]["Value"][0]["Alphabetic"] == "Шевченко^Тарас^Іванович"
    summary = client.get("/api/reconciliation/summary").json()
    assert {"reconciled_by": "patient", "modality": "CT", "studies": 1} in summary["reconciled"]
    metrics = client.get("/metrics").text
    assert 'bridge_archive_studies{modality="CT",reconciled_by="patient"} 1.0' in metrics


def test_demographics_that_contradict_the_mis_queue_the_study_with_both_values(
        api: tuple[Bridge, httpx.Client], session_factory: sessionmaker[Session],
        tmp_path: Path) -> None:
    bridge, client = api
    send(bridge, adt("A04", "M1", "P20011", "Ґалаґан^Олена^Павлівна", "19850315", "F"))
    cases = {
        "birth date differs": dict(PatientName="Ґалаґан^Олена", PatientBirthDate="19850316"),
        "another name": dict(PatientName="Kovalenko^Olena", PatientBirthDate="19850315"),
        "transliterated": dict(PatientName="Galagan^Olena", PatientBirthDate="19850315"),
        "case and punctuation": dict(PatientName="ґалаґан^олена^п.", PatientBirthDate=""),
    }
    uids = {case: store(bridge, tmp_path / case.replace(" ", "_"), PatientID="P20011",
                        PatientSex="F", **values)
            for case, values in cases.items()}
    states = {case: study_row(session_factory, uid) for case, uid in uids.items()}
    assert {c: (s.reconciliation, s.queue_kind) for c, s in states.items()} == {
        "birth date differs": ("queued", "patient_mismatch"),
        "another name": ("queued", "patient_mismatch"),
        # KMU 55 gives Galagan for Ґалаґан: the same patient, in Latin letters.
        "transliterated": ("linked", None),
        "case and punctuation": ("linked", None),
    }
    queue = {q["study_instance_uid"]: q for q in
             client.get("/api/reconciliation", params={"kind": "patient_mismatch"}).json()}
    assert set(queue) == {uids["birth date differs"], uids["another name"]}
    shown = queue[uids["birth date differs"]]
    assert (shown["patient_id"], shown["birth_date"]) == ("P20011", "19850316")
    assert shown["mis"] == {"patient_id": "P20011", "issuer": HOSPITAL,
                            "patient_name": "Ґалаґан^Олена^Павлівна",
                            "birth_date": "19850315", "sex": "F"}
    assert "birth_date" in shown["reason"] and "Олена" not in shown["reason"]
    assert "name" in queue[uids["another name"]]["reason"]
    # Never silently linked: what leaves the bridge is the modality's, until an operator acts.
    found = find_study(bridge, tmp_path / "mismatch", uids["another name"])
    assert str(found.PatientName) == "Kovalenko^Olena"

    assigned = client.post(f"/api/reconciliation/{uids['another name']}/assign",
                           json={"patient": {"patient_id": "P20011", "issuer": HOSPITAL}})
    assert assigned.status_code == 200, assigned.text
    assert study_row(session_factory, uids["another name"]).reconciliation == "assigned"
    assert str(find_study(bridge, tmp_path / "assigned", uids["another name"]).PatientName) \
        == "Ґалаґан^Олена^Павлівна"


def test_an_unknown_patient_id_stays_unmatched(
        api: tuple[Bridge, httpx.Client], session_factory: sessionmaker[Session],
        tmp_path: Path) -> None:
    bridge, client = api
    study_uid = store(bridge, tmp_path / "ct", PatientID="NOT-IN-MIS", PatientName="X^Y")
    study = study_row(session_factory, study_uid)
    assert (study.reconciliation, study.queue_kind, study.patient_id) == (
        "queued", "unmatched", None)
    [queued] = client.get("/api/reconciliation").json()
    assert (queued["kind"], queued["mis"]) == ("unmatched", None)


def test_an_order_arriving_later_attaches_and_completes_its_step(
        api: tuple[Bridge, httpx.Client], session_factory: sessionmaker[Session],
        tmp_path: Path) -> None:
    bridge, client = api
    send(bridge, adt("A04", "L1", "P20021", "Мельник^Наталія", "19900101", "F"))
    study_uid = store(bridge, tmp_path / "ct", PatientID="P20021",
                      PatientName="Мельник^Наталія", PatientBirthDate="19900101")
    assert study_row(session_factory, study_uid).reconciliation == "linked"
    # The MIS enters the order afterwards (by patient, modality and date: no accession
    # was on the images).
    send(bridge, order("L2", "P20021", "Мельник^Наталія", "19900101", "LATE21"))

    matched = eventually(lambda: (s := study_row(session_factory, study_uid))
                         .reconciliation == "matched" and s)
    assert (matched.match_key, matched.order_id is not None) == ("patient", True)
    found = find_study(bridge, tmp_path / "find", study_uid)
    assert found.AccessionNumber == "LATE21"
    [ds, _] = get_study(bridge, tmp_path / "got", study_uid)
    assert ds.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPSLATE21"
    with session_factory() as session:
        step = session.scalars(select(ProcedureStep).where(
            ProcedureStep.order_id == matched.order_id)).one()
        status = session.get(Order, matched.order_id).status  # type: ignore[union-attr]
    assert (step.status, status) == ("COMPLETED", "COMPLETED")
    summary = client.get("/api/reconciliation/summary").json()
    assert {"reconciled_by": "order", "modality": "CT", "studies": 1} in summary["reconciled"]


def test_a40_moves_a_linked_study_to_the_surviving_patient(
        api: tuple[Bridge, httpx.Client], session_factory: sessionmaker[Session],
        tmp_path: Path) -> None:
    bridge, _client = api
    send(bridge, adt("A04", "G1", "P20031", "Бондаренко^Олег", "19600202"),
         adt("A04", "G2", "P20032", "Бондаренко^Олег^Петрович", "19600202"))
    study_uid = store(bridge, tmp_path / "ct", PatientID="P20031",
                      PatientName="Bondarenko^Oleh", PatientBirthDate="19600202")
    assert study_row(session_factory, study_uid).reconciliation == "linked"
    assert find_study(bridge, tmp_path / "before", study_uid).PatientID == "P20031"

    send(bridge, adt("A40", "G3", "P20032", "Бондаренко^Олег^Петрович", "19600202",
                     merge_from="P20031"))
    found = find_study(bridge, tmp_path / "after", study_uid)
    assert (found.PatientID, str(found.PatientName)) == ("P20032", "Бондаренко^Олег^Петрович")


def test_the_queue_setting_keeps_every_unordered_study_for_review(
        bridge_settings: Settings, session_factory: sessionmaker[Session],
        tmp_path: Path) -> None:
    configured = bridge_settings.model_copy(update={"reconcile_unordered": "queue"})
    with session_factory.begin() as session:
        token = create_token(session, role="integration", name="queue")
    with running_bridge(configured) as bridge:
        send(bridge, adt("A04", "Q1", "P20041", "Лисенко^Богдан", "19750505"))
        study_uid = store(bridge, tmp_path / "ct", PatientID="P20041",
                          PatientName="Лисенко^Богдан", PatientBirthDate="19750505")
        study = study_row(session_factory, study_uid)
        assert (study.reconciliation, study.queue_kind, study.patient_id) == (
            "queued", "unmatched", None)
        with httpx.Client(base_url=f"http://127.0.0.1:{bridge.http_port}", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            [queued] = client.get("/api/reconciliation").json()
        assert queued["mis"]["patient_name"] == "Лисенко^Богдан"
        # What leaves is the modality's until an operator assigns it.
        assert find_study(bridge, tmp_path / "find", study_uid).PatientID == "P20041"


# ----------------------------------------------------------------------------- FHIR


@pytest.fixture(scope="module")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetPeer]:
    with running_sekmet(tmp_path_factory.mktemp("sekmet-unscheduled")) as peer:
        yield peer


def test_imaging_study_has_the_patient_then_gains_based_on_as_one_more_version(
        bridge_settings: Settings, session_factory: sessionmaker[Session],
        sekmet: SekmetPeer, tmp_path: Path) -> None:
    mrn = f"P2{generate_uid()[-8:]}"
    patient = sekmet.create({"resourceType": "Patient",
                             "identifier": [{"system": "urn:oid:1.2.804.99.1", "value": mrn}],
                             "name": [{"family": "Кравчук", "given": ["Ірина"]}]})
    configured = bridge_settings.model_copy(update={
        "fhir_target_url": sekmet.base_url, "fhir_publish_retry_base_seconds": 0.1,
        "fhir_target_complete_service_request": False})
    with running_bridge(configured) as bridge:
        send(bridge, adt("A04", "F1", mrn, "Кравчук^Ірина", "19880808", "F"))
        study_uid = store(bridge, tmp_path / "ct", PatientID=mrn,
                          PatientName="Кравчук^Ірина", PatientBirthDate="19880808")

        def published() -> list[dict[str, Any]]:
            return sekmet.search("ImagingStudy",
                                 identifier=f"urn:dicom:uid|urn:oid:{study_uid}")

        [first] = eventually(published)
        assert first["subject"]["reference"] == f"Patient/{patient['id']}"
        assert "basedOn" not in first

        send(bridge, order("F2", mrn, "Кравчук^Ірина", "19880808", "FHIR31"))

        def based_on() -> dict[str, Any] | None:
            [study] = published()
            return study if "basedOn" in study else None

        updated = eventually(based_on)
        assert updated["id"] == first["id"]
        assert updated["basedOn"][0]["identifier"]["value"] == "FHIR31"
        assert len(sekmet.history("ImagingStudy", first["id"])) == 2
