"""Electronic referrals end to end over real sockets (the whole bridge: MLLP, DICOM, HTTP,
the study watch), on SQLite and PostgreSQL: a family doctor refers to diagnostics and to a
consultant; who sees which study on the way; results flow back; bad input changes nothing.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.app.runtime import Bridge
from bridge.clients.mllp import MLLPClient
from bridge.config.settings import DicomPeer, Settings
from bridge.mapping.fhir.version import check_resource
from bridge.services.auth.tokens import create_token
from bridge.store.archive_models import Job, Study
from bridge.store.audit import search_audit, verify_chain
from bridge.store.referral_models import Referral, ReferralEvent
from tests.conftest import require_tool
from tests.dicom_factories import write_series
from tests.hl7_harness import running_bridge
from tests.referral_harness import Clinics, log_in_everyone, make_directory
from tests.waiting import eventually

pytestmark = pytest.mark.integration
HOSPITAL = "KYIV_CITY_HOSP_1"
ROOT = "1.2.826.0.1.3680043.10.1137.13"
FHIR_JSON = "application/fhir+json"


def adt(control: str, mrn: str, name: str) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|MIS|{HOSPITAL}|BRIDGE|RADIOLOGY|20261207080000||ADT^A04^ADT_A01|"
        f"{control}|P|2.5|||||UKR|UNICODE UTF-8",
        "EVN|A04|20261207080000",
        f"PID|1||{mrn}^^^{HOSPITAL}^MR||{name}||19800101|F",
        "PV1|1|O",
    ]) + "\r").encode()


def store(bridge: Bridge, folder: Path, mrn: str, accession: str = "") -> str:
    study_uid = generate_uid(prefix=f"{ROOT}.")
    files = write_series(folder, 2, study_uid=study_uid, AccessionNumber=accession,
                         PatientID=mrn, PatientName="Коваль^Олена", PatientBirthDate="19800101",
                         StudyDate="20261207", SpecificCharacterSet="ISO_IR 192")
    sent = subprocess.run([require_tool("storescu"), "-aet", "CT_1", "-aec", "BRIDGE",
                           "127.0.0.1", str(bridge.dicom_port), *map(str, files)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0, sent.stderr
    return study_uid


@pytest.fixture
def world(settings: Settings, session_factory: sessionmaker[Session]
          ) -> Iterator[tuple[Bridge, Clinics, httpx.Client, dict[str, int]]]:
    configured = settings.model_copy(update={
        "worker_poll_seconds": 0.2, "study_stable_seconds": 0.5,
        "dicom_peers": (DicomPeer(ae_title="CT_1", issuer_of_patient_id=HOSPITAL),)})
    ids = make_directory(session_factory)
    with session_factory.begin() as session:
        token = create_token(session, role="integration", name="MIS")
    with running_bridge(configured) as bridge:
        base = f"http://127.0.0.1:{bridge.http_port}"
        with MLLPClient("127.0.0.1", bridge.mllp_port) as mis:
            for n, mrn in enumerate(("P30001", "P30002")):
                assert b"MSA|AA|" in mis.send(adt(f"R{n}", mrn, "Коваль^Олена"))
        clinics = log_in_everyone(base)
        system = httpx.Client(base_url=base, timeout=30,
                              headers={"Authorization": f"Bearer {token}"})
        try:
            yield bridge, clinics, system, ids
        finally:
            clinics.close()
            system.close()


def _linked(sessions: sessionmaker[Session], *study_uids: str) -> bool:
    """Whether every study is attached to its MIS patient (unordered: linked on arrival or
    when it becomes stable)."""
    with sessions() as session:
        return all(session.execute(select(Study.patient_id).where(
            Study.study_instance_uid == uid)).scalar_one_or_none() for uid in study_uids)


def _patient(mrn: str = "P30001") -> dict[str, str]:
    return {"patient_id": mrn, "issuer": HOSPITAL}


def _qido(client: httpx.Client, study_uid: str) -> list[Any]:
    answer = client.get("/dicomweb/studies", params={"StudyInstanceUID": study_uid})
    assert answer.status_code in (200, 204), answer.text
    return answer.json() if answer.status_code == 200 and answer.content else []


def _task(client: httpx.Client, referral_id: int) -> dict[str, Any]:
    answer = client.get(f"/fhir/Task/{referral_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_flow_1_family_doctor_to_diagnostics_and_the_result_back(
        world: tuple[Bridge, Clinics, httpx.Client, dict[str, int]],
        session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path) -> None:
    bridge, people, _system, ids = world
    made = people["gp"].post("/api/referrals", json={
        "patient": _patient(), "performer_kind": "diagnostics", "performer_org": "DX-1",
        "modality": "CT", "code": "CTHEAD", "code_display": "CT head",
        "reason": "headache for 3 weeks"})
    assert made.status_code == 201, made.text
    referral_id = made.json()["id"]
    assert made.json()["task"]["status"] == "requested"
    check_resource(settings.fhir_version, made.json()["task"], expected_type="Task")

    # The department's inbox has it; another department's does not.
    inbox = people["rad"].get("/api/referrals", params={"status": "requested,received"})
    assert [r["id"] for r in inbox.json()] == [referral_id]
    assert people["rad2"].get("/api/referrals").json() == []
    assert people["rad2"].get(f"/fhir/Task/{referral_id}").status_code == 404
    # The requester may not accept their own referral: 403, nothing changes.
    refused = people["gp"].post(f"/api/referrals/{referral_id}/status",
                                json={"status": "accepted"})
    assert refused.status_code == 403

    for status in ("received", "accepted"):
        moved = people["rad"].post(f"/api/referrals/{referral_id}/status",
                                   json={"status": status})
        assert moved.status_code == 200, moved.text
    order_id = moved.json()["order_id"]
    assert order_id is not None
    order = people["rad"].get(f"/api/worklist/{order_id}").json()
    assert order["placer_number"] == f"ref-{referral_id}" and order["accession"]
    assert order["steps"][0]["modality"] == "CT"

    # An illegal move through FHIR: 409 naming both statuses, and nothing changes.
    task = _task(people["rad"], referral_id)
    illegal = people["rad"].put(f"/fhir/Task/{referral_id}",
                                json={**task, "status": "received"},
                                headers={"Content-Type": FHIR_JSON})
    assert illegal.status_code == 409
    outcome = illegal.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "accepted" in outcome["issue"][0]["diagnostics"]
    assert "received" in outcome["issue"][0]["diagnostics"]
    assert _task(people["rad"], referral_id)["meta"]["versionId"] == task["meta"]["versionId"]

    # The exam: the stored study reconciles to the order and the Task is in progress.
    study_uid = store(bridge, tmp_path / "ct", "P30001", order["accession"])
    eventually(lambda: _task(people["gp"], referral_id)["status"] == "in-progress")
    # The referring doctor sees the patient's study; a colleague without a relation does not.
    assert len(_qido(people["gp"], study_uid)) == 1
    assert _qido(people["gp2"], study_uid) == []
    assert people["gp2"].get(f"/dicomweb/studies/{study_uid}/metadata").status_code == 404

    # The result from the RIS as FHIR, basedOn the referral: the Task completes.
    report = people["rad"].post("/fhir/DiagnosticReport", headers={"Content-Type": FHIR_JSON},
                                json={"resourceType": "DiagnosticReport", "status": "final",
                                      "code": {"text": "CT head report"},
                                      "subject": {"reference": "Patient/1"},
                                      "basedOn": [{"reference":
                                                   f"ServiceRequest/ref-{referral_id}"}],
                                      "conclusion": "No acute intracranial findings."})
    assert report.status_code == 201, report.text
    done = _task(people["gp"], referral_id)
    assert done["status"] == "completed"
    assert done["output"][0]["valueReference"]["reference"] == \
        f"DiagnosticReport/{report.json()['id']}"
    check_resource(settings.fhir_version, done, expected_type="Task")
    read_back = people["gp"].get(f"/fhir/DiagnosticReport/{report.json()['id']}").json()
    assert read_back["conclusion"] == "No acute intracranial findings."
    study_key = "study" if settings.fhir_version == "R5" else "imagingStudy"
    with session_factory() as session:
        study_id = session.execute(select(Study.id).where(
            Study.study_instance_uid == study_uid)).scalar_one()
        events = session.execute(select(ReferralEvent.to_status).where(
            ReferralEvent.referral_id == referral_id).order_by(ReferralEvent.id)).scalars()
        assert list(events) == ["requested", "received", "accepted", "in-progress",
                                "completed"]
        # Every move is a notification in the durable outbox.
        assert session.execute(select(func.count()).select_from(Job).where(
            Job.queue == "referral_notify")).scalar_one() == 5
        assert verify_chain(session).broken is None
        reads = search_audit(session, actor=f"Practitioner/{ids['gp']}", action="search")
        assert reads, "the clinician's searches are audited"
    assert read_back[study_key] == [{"reference": f"ImagingStudy/{study_id}"}]
    search = people["gp"].get("/fhir/Task", params={
        "patient": "Patient/1", "status": "completed", "_include": "Task:focus"}).json()
    kinds = sorted(e["resource"]["resourceType"] for e in search["entry"])
    assert kinds == ["ServiceRequest", "Task"] and search["total"] == 1
    year = datetime.now(UTC).year  # the referral was made just now
    for when, total in ((f"ge{year}-01-01", 1), (f"lt{year}-01-01", 0), (str(year), 1),
                        (str(year - 1), 0)):
        dated = people["gp"].get("/fhir/Task", params={"authored-on": when}).json()
        assert dated["total"] == total, when


def test_flow_2_to_a_consultant_with_studies_and_a_record_extract(
        world: tuple[Bridge, Clinics, httpx.Client, dict[str, int]],
        session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path) -> None:
    bridge, people, system, ids = world
    carried = store(bridge, tmp_path / "a", "P30001")
    other = store(bridge, tmp_path / "b", "P30001")
    eventually(lambda: _linked(session_factory, carried, other))
    extract = {"resourceType": "DocumentReference", "status": "current",
               "content": [{"attachment": {"contentType": "text/plain",
                                           "data": base64.b64encode(b"GP notes").decode()}}]}
    made = people["gp"].post("/api/referrals", json={
        "patient": _patient(), "performer_kind": "consultant", "owner": "cardio",
        "code_display": "Cardiology opinion", "reason": "murmur",
        "studies": [carried], "documents": [extract]})
    assert made.status_code == 201, made.text
    referral_id = made.json()["id"]
    sr = people["cardio"].get(f"/fhir/ServiceRequest/ref-{referral_id}").json()
    check_resource(settings.fhir_version, sr, expected_type="ServiceRequest")
    assert {"reference": f"Practitioner/{ids['cardio']}"} in sr["performer"]

    # Exactly the carried study, for the length of the referral.
    assert len(_qido(people["cardio"], carried)) == 1
    assert _qido(people["cardio"], other) == []
    assert len(_qido(system, carried)) == 1  # systems see everything
    with session_factory() as session:
        carried_id = session.execute(select(Study.id).where(
            Study.study_instance_uid == carried)).scalar_one()
        other_id = session.execute(select(Study.id).where(
            Study.study_instance_uid == other)).scalar_one()
    assert people["cardio"].get(f"/fhir/ImagingStudy/{carried_id}").status_code == 200
    assert people["cardio"].get(f"/fhir/ImagingStudy/{other_id}").status_code == 404
    found = people["cardio"].get("/fhir/ImagingStudy", params={"patient": "1"}).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [str(carried_id)]

    assert people["cardio"].post(f"/api/referrals/{referral_id}/status",
                                 json={"status": "accepted"}).status_code == 200
    pdf = {"contentType": "application/pdf", "title": "Consultation",
           "data": base64.b64encode(b"%PDF-1.4 consultation").decode()}
    result = people["cardio"].post(f"/api/referrals/{referral_id}/report", json={
        "conclusion": "Innocent murmur; no follow-up needed.", "presented_form": [pdf],
        "study_uid": carried})
    assert result.status_code == 201, result.text
    assert result.json()["status"] == "completed"
    reports = people["gp"].get("/fhir/DiagnosticReport",
                               params={"based-on": f"ServiceRequest/ref-{referral_id}"}).json()
    [entry] = reports["entry"]
    assert entry["resource"]["presentedForm"] == [pdf]
    check_resource(settings.fhir_version, entry["resource"], expected_type="DiagnosticReport")
    # The referral ended: the consultant's access to the study ended with it.
    assert _qido(people["cardio"], carried) == []
    assert people["cardio"].get(f"/fhir/ImagingStudy/{carried_id}").status_code == 404


def test_bad_referrals_get_a_clear_answer_and_change_nothing(
        world: tuple[Bridge, Clinics, httpx.Client, dict[str, int]],
        session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    bridge, people, system, _ids = world
    of_other_patient = store(bridge, tmp_path / "x", "P30002")
    eventually(lambda: _linked(session_factory, of_other_patient))
    base = {"patient": _patient(), "performer_kind": "consultant", "owner": "cardio"}
    cases = [
        ({**base, "patient": _patient("NOPE")}, 404, "patient"),
        ({**base, "owner": "nobody"}, 404, "owner"),
        ({**base, "owner": "rad"}, 422, "owner"),  # diagnostics cannot be a consultant
        ({**base, "studies": [of_other_patient]}, 422, "studies"),
        ({**base, "performer_kind": "diagnostics", "owner": None, "performer_org": "CN-1",
          "modality": "CT"}, 422, "performer_org"),
        ({**base, "documents": [{"resourceType": "Patient"}]}, 400, "documents"),
    ]
    for body, status, location in cases:
        answer = people["gp"].post("/api/referrals", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["location"] == location
    # A diagnostics user does not refer; a system must say who refers.
    assert people["rad"].post("/api/referrals", json=base).status_code == 403
    assert system.post("/api/referrals", json=base).status_code == 422
    assert system.post("/api/referrals", json={**base, "requester": "gp"}).status_code == 201
    with session_factory() as session:
        assert session.execute(select(func.count()).select_from(Referral)).scalar_one() == 1


def test_shares_expire_and_are_revocable(
        world: tuple[Bridge, Clinics, httpx.Client, dict[str, int]],
        session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    bridge, people, system, _ids = world
    study_uid = store(bridge, tmp_path / "s", "P30002")
    eventually(lambda: _linked(session_factory, study_uid))
    assert _qido(people["gp2"], study_uid) == []
    # A clinician cannot share what they cannot see.
    assert people["gp"].post("/api/shares", json={"user": "gp2", "study_uid": study_uid}
                             ).status_code == 404
    shared = system.post("/api/shares", json={"user": "gp2", "study_uid": study_uid})
    assert shared.status_code == 201, shared.text
    assert len(_qido(people["gp2"], study_uid)) == 1
    assert people["gp2"].get(f"/dicomweb/studies/{study_uid}/metadata").status_code == 200
    assert system.post(f"/api/shares/{shared.json()['id']}/revoke").status_code == 200
    assert _qido(people["gp2"], study_uid) == []
    # An expiring consent of the patient: all their studies, until the consent ends.
    from datetime import UTC, datetime, timedelta
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    consent = system.post("/api/shares", json={"user": "gp2", "patient": _patient("P30002"),
                                               "source": "consent", "expires_at": soon})
    assert consent.status_code == 201, consent.text
    assert len(_qido(people["gp2"], study_uid)) == 1
    from sqlalchemy import update

    from bridge.store.referral_models import AccessGrant
    with session_factory.begin() as session:
        session.execute(update(AccessGrant).where(AccessGrant.id == consent.json()["id"])
                        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert _qido(people["gp2"], study_uid) == []
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert system.post("/api/shares", json={"user": "gp2", "study_uid": study_uid,
                                            "expires_at": past}).status_code == 422


def _mis(bridge: Bridge, message: str) -> str:
    with MLLPClient("127.0.0.1", bridge.mllp_port) as mis:
        return mis.send(message.replace("\n", "\r").encode()).decode()


def _ref(trigger: str, control: str, external: str, requester: str = "ID-gp",
         performer: str = "DX-1") -> str:
    return "\n".join([
        f"MSH|^~\\&|MIS|{HOSPITAL}|BRIDGE|RADIOLOGY|20261207090000||REF^{trigger}^REF_I12|"
        f"{control}|P|2.5|||||UKR|UNICODE UTF-8",
        f"RF1|P|R|RAD|||{external}||||^headache",
        f"PRD|RP|Doctor^Family|||||{requester}",
        f"PRD|RT|Radiology||||| {performer}".replace("| ", "|"),
        f"PID|1||P30001^^^{HOSPITAL}^MR||Коваль^Олена||19800101|F",
        "PR1|1||CTHEAD^CT head^LOCAL",
        "OBR|1|||CTHEAD^CT head^LOCAL" + "|" * 20 + "CT",
    ]) + "\n"


def test_hl7_v2_referrals_reach_the_same_workflow(
        world: tuple[Bridge, Clinics, httpx.Client, dict[str, int]],
        session_factory: sessionmaker[Session]) -> None:
    bridge, people, _system, _ids = world
    answer = _mis(bridge, _ref("I12", "H1", "MISREF1"))
    assert "RRI^I12" in answer and "MSA|AA|H1" in answer, answer
    rf1 = next(seg for seg in answer.split("\r") if seg.startswith("RF1|"))
    assert rf1.startswith("RF1|P|") and "|MISREF1|" in rf1
    referral_id = int(rf1.split("ref-")[1].split("^")[0])
    # The same referral sent again is the same referral.
    assert f"ref-{referral_id}^" in _mis(bridge, _ref("I12", "H1b", "MISREF1"))
    task = _task(people["gp"], referral_id)
    assert (task["status"], task["requester"]["reference"]) == (
        "requested", f"Practitioner/{_ids['gp']}")
    assert people["rad"].post(f"/api/referrals/{referral_id}/status",
                              json={"status": "accepted"}).status_code == 200
    assert "RF1|A|" in _mis(bridge, _ref("I15", "H2", "MISREF1"))

    oru = "\n".join([
        f"MSH|^~\\&|RIS|{HOSPITAL}|BRIDGE|RADIOLOGY|20261207120000||ORU^R01^ORU_R01|H3|P|2.5"
        "|||||UKR|UNICODE UTF-8",
        f"PID|1||P30001^^^{HOSPITAL}^MR||Коваль^Олена||19800101|F",
        f"OBR|1|ref-{referral_id}^BRIDGE-REFERRAL||CTHEAD^CT head^LOCAL" + "|" * 21 + "F",
        "OBX|1|TX|59776-5^Findings^LN||No acute findings.",
        "OBX|2|TX|19005-8^Impression^LN||Normal CT of the head.",
    ]) + "\n"
    assert "MSA|AA|H3" in _mis(bridge, oru)
    done = _task(people["gp"], referral_id)
    assert done["status"] == "completed"
    report = people["gp"].get(f"/fhir/{done['output'][0]['valueReference']['reference']}")
    assert report.json()["conclusion"] == "No acute findings.\nNormal CT of the head."

    # I14 cancels: the Task, and the order and its worklist step.
    second = _mis(bridge, _ref("I12", "H4", "MISREF2"))
    second_id = int(second.split("ref-")[1].split("^")[0])
    assert people["rad"].post(f"/api/referrals/{second_id}/status",
                              json={"status": "accepted"}).status_code == 200
    cancelled = _mis(bridge, _ref("I14", "H5", "MISREF2"))
    assert "MSA|AA|H5" in cancelled and "RF1|R|" in cancelled
    with session_factory() as session:
        referral = session.get(Referral, second_id)
        assert referral is not None and referral.status == "cancelled"
        from bridge.store.models import ProcedureStep
        steps = session.execute(select(ProcedureStep.status).where(
            ProcedureStep.order_id == referral.order_id)).scalars().all()
        assert steps == ["CANCELED"]

    # A referring provider the directory does not know: AE with ERR at PRD-7; nothing made.
    refused = _mis(bridge, _ref("I12", "H6", "MISREF3", requester="ID-nobody"))
    assert "MSA|AE|H6" in refused and "ERR||PRD^1^7|204^" in refused, refused
    with session_factory() as session:
        assert session.execute(select(func.count()).select_from(Referral)).scalar_one() == 2


def test_the_mpps_of_the_referral_exam_moves_its_task_and_consents_share(
        world: tuple[Bridge, Clinics, httpx.Client, dict[str, int]],
        session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
    bridge, people, system, ids = world
    made = people["gp"].post("/api/referrals", json={
        "patient": _patient(), "performer_kind": "diagnostics", "performer_org": "DX-1",
        "modality": "CT"}).json()
    accepted = people["rad"].post(f"/api/referrals/{made['id']}/status",
                                  json={"status": "accepted"}).json()
    order = people["rad"].get(f"/api/worklist/{accepted['order_id']}").json()
    ae = AE(ae_title="CT_1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", bridge.dicom_port, ae_title="BRIDGE")
    assert assoc.is_established
    item = Dataset()
    item.AccessionNumber = order["accession"]
    item.ScheduledProcedureStepID = order["steps"][0]["sps_id"]
    item.StudyInstanceUID = ""
    mpps = Dataset()
    mpps.ScheduledStepAttributesSequence = [item]
    mpps.PerformedProcedureStepID = "PPS-REF"
    mpps.PerformedStationAETitle = "CT_1"
    mpps.PerformedProcedureStepStartDate = "20261207"
    mpps.PerformedProcedureStepStartTime = "101000"
    mpps.PerformedProcedureStepStatus = "IN PROGRESS"
    mpps.Modality = "CT"
    status, _ = assoc.send_n_create(mpps, ModalityPerformedProcedureStep,
                                    generate_uid(prefix=f"{ROOT}."))
    assoc.release()
    assert status.Status == 0x0000
    assert _task(people["gp"], made["id"])["status"] == "in-progress"

    # A patient's consent (FHIR Consent) shares all their studies until it ends.
    study_uid = store(bridge, tmp_path / "c", "P30002")
    eventually(lambda: _linked(session_factory, study_uid))
    assert _qido(people["gp2"], study_uid) == []
    with session_factory() as session:
        from bridge.store.models import PatientIdentifier
        patient_pk = session.execute(select(PatientIdentifier.patient_id).where(
            PatientIdentifier.value == "P30002")).scalar_one()
    consent = system.post("/fhir/Consent", headers={"Content-Type": FHIR_JSON}, json={
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                        "consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_pk}"},
        "provision": {"type": "permit", "period": {"end": "2099-01-01T00:00:00Z"},
                      "actor": [{"role": {"text": "doctor"}, "reference": {
                          "reference": f"Practitioner/{ids['gp2']}"}}]}})
    assert consent.status_code == 201, consent.text
    assert len(_qido(people["gp2"], study_uid)) == 1
    # A clinician does not record consents.
    assert people["gp"].post("/fhir/Consent", headers={"Content-Type": FHIR_JSON},
                             json={"resourceType": "Consent"}).status_code == 403


def test_an_import_run_as_a_clinician_makes_its_studies_theirs(
        world: tuple[Bridge, Clinics, httpx.Client, dict[str, int]],
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bridge.cli.main import app as cli_app
    _bridge, people, _system, _ids = world
    study_uid = generate_uid(prefix=f"{ROOT}.")
    folder = tmp_path / "legacy"
    write_series(folder, 2, study_uid=study_uid, PatientID="P30002",
                 PatientName="Коваль^Олена", PatientBirthDate="19800101",
                 SpecificCharacterSet="ISO_IR 192")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    assert runner.invoke(cli_app, ["import", str(folder), "--as", "ops"]).exit_code == 2
    done = runner.invoke(cli_app, ["import", str(folder), "--as", "gp2"])
    assert done.exit_code == 0, done.output
    assert len(_qido(people["gp2"], study_uid)) == 1
    assert _qido(people["gp"], study_uid) == []
