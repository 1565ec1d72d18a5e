"""The whole bridge in one process, real peers around it: an MIS over MLLP, a modality with
DCMTK storescu/findscu, Orthanc as the archive studies are forwarded to, DICOMweb over HTTP.

The modality gets the patient wrong; the order's accession puts the study right; an ADT A40
merge after storage changes what C-FIND and WADO answer, without touching the files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.mllp import MLLPClient
from bridge.config.settings import DicomPeer, ForwardRule, Settings
from bridge.services.auth.tokens import create_token
from bridge.store.archive_models import Study
from tests.conftest import hl7_fixture, require_tool
from tests.dicom_factories import write_series
from tests.hl7_harness import running_bridge
from tests.orthanc_peer import running_orthanc
from tests.waiting import eventually

pytestmark = pytest.mark.integration

STUDY_UID = "1.2.826.0.1.3680043.10.1137.1.9901"


def order_for_p10003(accession: str = "E2E1", study_uid: str = STUDY_UID) -> bytes:
    """The NW order fixture, re-addressed to patient P10003 with another accession."""
    text = hl7_fixture("orm_o01_nw.hl7").decode()
    for old, new in (("ORM0001", f"ORM{accession}"),
                     ("~1234567890^^^UA_ESOZ^NI~АА123456^^^UA_PASSPORT^PPN", ""),
                     ("P10001", "P10003"), ("ACC1001", accession),
                     ("PLC1001", f"PLC{accession}"), ("SPS1001", f"SPS{accession}"),
                     ("RP1001", f"RP{accession}"),
                     ("1.2.826.0.1.3680043.10.1137.1.1001", study_uid),
                     ("Ґалаґан^Олена^Павлівна", "Мʼясоїд^Євгенія^Юріївна")):
        text = text.replace(old, new)
    return text.encode()


def study_level_find(port: int, out: Path, study_uid: str = STUDY_UID) -> pydicom.Dataset:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.dcm"):
        old.unlink()
    result = subprocess.run(
        [require_tool("findscu"), "-S", "-X", "-od", str(out), "-aet", "VIEWER", "-aec",
         "BRIDGE", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "-k", "PatientID", "-k", "PatientName", "-k", "AccessionNumber",
         "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    [response] = [pydicom.dcmread(p) for p in out.glob("*.dcm")]
    return response


def test_modality_to_archive_with_mis_values_and_a_later_merge(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        configured = settings.model_copy(update={
            "study_stable_seconds": 0.5, "worker_poll_seconds": 0.2,
            "dicom_peers": (DicomPeer(ae_title="ORTHANC", host="127.0.0.1",
                                      port=orthanc.dicom_port, role="scp"),),
            "forward_rules": (ForwardRule(destination="ORTHANC", modality="CT"),),
            "forward_retry_base_seconds": 0.5,
        })
        with running_bridge(configured) as bridge:
            with MLLPClient("127.0.0.1", bridge.mllp_port) as mis:
                for message in (hl7_fixture("adt_a01_utf8.hl7"), hl7_fixture("adt_a28_add.hl7"),
                                order_for_p10003()):
                    assert b"MSA|AA|" in mis.send(message)
            files = write_series(tmp_path / "ct", 3, study_uid=STUDY_UID,
                                 AccessionNumber="E2E1", PatientID="CT-LOCAL-7",
                                 PatientName="Unknown^Patient")
            sent = subprocess.run([storescu, "-aet", "CT_SCANNER_1", "-aec", "BRIDGE",
                                   "127.0.0.1", str(bridge.dicom_port), *map(str, files)],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert sent.returncode == 0, sent.stderr

            # Stable, then forwarded with the MIS values; the files keep the modality's.
            forwarded = eventually(lambda: orthanc.instances() if orthanc.instance_count() == 3
                                   else None)
            tags = orthanc.simplified_tags(forwarded[0])
            assert (tags["PatientID"], tags["AccessionNumber"]) == ("P10003", "E2E1")
            assert tags["PatientName"].startswith("Мʼясоїд^Євгенія")
            with session_factory() as session:
                study = session.scalars(select(Study)).one()
            assert (study.state, study.reconciliation) == ("stable", "matched")
            assert all(pydicom.dcmread(p).PatientID == "CT-LOCAL-7"
                       for p in configured.archive_root.rglob("*.dcm"))

            found = study_level_find(bridge.dicom_port, tmp_path / "before")
            assert (found.PatientID, found.NumberOfStudyRelatedInstances) == ("P10003", 3)

            # The MIS merges P10003 into P10001: everything served from now on says P10001.
            with MLLPClient("127.0.0.1", bridge.mllp_port) as mis:
                assert b"MSA|AA|" in mis.send(hl7_fixture("adt_a40_merge.hl7"))
            found = study_level_find(bridge.dicom_port, tmp_path / "after")
            assert found.PatientID == "P10001"
            assert str(found.PatientName).startswith("Ґалаґан^Олена")

            with session_factory.begin() as session:
                token = create_token(session, role="integration", name="e2e")
            with httpx.Client(base_url=f"http://127.0.0.1:{bridge.http_port}", timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as client:
                metadata = client.get(f"/dicomweb/studies/{STUDY_UID}/metadata")
            assert metadata.status_code == 200, metadata.text
            assert len(metadata.json()) == 3
            for instance in metadata.json():
                assert instance["00100020"]["Value"] == ["P10001"]
                assert instance["00080050"]["Value"] == ["E2E1"]
                # The modality's own value is kept in the Original Attributes Sequence.
                original = instance["04000561"]["Value"][0]["04000550"]["Value"][0]
                assert original["00100020"]["Value"] == ["CT-LOCAL-7"]


def test_study_queued_until_a_later_order_arrives_over_hl7(
        settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    study_uid = "1.2.826.0.1.3680043.10.1137.1.9902"
    configured = settings.model_copy(update={"worker_poll_seconds": 0.2})
    with running_bridge(configured) as bridge:
        files = write_series(tmp_path / "ct", 2, study_uid=study_uid, AccessionNumber="LATE7",
                             PatientID="CT-LOCAL-8")
        sent = subprocess.run([require_tool("storescu"), "-aec", "BRIDGE", "127.0.0.1",
                               str(bridge.dicom_port), *map(str, files)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert sent.returncode == 0, sent.stderr
        with session_factory.begin() as session:
            token = create_token(session, role="integration", name="e2e")
        with httpx.Client(base_url=f"http://127.0.0.1:{bridge.http_port}", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            [queued] = client.get("/api/reconciliation").json()
        assert (queued["study_instance_uid"], queued["patient_id"]) == (study_uid,
                                                                        "CT-LOCAL-8")
        assert study_level_find(bridge.dicom_port, tmp_path / "before",
                                study_uid).PatientID == "CT-LOCAL-8"

        with MLLPClient("127.0.0.1", bridge.mllp_port) as mis:
            assert b"MSA|AA|" in mis.send(order_for_p10003("LATE7", "1.2.3.4.5.6"))

        def reconciled() -> Study | None:
            with session_factory() as session:
                study = session.scalars(select(Study)).one()
            return study if study.reconciliation == "matched" else None

        assert eventually(reconciled).match_key == "accession"
        assert study_level_find(bridge.dicom_port, tmp_path / "after",
                                study_uid).PatientID == "P10003"
