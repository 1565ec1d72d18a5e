"""The access matrix: every HTTP route has a row saying who may call it, and the rows hold.

* ``open``: anyone (health, the CapabilityStatement, the login).
* ``clinician``: clinicians may call it, and what they read is filtered to their studies.
  Checked for every GET: what an operator's answer shows of a patient (study UID, MRN) is
  shown to the family doctor who referred that patient and to nobody else.
* ``system``: systems and operators only; a clinician gets 403.

A route added without a row fails :func:`test_every_route_has_a_row`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.config.settings import Settings
from bridge.domain import Identifier, PatientData
from bridge.services.auth.principal import user_principal
from bridge.services.patients.mpi import upsert_patient
from bridge.services.referrals.workflow import NewReferral, create_referral
from bridge.store.models import Patient
from tests.archive_factories import archive_study
from tests.http_harness import serve
from tests.referral_harness import Clinics, log_in_everyone, make_directory

pytestmark = pytest.mark.integration
OPEN, CLINICIAN, SYSTEM = "open", "clinician", "system"

_INSTANCE = "/dicomweb/studies/{study}/series/{series}/instances/{instance}"

ACCESS: dict[tuple[str, str], str] = {
    ("GET", "/health"): OPEN,
    ("GET", "/fhir/metadata"): OPEN,
    ("POST", "/api/login"): OPEN,
    ("POST", "/api/logout"): CLINICIAN,
    ("GET", "/metrics"): SYSTEM,
    ("GET", "/api/messages"): SYSTEM,
    ("GET", "/api/messages/{message_id}"): SYSTEM,
    ("POST", "/api/messages/{message_id}/reprocess"): SYSTEM,
    ("GET", "/api/worklist"): CLINICIAN,
    ("POST", "/api/worklist"): SYSTEM,
    ("GET", "/api/worklist/{order_id}"): CLINICIAN,
    ("PATCH", "/api/worklist/{order_id}"): SYSTEM,
    ("POST", "/api/worklist/{order_id}/cancel"): SYSTEM,
    ("GET", "/api/reconciliation"): SYSTEM,
    ("GET", "/api/reconciliation/summary"): SYSTEM,
    ("POST", "/api/reconciliation/{study_uid}/assign"): SYSTEM,
    ("POST", "/api/reconciliation/{study_uid}/reject"): SYSTEM,
    ("GET", "/api/jobs"): SYSTEM,
    ("GET", "/api/jobs/counts"): SYSTEM,
    ("POST", "/api/jobs/requeue-failed"): SYSTEM,
    ("GET", "/api/jobs/{job_id}"): SYSTEM,
    ("POST", "/api/jobs/{job_id}/requeue"): SYSTEM,
    ("GET", "/api/peers"): SYSTEM,
    ("GET", "/api/activity"): SYSTEM,
    ("GET", "/api/links"): SYSTEM,
    ("POST", "/api/studies/{study_uid}/forward"): SYSTEM,
    ("POST", "/api/studies/{study_uid}/delete"): SYSTEM,
    ("GET", "/api/storage"): SYSTEM,
    ("GET", "/api/storage/history"): SYSTEM,
    ("GET", "/api/storage/deletions"): SYSTEM,
    ("POST", "/api/storage/cleanup"): SYSTEM,
    ("POST", "/api/storage/migrate"): SYSTEM,
    ("POST", "/api/storage/studies/{study_uid}/recall"): SYSTEM,
    ("GET", "/api/users"): SYSTEM,
    ("POST", "/api/users"): SYSTEM,
    ("POST", "/api/users/{username}/disable"): SYSTEM,
    ("POST", "/api/users/{username}/enable"): SYSTEM,
    ("GET", "/api/organizations"): SYSTEM,
    ("POST", "/api/organizations"): SYSTEM,
    ("GET", "/api/referrals"): CLINICIAN,
    ("POST", "/api/referrals"): CLINICIAN,
    ("GET", "/api/referrals/{referral_id}"): CLINICIAN,
    ("POST", "/api/referrals/{referral_id}/status"): CLINICIAN,
    ("POST", "/api/referrals/{referral_id}/report"): CLINICIAN,
    ("POST", "/api/shares"): CLINICIAN,
    # De-identified exports: a clinician whose role a destination lists exports the studies
    # they may see, and sees only their own exports.
    ("GET", "/api/deid/destinations"): CLINICIAN,
    ("POST", "/api/deid/exports"): CLINICIAN,
    ("GET", "/api/deid/exports"): CLINICIAN,
    ("GET", "/api/deid/exports/{export_id}"): CLINICIAN,
    ("POST", "/api/shares/{share_id}/revoke"): CLINICIAN,
    ("GET", "/dicomweb/studies"): CLINICIAN,
    ("POST", "/dicomweb/studies"): CLINICIAN,
    ("GET", "/dicomweb/series"): CLINICIAN,
    ("GET", "/dicomweb/instances"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}"): CLINICIAN,
    ("POST", "/dicomweb/studies/{study}"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/series"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/instances"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/metadata"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/series/{series}"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/series/{series}/metadata"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata"):
        CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}"):
        CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/rendered"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/series/{series}/rendered"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/thumbnail"): CLINICIAN,
    ("GET", "/dicomweb/studies/{study}/series/{series}/thumbnail"): CLINICIAN,
    ("GET", _INSTANCE + "/rendered"): CLINICIAN,
    ("GET", _INSTANCE + "/frames/{frames}/rendered"): CLINICIAN,
    ("GET", _INSTANCE + "/thumbnail"): CLINICIAN,
    ("GET", _INSTANCE + "/frames/{frame}/thumbnail"): CLINICIAN,
    ("POST", "/fhir"): SYSTEM,
    ("POST", "/fhir/$notify"): SYSTEM,
    ("PUT", "/fhir/$notify/{resource_type}/{resource_id}"): SYSTEM,
    ("GET", "/fhir/{resource_type}"): CLINICIAN,  # ImagingStudy, Endpoint only (else 403)
    ("POST", "/fhir/{resource_type}"): SYSTEM,
    ("PUT", "/fhir/{resource_type}"): SYSTEM,
    ("POST", "/fhir/{resource_type}/_search"): CLINICIAN,
    ("GET", "/fhir/{resource_type}/{resource_id}"): CLINICIAN,
    ("PUT", "/fhir/{resource_type}/{resource_id}"): SYSTEM,
    ("GET", "/fhir/Task"): CLINICIAN,
    ("GET", "/fhir/Task/{resource_id}"): CLINICIAN,
    ("PUT", "/fhir/Task/{task_id}"): CLINICIAN,
    ("GET", "/fhir/DiagnosticReport"): CLINICIAN,
    ("POST", "/fhir/DiagnosticReport"): CLINICIAN,
    ("GET", "/fhir/DiagnosticReport/{resource_id}"): CLINICIAN,
    ("GET", "/fhir/Practitioner"): CLINICIAN,
    ("GET", "/fhir/Practitioner/{resource_id}"): CLINICIAN,
    ("GET", "/fhir/PractitionerRole"): CLINICIAN,
    ("GET", "/fhir/PractitionerRole/{resource_id}"): CLINICIAN,
    ("GET", "/fhir/Organization"): CLINICIAN,
    ("GET", "/fhir/Organization/{resource_id}"): CLINICIAN,
    ("GET", "/fhir/ServiceRequest/ref-{referral_id}"): CLINICIAN,
    ("POST", "/fhir/Subscription"): SYSTEM,
    ("POST", "/fhir/Consent"): SYSTEM,
    ("GET", "/fhir/AuditEvent"): SYSTEM,
    ("GET", "/fhir/AuditEvent/{event_id}"): SYSTEM,
    ("GET", "/fhir/Subscription/{subscription_id}"): SYSTEM,
}
MRN = "P40001"


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return create_app(settings, session_factory, metrics_registry=CollectorRegistry())


@pytest.fixture
def served(app: FastAPI, session_factory: sessionmaker[Session], settings: Settings
           ) -> Iterator[tuple[Clinics, dict[str, str]]]:
    ids = make_directory(session_factory)
    with session_factory.begin() as session:
        upsert_patient(session, PatientData([Identifier(MRN, "HOSP")], "Бондар^Ірина",
                                            "19900101", "F"))
        patient = session.query(Patient).one()
        study = archive_study(session, settings.archive_root, patient=patient)
        gp = user_principal(ids["gp"], "gp", "family_doctor", None)
        referral = create_referral(session, gp, NewReferral(
            patient=Identifier(MRN, "HOSP"), performer_kind="diagnostics", modality="CT"))
        values = {
            "study": study.study_instance_uid, "series": study.series[0].series_instance_uid,
            "instance": study.series[0].instances[0].sop_instance_uid, "tag": "7fe00010",
            "frames": "1", "frame": "1",
            "resource_type": "ImagingStudy", "resource_id": str(study.pk),
            "referral_id": str(referral.id), "task_id": str(referral.id),
            "order_id": "1", "message_id": "1", "job_id": "1",
            "study_uid": study.study_instance_uid,
            "username": "gp", "share_id": "1", "patient_pk": str(patient.id),
            "subscription_id": "1", "event_id": "1", "export_id": "1",
        }
    with serve(app) as url:
        clinics = log_in_everyone(url)
        try:
            yield clinics, values
        finally:
            clinics.close()


def _routes(app: FastAPI) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, operations in app.openapi()["paths"].items()
            for method in operations}


def test_every_route_has_a_row(app: FastAPI) -> None:
    routes = _routes(app)
    assert routes - set(ACCESS) == set(), "routes without a row in the access matrix"
    assert set(ACCESS) - routes == set(), "rows for routes that are gone"


def _url(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def test_clinicians_are_refused_the_system_routes(
        app: FastAPI, served: tuple[Clinics, dict[str, str]]) -> None:
    clinics, values = served
    for (method, path), kind in ACCESS.items():
        if kind != SYSTEM:
            continue
        for doctor in ("gp", "rad", "cardio"):
            answer = clinics[doctor].request(method, _url(path, values), json={})
            assert answer.status_code == 403, (doctor, method, path, answer.text)


def test_what_a_clinician_reads_is_only_their_patients(
        app: FastAPI, served: tuple[Clinics, dict[str, str]]) -> None:
    clinics, values = served
    markers = (values["study"], MRN)
    shown_to_operator = 0
    for (method, path), kind in ACCESS.items():
        if kind != CLINICIAN or method != "GET":
            continue
        url = _url(path, values)
        operator = clinics["ops"].get(url)
        stranger = clinics["gp2"].get(url)
        referring = clinics["gp"].get(url)
        assert stranger.status_code in (200, 204, 404), (path, stranger.text)
        for marker in markers:
            assert marker not in stranger.text, (path, marker)
            if marker in operator.text:
                shown_to_operator += 1
                assert marker in referring.text, (path, marker)
    # Not vacuous: the operator's answers showed the patient's data on many routes.
    assert shown_to_operator >= 10


def test_fhir_types_clinicians_do_not_read_are_refused(
        served: tuple[Clinics, dict[str, str]]) -> None:
    clinics, _values = served
    for kind in ("Patient", "ServiceRequest"):
        assert clinics["gp"].get(f"/fhir/{kind}").status_code == 403
    assert clinics["ops"].get("/fhir/Patient").status_code == 200
