"""ImagingStudy from the archive index (the bridge's own FHIR read side) and publishing it to
a real FHIR server (sekmet-fhir) through the ``fhir_publish`` outbox, on both databases.

sekmet plays the MIS: its Patient and ServiceRequest are created there first, as the MIS
would; the bridge has the same patient and order (from HL7) and a study reconciled to them.
Jobs run through the real :class:`~bridge.jobs.worker.JobWorker` (``run_once``), so claiming,
retries, back-off and the failed list are the production ones.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.imagingstudy import ImagingStudy as ImagingStudyR5
from fhir.resources.R4B.imagingstudy import ImagingStudy as ImagingStudyR4
from pydicom.filebase import DicomBytesIO
from pydicom.uid import generate_uid
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.config.settings import Settings, load_settings
from bridge.domain import Identifier, PatientData
from bridge.errors import Conflict, NotFound, Rejected, Transient
from bridge.jobs import queue
from bridge.jobs.queue import ClaimedJob
from bridge.jobs.worker import JobWorker
from bridge.services.archive.admin import delete_study
from bridge.services.archive.stability import mark_stable_studies
from bridge.services.archive.store import ArchiveStore
from bridge.services.fhir.imaging import (
    endpoint_resource,
    imaging_study_for,
    search_imaging_studies,
    study_id_of,
)
from bridge.services.fhir.publish import (
    FHIR_PUBLISH_QUEUE,
    PUBLISHED_EVENT,
    MergeWatch,
    PublishHandler,
    enqueue_publication,
    retry_policy,
)
from bridge.services.patients.mpi import merge_patients
from bridge.store.archive_models import AuditRecord, Job, Study, StudyEvent
from bridge.store.models import Patient, utcnow
from tests.archive_factories import ArchivedStudy, SeriesPlan, Source, archive_study
from tests.dicom_factories import UID_ROOT, ct_slice
from tests.fhir_peer import SekmetPeer, running_sekmet
from tests.http_harness import running_api
from tests.worklist_factories import add_order, add_patient

MRN_SYSTEM = "urn:oid:1.2.804.99.1"
ORDER_SYSTEM = "urn:oid:1.2.804.99.2"
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SOURCE = Source(patient_id="SRC1", name="Source^Patient")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetPeer]:
    with running_sekmet(tmp_path_factory.mktemp("sekmet")) as peer:
        yield peer


@pytest.fixture
def peer(sekmet: SekmetPeer) -> SekmetPeer:
    sekmet.start()  # a test that stopped it and failed leaves it down
    return sekmet


def make_settings(tmp_path: Path, database_url: str, target: str = "", **extra: Any) -> Settings:
    values: dict[str, Any] = dict(
        data_dir=tmp_path / "var", database_url=database_url, mllp_port=0, dicom_port=0,
        http_port=0, public_base_url="http://bridge.test:8080", fhir_target_url=target,
        fhir_publish_retry_base_seconds=0.05, fhir_publish_retry_max_seconds=0.2,
        fhir_publish_max_attempts=50, fhir_timeout_seconds=5)
    values.update(extra)
    return load_settings(**values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, session_factory: sessionmaker[Session],
             peer: SekmetPeer) -> Settings:
    return make_settings(tmp_path, database_url, peer.base_url)


@pytest.fixture
def handler(settings: Settings, session_factory: sessionmaker[Session]
            ) -> Iterator[PublishHandler]:
    publisher = PublishHandler(settings, session_factory)
    yield publisher
    publisher.close()


@pytest.fixture
def worker(settings: Settings, session_factory: sessionmaker[Session],
           handler: PublishHandler) -> JobWorker:
    return JobWorker(session_factory, {FHIR_PUBLISH_QUEUE: handler},
                     policies={FHIR_PUBLISH_QUEUE: retry_policy(settings)})


# ----------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10].upper()}"


def mis_patient(peer: SekmetPeer, mrn: str, system: str = MRN_SYSTEM) -> str:
    """The MIS's Patient on sekmet; returns its id."""
    return str(peer.create({"resourceType": "Patient",
                            "identifier": [{"system": system, "value": mrn}],
                            "name": [{"family": "Galagan", "given": ["Olena"]}]})["id"])


def mis_order(peer: SekmetPeer, patient: str, accession: str,
              status: str = "active") -> dict[str, Any]:
    return peer.create({
        "resourceType": "ServiceRequest", "status": status, "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "identifier": [{"type": {"coding": [{"system": V2, "code": "ACSN"}]},
                        "system": ORDER_SYSTEM, "value": accession}],
        "code": {"text": "CT head"}})


def bridge_study(session_factory: sessionmaker[Session], settings: Settings, *, mrn: str,
                 accession: str, issuer: str = MRN_SYSTEM, stable: bool = True,
                 series: tuple[SeriesPlan, ...] = (SeriesPlan("CT", 2, body_part="HEAD"),),
                 ) -> tuple[ArchivedStudy, int, int]:
    """A patient and order as HL7 made them, and a study reconciled to them (real files);
    stable (its hooks run) unless ``stable=False``. Returns (study, patient pk, order pk)."""
    with session_factory() as session, session.begin():
        patient = add_patient(session, "Galagan^Olena", [(mrn, issuer)])
        order = add_order(session, patient, accession=accession,
                          procedure_code="CTHEAD", procedure_scheme="LOCAL",
                          procedure_meaning="CT head", referring_physician="Bondarenko^Oleh")
        study = archive_study(session, settings.archive_root, source=SOURCE, patient=patient,
                              order=order, description="CT head", series=series)
        patient_pk, order_pk = patient.id, order.id
    if stable:
        make_stable(session_factory)
    return study, patient_pk, order_pk


def make_stable(session_factory: sessionmaker[Session]) -> list[int]:
    with session_factory.begin() as session:
        return mark_stable_studies(session, stable_seconds=1, hooks=[enqueue_publication],
                                   now=utcnow() + timedelta(seconds=30))


def jobs(session_factory: sessionmaker[Session]) -> list[Job]:
    with session_factory() as session:
        rows = list(session.execute(select(Job).where(Job.queue == FHIR_PUBLISH_QUEUE)
                                    .order_by(Job.id)).scalars())
        session.expunge_all()
        return rows


def run_until(worker: JobWorker, done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run due jobs until ``done()`` holds (a condition to wait for, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition was not reached")
        if not worker.run_once():
            time.sleep(0.02)


def settled(session_factory: sessionmaker[Session]) -> Callable[[], bool]:
    """True once no publication job is pending or running."""
    return lambda: all(job.status in (queue.DONE, queue.FAILED)
                       for job in jobs(session_factory))


def on_target(peer: SekmetPeer, study_uid: str) -> list[dict[str, Any]]:
    return peer.search("ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study_uid}")


def events(session_factory: sessionmaker[Session], study_pk: int, kind: str) -> list[StudyEvent]:
    with session_factory() as session:
        rows = list(session.execute(select(StudyEvent).where(
            StudyEvent.study_id == study_pk, StudyEvent.kind == kind)
            .order_by(StudyEvent.id)).scalars())
        session.expunge_all()
        return rows


# ----------------------------------------------------------------------------- own API


def test_own_imaging_study_references_bridge_ids(
        tmp_path: Path, database_url: str, session_factory: sessionmaker[Session]) -> None:
    for version, model in (("R4", ImagingStudyR4), ("R5", ImagingStudyR5)):
        settings = make_settings(tmp_path / version, database_url, fhir_version=version)
        study, patient_pk, order_pk = bridge_study(
            session_factory, settings, mrn=unique("P"), accession=unique("A")[:16],
            stable=False, series=(SeriesPlan("CT", 2, body_part="HEAD"), SeriesPlan("SR", 1)))
        with session_factory() as session:
            resource = imaging_study_for(session, study.pk, settings)
        model.model_validate(resource)
        assert resource["id"] == str(study.pk)
        assert resource["subject"]["reference"] == f"Patient/{patient_pk}"
        assert resource["basedOn"][0]["reference"] == f"ServiceRequest/{order_pk}"
        assert resource["endpoint"] == [{"reference": "Endpoint/wado-rs"}]
        assert resource["numberOfSeries"] == 2 and resource["numberOfInstances"] == 3
        assert resource["started"] == "2026-11-22T10:15:00+02:00"
        # Served while still receiving: the instances are there already.
        assert resource["status"] == "available"
        listed = [i["uid"] for s in resource["series"] for i in s["instance"]]
        assert listed == [i.sop_instance_uid for i in study.instances]


def test_unreconciled_studies_are_not_imaging_studies(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        queued = archive_study(session, settings.archive_root, source=SOURCE)
    with session_factory() as session:
        with pytest.raises(NotFound):
            imaging_study_for(session, queued.pk, settings)
        with pytest.raises(NotFound):
            imaging_study_for(session, queued.pk + 1000, settings)
        total, found = search_imaging_studies(
            session, settings=settings,
            identifier=f"urn:dicom:uid|urn:oid:{queued.study_instance_uid}")
    assert (total, found) == (0, [])
    assert make_stable(session_factory) == [queued.pk]
    assert jobs(session_factory) == []  # not published either


def test_search(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    first, patient_pk, _ = bridge_study(session_factory, settings, mrn=unique("P"),
                                        accession="ACCS1", stable=False)
    with session_factory() as session, session.begin():
        same_patient = session.get(Patient, patient_pk)
        assert same_patient is not None
        order = add_order(session, same_patient, accession="ACCS2")
        second = archive_study(session, settings.archive_root, source=SOURCE,
                               patient=same_patient, order=order)
        empty = archive_study(session, settings.archive_root, source=SOURCE,
                              patient=same_patient, order=None, series=())
    other, _, _ = bridge_study(session_factory, settings, mrn=unique("P"), accession="ACCS3",
                               stable=False)

    def search(**criteria: Any) -> tuple[int, list[str]]:
        with session_factory() as session:
            total, found = search_imaging_studies(session, settings=settings, **criteria)
        return total, [r["id"] for r in found]

    ids = [str(s.pk) for s in (first, second, empty, other)]
    assert search() == (4, ids)
    assert search(identifier=f"urn:dicom:uid|urn:oid:{second.study_instance_uid}") == \
        (1, [ids[1]])
    assert search(identifier=f"urn:oid:{first.study_instance_uid},ACCS3") == \
        (2, [ids[0], ids[3]])
    assert search(identifier="|ACCS2") == (1, [ids[1]])
    assert search(identifier="http://other|ACCS2") == (0, [])
    assert search(patient_id=patient_pk) == (3, ids[:3])
    assert search(patient_id=patient_pk, status="registered") == (1, [ids[2]])
    assert search(status="available") == (3, [ids[0], ids[1], ids[3]])
    assert search(status="cancelled") == (0, [])
    assert search(count=2, offset=1) == (4, ids[1:3])
    assert search(count=0) == (4, [])
    with session_factory.begin() as session:
        session.execute(update(Study).where(Study.id == other.pk).values(
            updated_at=utcnow() + timedelta(hours=1)))
    later = utcnow() + timedelta(minutes=30)
    assert search(last_updated=(later, None)) == (1, [ids[3]])
    assert search(last_updated=(None, later)) == (3, ids[:3])
    assert study_id_of(ids[0]) == first.pk
    assert study_id_of("007") is None and study_id_of("x1") is None


def test_merged_patient_is_followed_to_the_survivor(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    prior_mrn, survivor_mrn = unique("P"), unique("P")
    study, prior_pk, _ = bridge_study(session_factory, settings, mrn=prior_mrn,
                                      accession="ACCM1", stable=False)
    with session_factory() as session, session.begin():
        survivor_pk = merge_patients(
            session, PatientData([Identifier(survivor_mrn, MRN_SYSTEM)], name="New^Name"),
            Identifier(prior_mrn, MRN_SYSTEM))
    with session_factory() as session:
        resource = imaging_study_for(session, study.pk, settings)
        assert resource["subject"]["reference"] == f"Patient/{survivor_pk}"
        assert resource["subject"]["identifier"]["value"] == survivor_mrn
        assert search_imaging_studies(session, settings=settings,
                                      patient_id=survivor_pk)[0] == 1
        assert search_imaging_studies(session, settings=settings, patient_id=prior_pk)[0] == 0


def test_endpoint_resource(settings: Settings) -> None:
    endpoint = endpoint_resource(settings)
    assert endpoint["address"] == "http://bridge.test:8080/dicomweb"
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"


# ----------------------------------------------------------------------------- enqueueing


def test_one_pending_publication_per_study(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    study, _, _ = bridge_study(session_factory, settings, mrn=unique("P"), accession="ACCQ1")
    with session_factory.begin() as session:  # reconciled, hooks again, ...
        assert enqueue_publication(session, study.pk)
        assert enqueue_publication(session, study.pk)
    pending = jobs(session_factory)
    assert len(pending) == 1
    assert pending[0].payload == {"study_uid": study.study_instance_uid, "study_id": study.pk}
    assert pending[0].dedup_key == f"study:{study.study_instance_uid}"


def test_a_queued_study_deleted_before_publication_queues_nothing(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        queued = archive_study(session, settings.archive_root, source=SOURCE)
    with session_factory.begin() as session:
        assert not enqueue_publication(session, queued.pk)
        delete_study(session, study_uid=queued.study_instance_uid, actor="t", reason="test")
    assert jobs(session_factory) == []


# ----------------------------------------------------------------------------- publishing


def test_publish_references_the_mis_patient_and_order_and_updates_on_change(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    mrn, accession = unique("P"), unique("A")[:16]
    patient = mis_patient(peer, mrn)
    order = mis_order(peer, patient, accession)
    study, _, _ = bridge_study(session_factory, settings, mrn=mrn, accession=accession)
    run_until(worker, settled(session_factory))

    found = on_target(peer, study.study_instance_uid)
    assert len(found) == 1
    published = found[0]
    ImagingStudyR4.model_validate(published)
    assert published["subject"]["reference"] == f"Patient/{patient}"
    assert published["basedOn"][0]["reference"] == f"ServiceRequest/{order['id']}"
    assert published["started"] == "2026-11-22T10:15:00+02:00"
    assert published["numberOfSeries"] == 1 and published["numberOfInstances"] == 2
    assert published["meta"]["source"] == "http://bridge.test:8080"
    endpoint = peer.read("Endpoint", published["endpoint"][0]["reference"].split("/")[1])
    assert endpoint["address"] == "http://bridge.test:8080/dicomweb"
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    request = peer.read("ServiceRequest", order["id"])
    assert request["status"] == "completed"
    assert {"reference": f"ImagingStudy/{published['id']}", "type": "ImagingStudy"} in \
        request["supportingInfo"]
    [event] = events(session_factory, study.pk, PUBLISHED_EVENT)
    assert event.details["imaging_study"] == f"ImagingStudy/{published['id']}"
    assert event.details["created"] is True
    assert event.details["service_request_update"] == "completed"

    # A new series after stability re-opens the study; stable again = one more publication.
    store = ArchiveStore(settings, session_factory)
    new_series = generate_uid(prefix=UID_ROOT)
    for number in (1, 2, 3):
        data = DicomBytesIO()
        ct_slice(study_uid=study.study_instance_uid, series_uid=new_series,
                 number=number, PatientID=SOURCE.patient_id, PatientName=SOURCE.name,
                 PatientBirthDate=SOURCE.birth_date, PatientSex=SOURCE.sex,
                 SeriesNumber=9).save_as(data, enforce_file_format=True)
        assert store.accept_bytes(data.getvalue(), calling_ae="CT1").study_id == study.pk
    assert make_stable(session_factory) == [study.pk]
    run_until(worker, settled(session_factory))

    found = on_target(peer, study.study_instance_uid)
    assert [r["id"] for r in found] == [published["id"]]  # updated, never duplicated
    assert found[0]["numberOfSeries"] == 2 and found[0]["numberOfInstances"] == 5
    assert found[0]["meta"]["versionId"] == "2"
    assert [s.get("number") for s in found[0]["series"]] == [1, 9]
    second = events(session_factory, study.pk, PUBLISHED_EVENT)[-1]
    assert second.details["created"] is False
    assert second.details["service_request_update"] == "already completed"
    assert len(peer.history("ServiceRequest", order["id"])) == 2  # created, completed once


def test_many_instances_one_publication(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    mrn = unique("P")
    mis_patient(peer, mrn)
    study, _, _ = bridge_study(session_factory, settings, mrn=mrn, accession=unique("A")[:16],
                               series=(SeriesPlan("CT", 30), SeriesPlan("CT", 20, number=2)))
    with session_factory.begin() as session:  # reconciliation hooks on top of stability
        enqueue_publication(session, study.pk)
    assert len(jobs(session_factory)) == 1
    run_until(worker, settled(session_factory))
    [published] = on_target(peer, study.study_instance_uid)
    assert published["numberOfInstances"] == 50
    assert len(peer.history("ImagingStudy", published["id"])) == 1
    # No ServiceRequest on the target: a logical reference by accession, nothing completed.
    assert "reference" not in published["basedOn"][0]
    [event] = events(session_factory, study.pk, PUBLISHED_EVENT)
    assert event.details["service_request"] is None


def test_target_down_for_a_while_then_published_exactly_once(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    mrn, accession = unique("P"), unique("A")[:16]
    patient = mis_patient(peer, mrn)
    mis_order(peer, patient, accession)
    peer.stop()
    study, _, _ = bridge_study(session_factory, settings, mrn=mrn, accession=accession)
    run_until(worker, lambda: jobs(session_factory)[0].attempts >= 3)
    [job] = jobs(session_factory)
    assert job.status == queue.PENDING
    assert "ConnectError" in (job.last_error or "")
    assert peer.base_url in (job.last_error or "")
    assert events(session_factory, study.pk, PUBLISHED_EVENT) == []
    peer.start()
    run_until(worker, settled(session_factory))
    [job] = jobs(session_factory)
    assert job.status == queue.DONE and job.attempts >= 4
    [published] = on_target(peer, study.study_instance_uid)
    assert len(peer.history("ImagingStudy", published["id"])) == 1
    assert len(events(session_factory, study.pk, PUBLISHED_EVENT)) == 1


def test_a_refused_publication_is_failed_and_requeued_through_the_api(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    mrn = unique("P")
    mis_patient(peer, mrn)
    study, _, _ = bridge_study(session_factory, settings, mrn=mrn, accession=unique("A")[:16],
                               stable=False)
    # Two ImagingStudies with this study's identifier on the target (made by someone else):
    # the conditional update answers 412, which waiting cannot fix.
    duplicates = [peer.create({
        "resourceType": "ImagingStudy", "status": "registered",
        "identifier": [{"system": "urn:dicom:uid",
                        "value": f"urn:oid:{study.study_instance_uid}"}],
        "subject": {"reference": "Patient/x"}}) for _ in range(2)]
    make_stable(session_factory)
    run_until(worker, settled(session_factory))
    [job] = jobs(session_factory)
    assert (job.status, job.attempts) == (queue.FAILED, 1)
    assert "412" in (job.last_error or "") and "more than one" in (job.last_error or "")

    app = create_app(settings, session_factory)
    with running_api(app, session_factory) as api, api.client("admin") as client:
        failed = client.get("/api/jobs", params={"queue": FHIR_PUBLISH_QUEUE,
                                                 "status": "failed"}).json()
        assert [j["id"] for j in failed] == [job.id]
        assert peer.request("DELETE", f"ImagingStudy/{duplicates[1]['id']}").is_success
        response = client.post(f"/api/jobs/{job.id}/requeue")
        assert response.status_code == 200, response.text
    run_until(worker, settled(session_factory))
    [job] = jobs(session_factory)
    assert job.status == queue.DONE
    [published] = on_target(peer, study.study_instance_uid)
    assert published["id"] == duplicates[0]["id"]  # the remaining one, now ours
    assert published["status"] == "available"
    assert published["meta"]["source"] == "http://bridge.test:8080"


def test_unknown_patient_fails_permanently_until_the_mis_has_it(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    mrn = unique("P")
    study, _, _ = bridge_study(session_factory, settings, mrn=mrn, accession=unique("A")[:16])
    run_until(worker, settled(session_factory))
    [job] = jobs(session_factory)
    assert (job.status, job.attempts) == (queue.FAILED, 1)
    assert "no Patient on the target" in (job.last_error or "")
    assert mrn not in (job.last_error or "")  # no patient identifier in operator errors
    assert on_target(peer, study.study_instance_uid) == []

    patient = mis_patient(peer, mrn)
    with session_factory.begin() as session:
        queue.requeue(session, job.id, "test")
    run_until(worker, settled(session_factory))
    [published] = on_target(peer, study.study_instance_uid)
    assert published["subject"]["reference"] == f"Patient/{patient}"


def test_local_issuer_is_matched_by_value(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    mrn = unique("P")
    patient = mis_patient(peer, mrn, system="http://hospital.example/mrn")
    study, _, _ = bridge_study(session_factory, settings, mrn=mrn, accession=unique("A")[:16],
                               issuer="KYIV_CITY_HOSP_1")
    run_until(worker, settled(session_factory))
    [published] = on_target(peer, study.study_instance_uid)
    assert published["subject"] == {"reference": f"Patient/{patient}", "type": "Patient"}


def test_merge_republishes_with_the_new_subject(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    prior_mrn, survivor_mrn = unique("P"), unique("P")
    mis_patient(peer, prior_mrn)
    survivor = mis_patient(peer, survivor_mrn)
    watch = MergeWatch(session_factory)
    study, _, _ = bridge_study(session_factory, settings, mrn=prior_mrn,
                               accession=unique("A")[:16])
    run_until(worker, settled(session_factory))
    assert watch.run_once() == 0
    with session_factory() as session, session.begin():
        merge_patients(session, PatientData([Identifier(survivor_mrn, MRN_SYSTEM)]),
                       Identifier(prior_mrn, MRN_SYSTEM))
    assert watch.run_once() == 1
    assert watch.run_once() == 0  # handled once, even within the overlap window
    run_until(worker, settled(session_factory))
    [published] = on_target(peer, study.study_instance_uid)
    assert published["subject"]["reference"] == f"Patient/{survivor}"
    assert published["meta"]["versionId"] == "2"


def test_deleted_study_is_withdrawn_as_entered_in_error(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    mrn = unique("P")
    mis_patient(peer, mrn)
    study, _, _ = bridge_study(session_factory, settings, mrn=mrn, accession=unique("A")[:16])
    run_until(worker, settled(session_factory))
    # What the reject route does with the hook wired: queue, then delete, one transaction.
    with session_factory.begin() as session:
        assert enqueue_publication(session, study.pk)
        delete_study(session, study_uid=study.study_instance_uid, actor="t", reason="wrong")
    run_until(worker, settled(session_factory))
    [withdrawn] = on_target(peer, study.study_instance_uid)
    assert withdrawn["status"] == "entered-in-error"
    assert withdrawn["meta"]["versionId"] == "2"
    with session_factory() as session:
        audit = session.execute(select(AuditRecord.action).where(
            AuditRecord.entity_id == study.study_instance_uid,
            AuditRecord.actor == "fhir_publish")).scalars().all()
    assert audit == ["fhir_withdraw"]


def test_a_study_the_bridge_did_not_write_is_not_withdrawn(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    study, _, _ = bridge_study(session_factory, settings, mrn=unique("P"),
                               accession=unique("A")[:16])
    foreign = peer.create({
        "resourceType": "ImagingStudy", "status": "registered",
        "identifier": [{"system": "urn:dicom:uid",
                        "value": f"urn:oid:{study.study_instance_uid}"}],
        "subject": {"reference": "Patient/x"}})
    with session_factory.begin() as session:  # deleted before its publication ran
        delete_study(session, study_uid=study.study_instance_uid, actor="t", reason="wrong")
    run_until(worker, settled(session_factory))
    [kept] = on_target(peer, study.study_instance_uid)
    assert (kept["id"], kept["status"]) == (foreign["id"], "registered")
    with session_factory() as session:
        assert session.execute(select(AuditRecord.action).where(
            AuditRecord.entity_id == study.study_instance_uid,
            AuditRecord.actor == "fhir_publish")).scalars().all() == ["fhir_withdraw_skipped"]


def test_a_study_receiving_again_waits_for_stability(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    mrn = unique("P")
    mis_patient(peer, mrn)
    study, _, _ = bridge_study(session_factory, settings, mrn=mrn, accession=unique("A")[:16])
    with session_factory.begin() as session:  # re-opened before the job ran
        session.execute(update(Study).where(Study.id == study.pk).values(state="receiving"))
    run_until(worker, settled(session_factory))
    assert on_target(peer, study.study_instance_uid) == []
    assert make_stable(session_factory) == [study.pk]
    run_until(worker, settled(session_factory))
    assert len(on_target(peer, study.study_instance_uid)) == 1


def test_service_request_in_another_status_is_left_alone(
        settings: Settings, session_factory: sessionmaker[Session], peer: SekmetPeer,
        worker: JobWorker) -> None:
    mrn, accession = unique("P"), unique("A")[:16]
    patient = mis_patient(peer, mrn)
    order = mis_order(peer, patient, accession, status="on-hold")
    study, _, _ = bridge_study(session_factory, settings, mrn=mrn, accession=accession)
    run_until(worker, settled(session_factory))
    [published] = on_target(peer, study.study_instance_uid)
    assert published["basedOn"][0]["reference"] == f"ServiceRequest/{order['id']}"
    assert peer.read("ServiceRequest", order["id"])["status"] == "on-hold"
    [event] = events(session_factory, study.pk, PUBLISHED_EVENT)
    assert event.details["service_request_update"] == "left on-hold"


# ----------------------------------------------------------------------------- HTTP answers


@pytest.mark.parametrize(("status", "conditional", "kind"), [
    (500, False, Transient), (503, False, Transient), (429, False, Transient),
    (408, False, Transient), (409, False, Transient), (412, False, Transient),
    (412, True, Conflict), (400, False, Rejected), (401, False, Rejected),
    (404, False, Rejected), (422, False, Rejected), (302, False, Rejected),
])
def test_every_answer_is_classified(tmp_path: Path, database_url: str,
                                    session_factory: sessionmaker[Session], status: int,
                                    conditional: bool, kind: type[Exception]) -> None:
    """Through httpx's transport seam: which answers are retried and which are final."""
    settings = make_settings(tmp_path, database_url, "http://fhir.test/fhir")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "no luck"}]})

    handler = PublishHandler(settings, session_factory, transport=httpx.MockTransport(answer))
    with pytest.raises(kind, match=f"answered {status}: no luck"):
        handler._request("PUT", "ImagingStudy", json={}, conditional=conditional)


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                   httpx.RemoteProtocolError("cut")])
def test_transport_errors_are_transient(tmp_path: Path, database_url: str,
                                        session_factory: sessionmaker[Session],
                                        error: Exception) -> None:
    settings = make_settings(tmp_path, database_url, "http://fhir.test/fhir")

    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    handler = PublishHandler(settings, session_factory, transport=httpx.MockTransport(fail))
    job = ClaimedJob(1, FHIR_PUBLISH_QUEUE, None, {"study_uid": "1.2.3"}, 1, utcnow())
    with pytest.raises(Transient):
        handler(job, threading.Event())


def test_handler_needs_a_target(settings: Settings, session_factory: sessionmaker[Session],
                                tmp_path: Path, database_url: str) -> None:
    with pytest.raises(ValueError, match="fhir_target_url"):
        PublishHandler(make_settings(tmp_path, database_url), session_factory)
