"""Forwarding studies to an external archive: a real Orthanc receives them by C-STORE.

Each test starts its own Orthanc (tests/orthanc_peer.py) on free ports with a temporary
storage folder, builds a small reconciled study (real Part 10 files under the archive root
plus its index rows) and runs a real :class:`JobWorker` with the forward handler. Back-off is
short; outcomes are polled for with a generous deadline, never timed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.api import jobs as routes_jobs
from bridge.adapters.http.app import create_app
from bridge.config.settings import DicomPeer, ForwardRule, Settings, load_settings
from bridge.jobs import queue
from bridge.jobs.worker import JobWorker
from bridge.services.archive.forwarding import (
    FORWARD_QUEUE,
    ForwardHandler,
    enqueue_forwards,
    forward_key,
    matching_destinations,
    retry_policy,
)
from bridge.store.archive_models import (
    AuditRecord,
    Instance,
    Job,
    Series,
    Study,
    StudyEvent,
)
from bridge.store.models import Patient, PatientIdentifier
from tests.conftest import free_port
from tests.dicom_factories import UID_ROOT, ct_slice
from tests.http_harness import make_tokens, serve
from tests.orthanc_peer import OrthancPeer, running_orthanc

pytestmark = pytest.mark.integration

DEADLINE = 60.0
MIS_NAME = "Ґалаґан^Олена"


# ----------------------------------------------------------------------------- rules


def rule(destination: str, modality: str | None = None,
         calling_ae: str | None = None) -> ForwardRule:
    return ForwardRule(destination=destination, modality=modality, calling_ae=calling_ae)


@pytest.mark.parametrize(("modalities", "calling_aes", "expected"), [
    (["CT"], ["CT1"], ["ALL", "CTS", "FROMCT1"]),
    (["MR"], ["MR1"], ["ALL", "MRS"]),
    (["CT", "SR"], ["MR1"], ["ALL", "CTS"]),
    (["mr"], ["CT1 "], ["ALL", "FROMCT1", "CTS", "MRS"]),  # codes ignore case, AEs padding
    ([], [], ["ALL"]),
])
def test_matching_destinations(modalities: list[str], calling_aes: list[str],
                               expected: list[str]) -> None:
    rules = [rule("ALL"), rule("CTS", modality="CT"), rule("FROMCT1", calling_ae="CT1"),
             rule("CTS", calling_ae="CT1"), rule("NARROW", modality="CT", calling_ae="X"),
             rule("MRS", modality="mr")]
    assert matching_destinations(rules, modalities=modalities,
                                 calling_aes=calling_aes) == expected


def test_no_rules_no_destinations() -> None:
    assert matching_destinations([], modalities=["CT"], calling_aes=["CT1"]) == []


# ----------------------------------------------------------------------------- fixtures


def make_settings(tmp_path: Path, database_url: str, peers: dict[str, int],
                  rules: tuple[ForwardRule, ...], *, max_attempts: int = 50) -> Settings:
    return load_settings(
        data_dir=tmp_path / "var", database_url=database_url, mllp_port=0, dicom_port=0,
        http_port=0, ae_title="BRIDGE",
        dicom_peers=tuple(DicomPeer(ae_title=ae, host="127.0.0.1", port=port, role="scp")
                          for ae, port in peers.items()),
        forward_rules=rules, forward_max_attempts=max_attempts,
        forward_retry_base_seconds=0.05, forward_retry_max_seconds=0.3,
    )


@dataclass
class StudyRef:
    id: int
    study_uid: str
    sop_uids: list[str]
    instance_ids: list[int]
    #: The MIS PatientID (each study gets its own patient).
    patient_id: str


def add_study(settings: Settings, session_factory: sessionmaker[Session], *, count: int = 2,
              modality: str = "CT", calling_ae: str = "CT1", reconciliation: str = "matched",
              state: str = "stable") -> StudyRef:
    """Real Part 10 files under the archive root and their index rows; the study is linked
    to a MIS patient whose PatientID and name differ from the files' values."""
    study_uid = generate_uid(prefix=UID_ROOT)
    series_uid = generate_uid(prefix=UID_ROOT)
    mis_id = f"MIS-{study_uid[-8:]}"
    with session_factory() as session, session.begin():
        patient = Patient(name=MIS_NAME, name_search=MIS_NAME.casefold(), birth_date="19800203",
                          sex="F")
        patient.identifiers.append(PatientIdentifier(value=mis_id, issuer="HOSP",
                                                     position=0))
        session.add(patient)
        session.flush()
        study = Study(study_instance_uid=study_uid, modalities=modality,
                      patient_id=patient.id if reconciliation != "queued" else None,
                      reconciliation=reconciliation, state=state, num_series=1,
                      num_instances=count, source_patient_id="MODALITY-ID")
        session.add(study)
        session.flush()
        series = Series(study_id=study.id, series_instance_uid=series_uid, modality=modality,
                        num_instances=count)
        session.add(series)
        session.flush()
        sop_uids, instance_ids = [], []
        for number in range(1, count + 1):
            ds = ct_slice(study_uid=study_uid, series_uid=series_uid, number=number,
                          Modality=modality)
            relative = f"{study_uid}/{ds.SOPInstanceUID}.dcm"
            path = settings.archive_root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            data = path.read_bytes()
            instance = Instance(
                series_id=series.id, study_id=study.id, sop_instance_uid=ds.SOPInstanceUID,
                sop_class_uid=ds.SOPClassUID, instance_number=number,
                transfer_syntax_uid=ds.file_meta.TransferSyntaxUID, path=relative,
                size=len(data), sha256=hashlib.sha256(data).hexdigest(), calling_ae=calling_ae)
            session.add(instance)
            session.flush()
            sop_uids.append(ds.SOPInstanceUID)
            instance_ids.append(instance.id)
        return StudyRef(study.id, study_uid, sop_uids, instance_ids, mis_id)


def queue_forwards(settings: Settings, session_factory: sessionmaker[Session],
                   study_id: int) -> int:
    with session_factory() as session, session.begin():
        return enqueue_forwards(session, study_id=study_id, settings=settings)


def forward_jobs(session_factory: sessionmaker[Session]) -> list[Job]:
    with session_factory() as session:
        return list(session.execute(
            select(Job).where(Job.queue == FORWARD_QUEUE).order_by(Job.id)).scalars())


def the_job(session_factory: sessionmaker[Session]) -> Job:
    (job,) = forward_jobs(session_factory)
    return job


def events(session_factory: sessionmaker[Session], study_id: int) -> list[StudyEvent]:
    with session_factory() as session:
        return list(session.execute(
            select(StudyEvent).where(StudyEvent.study_id == study_id, StudyEvent.kind ==
                                     "forwarded").order_by(StudyEvent.id)).scalars())


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def job_status(session_factory: sessionmaker[Session]) -> str:
    return the_job(session_factory).status


@contextmanager
def forward_worker(settings: Settings, session_factory: sessionmaker[Session],
                   **kwargs: Any) -> Iterator[JobWorker]:
    handler = ForwardHandler(settings, session_factory, connection_timeout=5.0)
    worker = JobWorker(session_factory, {FORWARD_QUEUE: handler}, poll_seconds=0.05,
                       policies={FORWARD_QUEUE: retry_policy(settings)}, **kwargs)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def run_until_failed(settings: Settings, session_factory: sessionmaker[Session]) -> Job:
    """Run a worker until the one forwarding job is on the failed list; that job."""
    with forward_worker(settings, session_factory):
        wait_for(lambda: job_status(session_factory) == "failed", "the failed list")
    return the_job(session_factory)


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancPeer]:
    with running_orthanc(tmp_path / "orthanc", aet="ORTHANC") as peer:
        yield peer


@pytest.fixture
def forward_settings(tmp_path: Path, database_url: str, orthanc: OrthancPeer) -> Settings:
    return make_settings(tmp_path, database_url, {"ORTHANC": orthanc.dicom_port},
                         (rule("ORTHANC"),))


def assert_in_orthanc_with_mis_values(orthanc: OrthancPeer, study: StudyRef) -> None:
    orthanc.wait_for_instances(study.sop_uids, timeout=DEADLINE)
    for uid in study.sop_uids:
        tags = orthanc.simplified_tags(uid)
        assert tags["PatientID"] == study.patient_id != "MODALITY-ID"
        assert tags["PatientName"] == MIS_NAME
        assert tags["StudyInstanceUID"] == study.study_uid


# ----------------------------------------------------------------------------- enqueueing


def test_only_stable_reconciled_studies_matching_a_rule_are_queued(
        tmp_path: Path, database_url: str, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, database_url, {"CTARCH": 104, "MRARCH": 105},
                             (rule("CTARCH", modality="CT"), rule("MRARCH", modality="MR")))
    ct = add_study(settings, session_factory, modality="CT")
    mr_receiving = add_study(settings, session_factory, modality="MR", state="receiving")
    waiting = add_study(settings, session_factory, reconciliation="queued")
    assert queue_forwards(settings, session_factory, ct.id) == 1
    assert queue_forwards(settings, session_factory, mr_receiving.id) == 0
    assert queue_forwards(settings, session_factory, waiting.id) == 0
    (job,) = forward_jobs(session_factory)
    assert job.payload == {"study_id": ct.id, "destination": "CTARCH"}
    assert job.dedup_key == forward_key(ct.id, "CTARCH")
    # The waiting study is matched later: the reconciliation code calls enqueue_forwards.
    with session_factory() as session, session.begin():
        study = session.get(Study, waiting.id)
        assert study is not None
        study.reconciliation = "assigned"
        study.patient_id = session.execute(select(Patient.id).limit(1)).scalar_one()
    assert queue_forwards(settings, session_factory, waiting.id) == 1


def test_forwards_coalesce_per_study_and_destination(
        tmp_path: Path, database_url: str, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, database_url, {"A": 104, "B": 105},
                             (rule("A"), rule("B", calling_ae="CT1"), rule("A", modality="CT")))
    study = add_study(settings, session_factory)
    for _ in range(3):  # e.g. the study reopened and became stable again before a worker ran
        assert queue_forwards(settings, session_factory, study.id) == 2
    jobs = forward_jobs(session_factory)
    assert sorted(job.payload["destination"] for job in jobs) == ["A", "B"]


def test_no_rules_queue_nothing(settings: Settings,
                                session_factory: sessionmaker[Session]) -> None:
    study = add_study(settings, session_factory)
    assert queue_forwards(settings, session_factory, study.id) == 0
    assert forward_jobs(session_factory) == []


# ----------------------------------------------------------------------------- delivery


def test_study_is_delivered_with_the_mis_values(
        forward_settings: Settings, session_factory: sessionmaker[Session],
        orthanc: OrthancPeer) -> None:
    study = add_study(forward_settings, session_factory, count=3)
    assert queue_forwards(forward_settings, session_factory, study.id) == 1
    with forward_worker(forward_settings, session_factory):
        wait_for(lambda: job_status(session_factory) == "done", "the forward job")
    assert_in_orthanc_with_mis_values(orthanc, study)
    (event,) = events(session_factory, study.id)
    assert event.details["destination"] == "ORTHANC"
    assert event.details["count"] == 3
    assert the_job(session_factory).attempts == 1


def test_a_retry_sends_only_what_the_peer_has_not_taken(
        forward_settings: Settings, session_factory: sessionmaker[Session],
        orthanc: OrthancPeer) -> None:
    study = add_study(forward_settings, session_factory, count=3)
    # As a failed attempt leaves it: the first instance was stored by the peer already.
    with session_factory() as session, session.begin():
        queue.enqueue(session, queue=FORWARD_QUEUE, dedup_key=forward_key(study.id, "ORTHANC"),
                      payload={"study_id": study.id, "destination": "ORTHANC",
                               "sent": study.instance_ids[:1]})
    with forward_worker(forward_settings, session_factory):
        wait_for(lambda: job_status(session_factory) == "done", "the forward job")
    orthanc.wait_for_instances(study.sop_uids[1:], timeout=DEADLINE)
    assert study.sop_uids[0] not in orthanc.instances()
    (event,) = events(session_factory, study.id)
    assert (event.details["count"], event.details["sent_now"]) == (3, 2)


def test_orthanc_down_for_a_while_then_delivered(
        forward_settings: Settings, session_factory: sessionmaker[Session],
        orthanc: OrthancPeer) -> None:
    orthanc.stop(kill=True)
    study = add_study(forward_settings, session_factory)
    queue_forwards(forward_settings, session_factory, study.id)
    with forward_worker(forward_settings, session_factory):
        wait_for(lambda: the_job(session_factory).attempts >= 3, "several failed attempts")
        job = the_job(session_factory)
        assert job.status in ("pending", "running")  # retried, not lost, not dead-lettered
        assert job.last_error is not None and "unreachable" in job.last_error
        assert events(session_factory, study.id) == []
        orthanc.start()
        wait_for(lambda: job_status(session_factory) == "done", "delivery after the restart")
    assert_in_orthanc_with_mis_values(orthanc, study)
    assert len(events(session_factory, study.id)) == 1


def test_an_abandoned_forward_is_run_again_after_its_lease(
        forward_settings: Settings, session_factory: sessionmaker[Session],
        orthanc: OrthancPeer) -> None:
    study = add_study(forward_settings, session_factory)
    queue_forwards(forward_settings, session_factory, study.id)
    # A worker claimed the job and was killed (kill -9) before it could record anything.
    (abandoned,) = queue.claim(session_factory, [FORWARD_QUEUE], limit=1, lease_seconds=0.5)
    with forward_worker(forward_settings, session_factory):
        wait_for(lambda: job_status(session_factory) == "done", "the abandoned job")
    assert the_job(session_factory).attempts == abandoned.attempt + 1
    assert_in_orthanc_with_mis_values(orthanc, study)


def test_an_unknown_destination_goes_to_the_failed_list_at_once(
        forward_settings: Settings, session_factory: sessionmaker[Session]) -> None:
    study = add_study(forward_settings, session_factory)
    # A destination removed from the configuration after its job was queued.
    with session_factory() as session, session.begin():
        queue.enqueue(session, queue=FORWARD_QUEUE, dedup_key=forward_key(study.id, "GONE"),
                      payload={"study_id": study.id, "destination": "GONE"})
    job = run_until_failed(forward_settings, session_factory)
    assert job.attempts == 1
    assert job.last_error is not None and "'GONE' is not a DICOM peer" in job.last_error


def test_an_unreachable_destination_is_retried_then_dead_lettered(
        tmp_path: Path, database_url: str, session_factory: sessionmaker[Session]) -> None:
    settings = make_settings(tmp_path, database_url, {"NOBODY": free_port()},
                             (rule("NOBODY"),), max_attempts=3)
    study = add_study(settings, session_factory)
    queue_forwards(settings, session_factory, study.id)
    job = run_until_failed(settings, session_factory)
    assert job.attempts == 3
    assert job.last_error is not None and "NOBODY at 127.0.0.1" in job.last_error


def test_a_permanently_rejected_association_is_not_retried(
        tmp_path: Path, database_url: str, session_factory: sessionmaker[Session]) -> None:
    # This Orthanc checks the called AE title; the peer entry names another one.
    with running_orthanc(tmp_path / "strict", aet="STRICT",
                         extra_config={"DicomCheckCalledAet": True}) as strict:
        settings = make_settings(tmp_path, database_url, {"WRONGAE": strict.dicom_port},
                                 (rule("WRONGAE"),))
        study = add_study(settings, session_factory)
        queue_forwards(settings, session_factory, study.id)
        job = run_until_failed(settings, session_factory)
        assert strict.instances() == []
    assert job.attempts == 1
    assert job.last_error is not None and "rejected the association permanently" in \
        job.last_error


# ----------------------------------------------------------------------------- the API


def test_failed_list_and_requeue_through_the_api(
        tmp_path: Path, database_url: str, session_factory: sessionmaker[Session],
        orthanc: OrthancPeer) -> None:
    settings = make_settings(tmp_path, database_url, {"ORTHANC": orthanc.dicom_port},
                             (rule("ORTHANC"),), max_attempts=2)
    orthanc.stop(kill=True)
    first = add_study(settings, session_factory)
    second = add_study(settings, session_factory)
    queue_forwards(settings, session_factory, first.id)
    queue_forwards(settings, session_factory, second.id)
    keys = make_tokens(session_factory)
    operator = {"Authorization": f"Bearer {keys[routes_jobs.JOBS_ROLE]}"}
    app = create_app(settings, session_factory)
    with forward_worker(settings, session_factory), serve(app) as url, \
            httpx.Client(base_url=url, headers=operator, timeout=30) as api:
        wait_for(lambda: all(job.status == "failed" for job in forward_jobs(session_factory)),
                 "both jobs to reach the failed list")
        failed = api.get("/api/jobs", params={"queue": FORWARD_QUEUE, "status": "failed"})
        assert failed.status_code == 200
        listed = {job["payload"]["study_id"]: job for job in failed.json()}
        assert set(listed) == {first.id, second.id}
        assert all(job["attempts"] == 2 and "unreachable" in job["last_error"]
                   for job in listed.values())
        assert api.get("/api/jobs/counts", params={"queue": FORWARD_QUEUE}).json()[
            "failed"] == 2
        first_job = listed[first.id]["id"]
        assert api.get(f"/api/jobs/{first_job}").json()["status"] == "failed"

        # Viewers and integration tokens may not see or requeue jobs; no token is 401.
        for role in ("viewer", "integration"):
            headers = {"Authorization": f"Bearer {keys[role]}"}
            assert api.get("/api/jobs", headers=headers).status_code == 403
            assert api.post(f"/api/jobs/{first_job}/requeue",
                            headers=headers).status_code == 403
        with httpx.Client(base_url=url) as anonymous:
            assert anonymous.get("/api/jobs").status_code == 401

        orthanc.start()
        requeued = api.post(f"/api/jobs/{first_job}/requeue")
        assert requeued.status_code == 200, requeued.text
        assert (requeued.json()["status"], requeued.json()["attempts"]) == ("pending", 0)
        wait_for(lambda: api.get(f"/api/jobs/{first_job}").json()["status"] == "done",
                 "the requeued job to be delivered")
        assert_in_orthanc_with_mis_values(orthanc, first)

        # A done job cannot be requeued; an unknown one is 404; both in the error shape.
        conflict = api.post(f"/api/jobs/{first_job}/requeue")
        assert conflict.status_code == 409 and conflict.json()["error"] == "conflict"
        missing = api.post("/api/jobs/999999/requeue")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"

        everything = api.post("/api/jobs/requeue-failed", params={"queue": FORWARD_QUEUE})
        assert everything.status_code == 200
        assert everything.json() == {"queue": FORWARD_QUEUE, "requeued": 1,
                                     "job_ids": [listed[second.id]["id"]]}
        wait_for(lambda: all(job.status == "done" for job in forward_jobs(session_factory)),
                 "every requeued job to be delivered")
        assert_in_orthanc_with_mis_values(orthanc, second)
        assert api.post("/api/jobs/requeue-failed").status_code == 422  # queue is required

    with session_factory() as session:
        audit = session.execute(select(AuditRecord).order_by(AuditRecord.id)).scalars().all()
    assert [(a.action, a.entity, a.entity_id) for a in audit] == [
        ("requeue", "job", str(first_job)), ("requeue", "job", str(listed[second.id]["id"]))]
    assert {a.actor for a in audit} == {f"test {routes_jobs.JOBS_ROLE}"}  # the token's name


# ----------------------------------------------------------------------------- operator


def test_an_operator_forwards_a_study_through_the_api(
        tmp_path: Path, database_url: str, session_factory: sessionmaker[Session],
        orthanc: OrthancPeer) -> None:
    """``POST /api/studies/{uid}/forward``: no rule needed; queued once per peer; refused for
    an unknown peer, an unknown study and a study still waiting for reconciliation."""
    settings = make_settings(tmp_path, database_url, {"ORTHANC": orthanc.dicom_port}, ())
    study = add_study(settings, session_factory)
    waiting = add_study(settings, session_factory, reconciliation="queued")
    keys = make_tokens(session_factory)
    operator = {"Authorization": f"Bearer {keys['integration']}"}
    app = create_app(settings, session_factory)
    with serve(app) as url, httpx.Client(base_url=url, headers=operator, timeout=30) as api:
        path = f"/api/studies/{study.study_uid}/forward"
        first = api.post(path, json={"destination": "ORTHANC"})
        again = api.post(path, json={"destination": "ORTHANC"})
        assert first.status_code == again.status_code == 202, first.text
        assert first.json() == {"study_instance_uid": study.study_uid,
                                "destination": "ORTHANC", "job_id": again.json()["job_id"]}
        unknown_peer = api.post(path, json={"destination": "NOWHERE"})
        assert unknown_peer.status_code == 400
        assert unknown_peer.json()["location"] == "destination"
        assert api.post("/api/studies/1.2.3.4/forward",
                        json={"destination": "ORTHANC"}).status_code == 404
        queued = api.post(f"/api/studies/{waiting.study_uid}/forward",
                          json={"destination": "ORTHANC"})
        assert queued.status_code == 409 and "assign" in queued.json()["detail"]
        viewer = {"Authorization": f"Bearer {keys['viewer']}"}
        assert api.post(path, json={"destination": "ORTHANC"},
                        headers=viewer).status_code == 403
    assert [job.payload for job in forward_jobs(session_factory)] == [
        {"study_id": study.id, "destination": "ORTHANC"}]
    with forward_worker(settings, session_factory):
        wait_for(lambda: job_status(session_factory) == "done", "the operator's forward")
    assert_in_orthanc_with_mis_values(orthanc, study)
    with session_factory() as session:
        audit = session.execute(select(AuditRecord).where(
            AuditRecord.action == "forward")).scalars().all()
    assert [(a.entity_id, a.details["destination"]) for a in audit] == [
        (study.study_uid, "ORTHANC")] * 2


def test_an_operator_deletes_a_study_under_the_retention_policy(
        tmp_path: Path, database_url: str, session_factory: sessionmaker[Session]) -> None:
    """``POST /api/studies/{uid}/delete`` (admin): refused under retention unless overridden;
    then the rows and files are gone and the audit record names who and why."""
    settings = make_settings(tmp_path, database_url, {}, ()).model_copy(
        update={"retention_days": 3650})
    study = add_study(settings, session_factory)
    keys = make_tokens(session_factory)
    app = create_app(settings, session_factory)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    path = f"/api/studies/{study.study_uid}/delete"
    files = list((settings.archive_root / study.study_uid).iterdir())
    assert files
    with serve(app) as url, httpx.Client(base_url=url, headers=admin, timeout=30) as api:
        integration = {"Authorization": f"Bearer {keys['integration']}"}
        assert api.post(path, json={"reason": "test"}, headers=integration).status_code == 403
        assert api.post(path, json={}).status_code == 422  # a reason is required
        kept = api.post(path, json={"reason": "wrong patient"})
        assert kept.status_code == 409 and kept.json()["location"] == "override_retention"
        assert all(f.exists() for f in files)
        gone = api.post(path, json={"reason": "wrong patient", "override_retention": True})
        assert gone.status_code == 204, gone.text
        assert api.post(path, json={"reason": "again"}).status_code == 404
    assert not any(f.exists() for f in files)
    with session_factory() as session:
        assert session.execute(select(Study).where(Study.id == study.id)).first() is None
        (record,) = session.execute(select(AuditRecord).where(
            AuditRecord.action == "delete")).scalars().all()
    assert (record.entity_id, record.details["reason"],
            record.details["override_retention"]) == (study.study_uid, "wrong patient", True)
