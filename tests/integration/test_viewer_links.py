"""``GET /api/links`` and the viewer links it hands the MIS, over a real socket on both
databases: each link opens its own study's DICOMweb resources for a few minutes without a
log-in, and nothing else; an expired or altered link is refused with a clear answer; every
use is in the audit trail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.config.settings import Settings
from bridge.domain import Identifier, PatientData
from bridge.mapping.links.signing import sign_link
from bridge.services.links.secret import console_secret
from bridge.services.patients.mpi import upsert_patient
from bridge.store.archive_models import AuditRecord
from bridge.store.models import Patient
from tests.archive_factories import ArchivedStudy, SeriesPlan, archive_study
from tests.http_harness import Api, running_api
from tests.referral_harness import log_in_everyone, make_directory
from tests.worklist_factories import add_order, add_patient, add_step

pytestmark = pytest.mark.integration
DICOM_JSON = {"Accept": "application/dicom+json"}


@pytest.fixture
def served(settings: Settings, session_factory: sessionmaker[Session]
           ) -> Iterator[tuple[Api, ArchivedStudy, ArchivedStudy, ArchivedStudy]]:
    make_directory(session_factory)
    with session_factory.begin() as session:
        pk = upsert_patient(session, PatientData(identifiers=[Identifier("MRN-LINK-1")],
                                                 name="Link^Patient"))
        patient = session.get(Patient, pk)
        older = archive_study(session, settings.archive_root, patient=patient,
                              study_date="20250101", description="Old CT")
        newer = archive_study(session, settings.archive_root, patient=patient,
                              study_date="20261201", description="New CT",
                              series=(SeriesPlan(instances=2), SeriesPlan(modality="MR",
                                                                          number=2)))
        other = archive_study(session, settings.archive_root, study_date="20261201")
    app: FastAPI = create_app(settings, session_factory, metrics_registry=CollectorRegistry())
    with running_api(app, session_factory) as api:
        yield api, older, newer, other


def test_the_mis_gets_a_link_per_study_newest_first(served, settings: Settings) -> None:
    api, older, newer, _ = served
    with api.client("integration") as mis:
        answer = mis.get("/api/links", params={"PatientID": "MRN-LINK-1"})
        by_accession = mis.get("/api/links", params={"StudyInstanceUID": older.study_instance_uid})
        none = mis.get("/api/links", params={"PatientID": "NOBODY"})
    assert answer.status_code == 200, answer.text
    links = answer.json()
    assert [link["StudyInstanceUID"] for link in links] == [newer.study_instance_uid,
                                                           older.study_instance_uid]
    assert links[0]["StudyDescription"] == "New CT"
    assert sorted(links[0]["ModalitiesInStudy"]) == ["CT", "MR"]
    url = urlsplit(links[0]["url"])
    assert url.path == "/console/view" and url.fragment.startswith("brl_")
    assert "MRN-LINK-1" not in links[0]["url"] and "Link" not in links[0]["url"]
    expires = links[0]["expires"]
    assert 0 < time.mktime(time.strptime(expires[:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.gmtime()) <= settings.link_seconds + 5
    assert [link["StudyInstanceUID"] for link in by_accession.json()] == \
        [older.study_instance_uid]
    assert none.status_code == 200 and none.json() == []


def test_a_link_opens_its_study_and_nothing_else(served) -> None:
    api, older, newer, other = served
    with api.client("integration") as mis:
        token = urlsplit(mis.get("/api/links", params={
            "StudyInstanceUID": newer.study_instance_uid}).json()[0]["url"]).fragment
    study = f"/dicomweb/studies/{newer.study_instance_uid}"
    series = newer.series[0]
    with httpx.Client(base_url=api.url, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as holder:
        listed = holder.get(f"{study}/series", headers=DICOM_JSON)
        assert listed.status_code == 200 and len(listed.json()) == 2
        instances = holder.get(f"{study}/series/{series.series_instance_uid}/instances",
                               headers=DICOM_JSON)
        assert instances.status_code == 200 and len(instances.json()) == 2
        metadata = holder.get(f"{study}/series/{series.series_instance_uid}/instances/"
                              f"{series.instances[0].sop_instance_uid}/metadata",
                              headers=DICOM_JSON)
        assert metadata.status_code == 200
        assert metadata.json()[0]["00100020"]["Value"] == ["MRN-LINK-1"]  # the MIS's values
        refused = [
            holder.get(f"/dicomweb/studies/{older.study_instance_uid}/series",
                       headers=DICOM_JSON),  # the same patient's other study
            holder.get(f"/dicomweb/studies/{other.study_instance_uid}", headers=DICOM_JSON),
            holder.get(f"/dicomweb/studies/{newer.study_instance_uid}9/series",
                       headers=DICOM_JSON),  # a UID that merely starts the same
            holder.get("/dicomweb/studies", params={"PatientID": "MRN-LINK-1"},
                       headers=DICOM_JSON),
            holder.get("/api/worklist"), holder.get("/api/links", params={"PatientID": "x"}),
            holder.get("/fhir/Patient"), holder.post(f"{study}", content=b""),
        ]
        assert [r.status_code for r in refused] == [403] * len(refused), \
            [(r.request.url.path, r.status_code) for r in refused]


def test_expired_altered_and_foreign_links_are_refused_with_a_clear_answer(
        served, settings: Settings) -> None:
    api, _, newer, _ = served
    secret = console_secret(settings)
    expired = sign_link(secret, newer.study_instance_uid, int(time.time()) - 1)
    good = sign_link(secret, newer.study_instance_uid, int(time.time()) + 60)
    altered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    foreign = sign_link(b"another bridge's secret........", newer.study_instance_uid,
                        int(time.time()) + 60)
    path = f"/dicomweb/studies/{newer.study_instance_uid}/series"
    answers = {}
    for name, token in (("expired", expired), ("altered", altered), ("foreign", foreign)):
        with httpx.Client(base_url=api.url, timeout=30) as client:
            answers[name] = client.get(path, headers={**DICOM_JSON,
                                                      "Authorization": f"Bearer {token}"})
    assert {name: a.status_code for name, a in answers.items()} == \
        {"expired": 401, "altered": 401, "foreign": 401}
    assert "expired" in answers["expired"].json()["detail"]
    assert "not valid" in answers["altered"].json()["detail"]
    assert "MRN" not in answers["expired"].text


def test_links_are_for_systems_and_bad_questions_are_answered(served) -> None:
    api, *_ = served
    clinics = log_in_everyone(api.url)
    try:
        assert clinics["gp"].get("/api/links", params={"PatientID": "MRN-LINK-1"}
                                 ).status_code == 403
    finally:
        clinics.close()
    with api.client("viewer") as viewer:
        assert viewer.get("/api/links", params={"PatientID": "MRN-LINK-1"}).status_code == 403
    with api.client("integration") as mis:
        nothing = mis.get("/api/links")
        wild = mis.get("/api/links", params={"PatientID": "MRN*"})
        listed = mis.get("/api/links", params={"AccessionNumber": "A\\B"})
    assert (nothing.status_code, wild.status_code, listed.status_code) == (400, 400, 400)
    assert nothing.json()["location"] == "PatientID"
    assert "wild cards" in wild.json()["detail"]


def test_asking_for_links_and_reading_through_one_are_audited(
        served, session_factory: sessionmaker[Session]) -> None:
    api, _, newer, _ = served
    with api.client("integration") as mis:
        token = urlsplit(mis.get("/api/links", params={"PatientID": "MRN-LINK-1"}
                                 ).json()[0]["url"]).fragment
    with httpx.Client(base_url=api.url, timeout=30) as holder:
        holder.get(f"/dicomweb/studies/{newer.study_instance_uid}/series",
                   headers={**DICOM_JSON, "Authorization": f"Bearer {token}"})
    with session_factory() as session:
        rows = session.execute(select(AuditRecord.actor, AuditRecord.action,
                                      AuditRecord.patient_ref, AuditRecord.entity_id)
                               .order_by(AuditRecord.seq)).all()
    asked = [r for r in rows if r.action == "links"]
    assert asked and asked[0].actor == "test integration"
    assert (asked[0].patient_ref or "").startswith("Patient/")
    read = [r for r in rows if r.actor == "viewer link"]
    assert read and read[0].action == "search" and read[0].entity_id == newer.study_instance_uid


@pytest.mark.parametrize("configured", [True, False])
def test_imaging_study_and_worklist_carry_a_link_where_configured(
        settings: Settings, session_factory: sessionmaker[Session], configured: bool) -> None:
    """With BRIDGE_RESOURCE_VIEWER_LINKS the FHIR ImagingStudy has a contained IHE IID
    Endpoint and the worklist's order a ``viewer_url``, each opening that study; without it,
    neither."""
    settings = settings.model_copy(update={"resource_viewer_links": configured})
    make_directory(session_factory)
    with session_factory.begin() as session:
        patient = add_patient(session, ids=[("MRN-LINK-2", "")])
        order = add_order(session, patient)
        add_step(session, order)
        study = archive_study(session, settings.archive_root, patient=patient, order=order)
        order_id = order.id
    app = create_app(settings, session_factory, metrics_registry=CollectorRegistry())
    with running_api(app, session_factory) as api, api.client("integration") as mis:
        resource = mis.get(f"/fhir/ImagingStudy/{study.pk}").json()
        detail = mis.get(f"/api/worklist/{order_id}").json()
        (item,) = mis.get("/api/worklist", params={"accession": order.accession}).json()
        if not configured:
            assert "contained" not in resource and len(resource["endpoint"]) == 1
            assert detail["viewer_url"] is None and item["order"]["viewer_url"] is None
            return
        (contained,) = resource["contained"]
        assert {"reference": "#viewer"} in resource["endpoint"]
        urls = [contained["address"], detail["viewer_url"], item["order"]["viewer_url"]]
        for url in urls:
            token = urlsplit(url).fragment
            with httpx.Client(base_url=api.url, timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as holder:
                assert holder.get(f"/dicomweb/studies/{study.study_instance_uid}/series",
                                  headers=DICOM_JSON).status_code == 200
