"""The FHIR API over real sockets (uvicorn + httpx), on SQLite and on PostgreSQL.

Patient and ServiceRequest are the worklist: every write is checked in the database (and the
worklist it feeds), every answer is validated with fhir.resources in the configured version.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.adapters.http.fhir import routes as routes_fhir
from bridge.config.settings import Settings, load_settings
from bridge.domain import (
    CodedValue,
    Identifier,
    OrderAction,
    OrderCommand,
    OrderData,
    PatientData,
    StepData,
    StepStatus,
)
from bridge.mapping.fhir.version import check_resource
from bridge.services.fhir.resources import apply_service_request
from bridge.services.worklist.orders import OrderPolicy, apply_order_command
from bridge.store.fhir_models import FhirSource
from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep
from tests.archive_factories import archive_study
from tests.http_harness import Api, running_api

pytestmark = pytest.mark.integration

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
PLACER = "urn:oid:1.2.804.99.3"
MRN = "urn:oid:1.2.804.99.1"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def with_fhir(app: FastAPI) -> FastAPI:
    """The app with ``/fhir`` (until the composition root includes the router itself)."""
    if not any(getattr(route, "path", "").startswith("/fhir/") for route in app.routes):
        app.include_router(routes_fhir.router)
    return app


@pytest.fixture
def api(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    with running_api(with_fhir(create_app(settings, session_factory)),
                     session_factory) as served:
        yield served


@pytest.fixture
def writer(api: Api) -> Iterator[httpx.Client]:
    with api.client("integration") as client:
        client.headers.update(FHIR_JSON)
        yield client


def valid(response: httpx.Response, version: str = "R4") -> dict[str, Any]:
    """The answer's body, checked: FHIR JSON that fhir.resources accepts."""
    assert response.headers["content-type"].startswith("application/fhir+json"), response.text
    body: dict[str, Any] = response.json()
    check_resource(version, body)
    return body


def issue(response: httpx.Response, status: int, version: str = "R4") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = valid(response, version)
    assert body["resourceType"] == "OperationOutcome"
    found: dict[str, Any] = body["issue"][0]
    return found


def service_request(placer: str, patient: dict[str, Any] | None = None,
                    **changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [{"type": {"coding": [{"system": V2, "code": "PLAC"}]},
                        "system": PLACER, "value": placer}],
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2",
                             "display": "CT Chest"}]},
        "orderDetail": [{"coding": [{"system": DCM, "code": "CT"}]}],
        "subject": patient or {"identifier": {"system": MRN, "value": f"MRN-{placer}"}},
        "occurrenceDateTime": "2031-05-02T09:30:00+03:00",
        "authoredOn": "2031-04-30T12:00:00+03:00",
        "note": [{"text": "allergic to contrast"}],
    }
    resource.update(changes)
    return resource


def patient(mrn: str, family: str = "Галаган") -> dict[str, Any]:
    return {"resourceType": "Patient",
            "identifier": [{"type": {"coding": [{"system": V2, "code": "MR"}]},
                            "system": MRN, "value": mrn}],
            "name": [{"family": family, "given": ["Олена"]}], "gender": "female",
            "birthDate": "1980-05-01"}


def counts(factory: sessionmaker[Session]) -> tuple[int, int, int, int]:
    with factory() as session:
        return tuple(session.scalar(select(func.count()).select_from(model)) or 0
                     for model in (Patient, Order, ProcedureStep, FhirSource))  # type: ignore[return-value]


def steps_of(factory: sessionmaker[Session], order_id: int) -> list[ProcedureStep]:
    with factory() as session:
        return list(session.scalars(select(ProcedureStep).where(
            ProcedureStep.order_id == order_id).order_by(ProcedureStep.id)))


def worklist(api: Api) -> list[dict[str, Any]]:
    with api.client("viewer") as client:
        answer = client.get("/api/worklist", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()
    return items


# ---------------------------------------------------------------------- metadata, tokens


def test_metadata_is_open_and_says_what_is_served(api: Api) -> None:
    with api.client() as client:
        statement = valid(client.get("/fhir/metadata"))
    assert statement["fhirVersion"] == "4.0.1"
    kinds = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(kinds) == {"Patient", "ServiceRequest", "ImagingStudy", "Endpoint", "Task",
                          "DiagnosticReport", "Practitioner", "PractitionerRole",
                          "Organization", "Subscription", "Consent", "AuditEvent"}
    assert {i["code"] for i in kinds["Task"]["interaction"]} == {
        "read", "search-type", "update"}
    assert "Task:focus" in kinds["Task"]["searchInclude"]
    assert {i["code"] for i in kinds["ServiceRequest"]["interaction"]} == {
        "read", "search-type", "create", "update"}
    assert {i["code"] for i in kinds["ImagingStudy"]["interaction"]} == {"read", "search-type"}
    assert "ImagingStudy:subject" in kinds["ImagingStudy"]["searchInclude"]


def test_tokens_and_roles_are_outcomes(api: Api) -> None:
    with api.client() as anonymous:
        assert issue(anonymous.get("/fhir/Patient"), 401)["code"] == "login"
    with api.client("viewer") as viewer:
        denied = viewer.post("/fhir/ServiceRequest", json=service_request("P0"))
        assert issue(denied, 403)["code"] == "forbidden"
    assert counts(api.session_factory) == (0, 0, 0, 0)


# --------------------------------------------------------------- ServiceRequest → worklist


def test_a_service_request_is_an_order_on_the_worklist(api: Api, writer: httpx.Client) -> None:
    created = writer.post("/fhir/ServiceRequest", json=service_request("P1"))
    assert created.status_code == 201, created.text
    resource = valid(created)
    order_id = int(resource["id"])
    assert created.headers["ETag"] == f'W/"{resource["meta"]["versionId"]}"'
    assert created.headers["Location"].endswith(
        f"/fhir/ServiceRequest/{order_id}/_history/{resource['meta']['versionId']}")
    [item] = worklist(api)
    assert item["order"]["id"] == order_id
    assert (item["order"]["placer_number"], item["order"]["placer_issuer"]) == ("P1", PLACER)
    assert item["order"]["priority"] == "HIGH"
    assert item["step"]["modality"] == "CT"
    assert item["step"]["station_ae"] == "CT_SCANNER_1"
    assert (item["step"]["start_date"], item["step"]["start_time"]) == ("20310502", "093000")
    assert item["step"]["status"] == "SCHEDULED"
    assert item["patient"]["patient_id"] == "MRN-P1"
    read = valid(writer.get(f"/fhir/ServiceRequest/{order_id}"))
    assert read == resource
    assert read["note"] == [{"text": "allergic to contrast"}]
    accession = next(i for i in read["identifier"]
                     if i["type"]["coding"][0]["code"] == "ACSN")
    assert accession["value"] == item["order"]["accession"]  # generated by the bridge
    subject = valid(writer.get(f"/fhir/{read['subject']['reference']}"))
    assert subject["identifier"][0]["value"] == "MRN-P1"


def test_status_changes_drive_the_worklist(api: Api, writer: httpx.Client) -> None:
    resource = valid(writer.post("/fhir/ServiceRequest", json=service_request("P2")))
    order_id = resource["id"]

    def put(status: str) -> httpx.Response:
        body = {**service_request("P2", status=status), "id": order_id}
        return writer.put(f"/fhir/ServiceRequest/{order_id}", json=body)

    expected = [("on-hold", "SUSPENDED"), ("revoked", "CANCELED"), ("active", "SCHEDULED"),
                ("completed", "COMPLETED")]
    for status, step_status in expected:
        answer = put(status)
        assert answer.status_code == 200, answer.text
        assert valid(answer)["status"] == status
        assert [s.status for s in steps_of(api.session_factory, int(order_id))] == [
            step_status]
    on_list = {item["order"]["id"] for item in worklist(api)}
    assert int(order_id) not in on_list
    ended = put("active")
    assert issue(ended, 409)["expression"] == ["ServiceRequest.status"]
    assert [s.status for s in steps_of(api.session_factory, int(order_id))] == ["COMPLETED"]


def test_a_draft_is_kept_off_the_worklist_until_it_is_active(api: Api,
                                                             writer: httpx.Client) -> None:
    draft = valid(writer.post("/fhir/ServiceRequest", json=service_request("P3",
                                                                          status="draft")))
    assert draft["status"] == "draft"
    assert worklist(api) == []
    body = {**service_request("P3"), "id": draft["id"]}
    assert valid(writer.put(f"/fhir/ServiceRequest/{draft['id']}", json=body))[
        "status"] == "active"
    assert [i["order"]["id"] for i in worklist(api)] == [int(draft["id"])]


def test_if_match_and_versions_that_follow_hl7(api: Api, writer: httpx.Client,
                                               settings: Settings) -> None:
    resource = valid(writer.post("/fhir/ServiceRequest", json=service_request("P4")))
    order_id, first = resource["id"], resource["meta"]["versionId"]
    body = {**service_request("P4", priority="stat"), "id": order_id}
    stale = writer.put(f"/fhir/ServiceRequest/{order_id}", json=body,
                       headers={"If-Match": 'W/"9.deadbeef"'})
    assert issue(stale, 412)["code"] == "conflict"
    assert valid(writer.get(f"/fhir/ServiceRequest/{order_id}"))["priority"] == "urgent"
    changed = writer.put(f"/fhir/ServiceRequest/{order_id}", json=body,
                         headers={"If-Match": f'W/"{first}"'})
    assert changed.status_code == 200, changed.text
    second = valid(changed)["meta"]["versionId"]
    assert second != first and second.startswith("2.")
    # The MIS changes the same order over HL7 (same placer number): a new version.
    with api.session_factory() as session, session.begin():
        apply_order_command(session, OrderCommand(
            action=OrderAction.CHANGE, patient=PatientData([Identifier("MRN-P4", MRN)]),
            order=OrderData(placer_number="P4", placer_issuer=PLACER, priority="ROUTINE",
                            steps=[StepData()]),
            step_status=StepStatus.SCHEDULED), policy=OrderPolicy.from_settings(settings))
    after_hl7 = valid(writer.get(f"/fhir/ServiceRequest/{order_id}"))
    assert after_hl7["priority"] == "routine"
    assert after_hl7["meta"]["versionId"] != second
    lost_update = writer.put(f"/fhir/ServiceRequest/{order_id}", json=body,
                             headers={"If-Match": f'W/"{second}"'})
    assert lost_update.status_code == 412
    assert counts(api.session_factory)[1] == 1


def test_an_hl7_order_reads_as_fhir_and_stays_one_order(api: Api, writer: httpx.Client,
                                                        settings: Settings) -> None:
    with api.session_factory() as session, session.begin():
        order_id = apply_order_command(session, OrderCommand(
            action=OrderAction.NEW,
            patient=PatientData([Identifier("MRN-H1", MRN, "MR")], name="Франко^Іван",
                                birth_date="19600102", sex="M"),
            order=OrderData(placer_number="H1", placer_issuer=PLACER, accession="ACC-H1",
                            procedure_code=CodedValue("RPID16", "RADLEX", "CT Head"),
                            priority="STAT", steps=[
                                StepData(modality="CT", start_date="20310502",
                                         start_time="0800", station_ae="CT_SCANNER_1"),
                                StepData(modality="CT", start_date="20310502",
                                         start_time="0900", station_ae="CT_SCANNER_2")]),
            step_status=StepStatus.SCHEDULED), policy=OrderPolicy.from_settings(settings))
    read = valid(writer.get(f"/fhir/ServiceRequest/{order_id}"))
    assert read["status"] == "active" and read["priority"] == "stat"
    assert read["code"]["coding"][0] == {"system": "http://radlex.org", "code": "RPID16",
                                         "display": "CT Head"}
    assert read["meta"]["versionId"].startswith("0.")
    # FHIR updates it by the same placer number (a conditional update): still one order,
    # and both steps (which FHIR cannot describe one by one) stay, now suspended.
    held = service_request("H1", status="on-hold",
                           subject={"reference": read["subject"]["reference"]})
    answer = writer.put("/fhir/ServiceRequest", params={"identifier": f"{PLACER}|H1"},
                        json=held)
    assert answer.status_code == 200, answer.text
    assert valid(answer)["id"] == str(order_id)
    assert [s.status for s in steps_of(api.session_factory, order_id)] == ["SUSPENDED"] * 2
    assert counts(api.session_factory)[1:3] == (1, 2)
    patient_read = valid(writer.get(f"/fhir/{read['subject']['reference']}"))
    assert patient_read["name"] == [{"use": "official", "family": "Франко",
                                     "given": ["Іван"]}]


def test_conditional_create_and_update(api: Api, writer: httpx.Client) -> None:
    condition = {"If-None-Exist": f"identifier={PLACER}|P5"}
    first = writer.post("/fhir/ServiceRequest", json=service_request("P5"), headers=condition)
    again = writer.post("/fhir/ServiceRequest", json=service_request("P5"), headers=condition)
    assert (first.status_code, again.status_code) == (201, 200)
    assert valid(first)["id"] == valid(again)["id"]
    duplicate = writer.post("/fhir/ServiceRequest", json=service_request("P5"))
    assert f"ServiceRequest/{valid(first)['id']}" in issue(duplicate, 409)["diagnostics"]
    made = writer.put("/fhir/ServiceRequest", params={"identifier": f"{PLACER}|P6"},
                      json=service_request("P6"))
    assert made.status_code == 201, made.text
    same = writer.put("/fhir/ServiceRequest", params={"identifier": f"{PLACER}|P6"},
                      json=service_request("P6"))
    assert same.status_code == 200
    assert valid(same)["meta"]["versionId"] == valid(made)["meta"]["versionId"]  # unchanged
    assert counts(api.session_factory)[1] == 2
    pat = writer.post("/fhir/Patient", json=patient("MRN-C"),
                      headers={"If-None-Exist": f"identifier={MRN}|MRN-C"})
    pat_again = writer.post("/fhir/Patient", json=patient("MRN-C"),
                            headers={"If-None-Exist": f"identifier={MRN}|MRN-C"})
    assert (pat.status_code, pat_again.status_code) == (201, 200)
    assert issue(writer.post("/fhir/Patient", json=patient("MRN-C")), 409)["code"] == "conflict"


def test_patient_update_and_search(api: Api, writer: httpx.Client) -> None:
    created = valid(writer.post("/fhir/Patient", json=patient("MRN-U")))
    pid = created["id"]
    changed = {**patient("MRN-U", family="Шевченко"), "id": pid,
               "telecom": [{"system": "phone", "value": "+380441234567"}]}
    answer = writer.put(f"/fhir/Patient/{pid}", json=changed,
                        headers={"If-Match": created["meta"]["versionId"]})
    assert answer.status_code == 200, answer.text
    updated = valid(answer)
    assert updated["name"][0]["family"] == "Шевченко"
    assert updated["telecom"] == changed["telecom"]
    with api.session_factory() as session:
        assert session.get(Patient, int(pid)).name == "Шевченко^Олена"  # type: ignore[union-attr]
    found = valid(writer.get("/fhir/Patient", params={"identifier": f"{MRN}|MRN-U"}))
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]
    assert valid(writer.get("/fhir/Patient", params={"identifier": "MRN-U"}))["total"] == 1
    assert valid(writer.get("/fhir/Patient", params={"identifier": "urn:x|MRN-U"}))[
        "total"] == 0
    wrong_id = writer.put(f"/fhir/Patient/{pid}", json={**changed, "id": "999"})
    assert issue(wrong_id, 400)["code"] == "structure"
    unknown = writer.put("/fhir/Patient/999", json={**changed, "id": "999"})
    assert issue(unknown, 405)["code"] == "not-supported"
    assert issue(writer.get("/fhir/Patient/999"), 404)["code"] == "not-found"


def test_search_paging_include_and_last_updated(api: Api, writer: httpx.Client) -> None:
    ids = [valid(writer.post("/fhir/ServiceRequest", json=service_request(f"S{n}")))["id"]
           for n in range(5)]
    body = {**service_request("S0", status="on-hold"), "id": ids[0]}
    assert writer.put(f"/fhir/ServiceRequest/{ids[0]}", json=body).status_code == 200
    seen: list[str] = []
    page = valid(writer.get("/fhir/ServiceRequest", params={
        "_count": "2", "_include": "ServiceRequest:subject"}))
    assert page["total"] == 5
    while True:
        matches = [e for e in page.get("entry", []) if e["search"]["mode"] == "match"]
        included = [e for e in page.get("entry", []) if e["search"]["mode"] == "include"]
        assert {e["resource"]["subject"]["reference"] for e in matches} == {
            f"Patient/{e['resource']['id']}" for e in included}
        seen += [e["resource"]["id"] for e in matches]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = valid(writer.get(following[0]))
    assert seen == ids
    held = valid(writer.get("/fhir/ServiceRequest", params={"status": "on-hold"}))
    assert [e["resource"]["id"] for e in held["entry"]] == [ids[0]]
    active = valid(writer.get("/fhir/ServiceRequest", params={"status": "active,revoked"}))
    assert active["total"] == 4
    subject = valid(writer.get(f"/fhir/ServiceRequest/{ids[1]}"))["subject"]["reference"]
    mine = valid(writer.get("/fhir/ServiceRequest", params={"patient": subject}))
    assert [e["resource"]["id"] for e in mine["entry"]] == [ids[1]]
    by_placer = valid(writer.get("/fhir/ServiceRequest", params={"identifier": f"{PLACER}|S3"}))
    assert [e["resource"]["id"] for e in by_placer["entry"]] == [ids[3]]
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert valid(writer.get("/fhir/ServiceRequest", params={"_lastUpdated": f"ge{past}"}))[
        "total"] == 5
    assert valid(writer.get("/fhir/ServiceRequest", params={"_lastUpdated": f"gt{future}"}))[
        "total"] == 0
    assert issue(writer.get("/fhir/ServiceRequest", params={"_lastUpdated": "soon"}), 400)
    strict = writer.get("/fhir/ServiceRequest", params={"performer": "x"},
                        headers={"Prefer": "handling=strict"})
    assert issue(strict, 400)["code"] == "structure"
    lenient = valid(writer.get("/fhir/ServiceRequest", params={"performer": "x"}))
    assert lenient["total"] == 5 and "performer" not in lenient["link"][0]["url"]
    posted = valid(writer.post("/fhir/ServiceRequest/_search", content=b"status=on-hold",
                               headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert [e["resource"]["id"] for e in posted["entry"]] == [ids[0]]
    only_total = valid(writer.get("/fhir/ServiceRequest", params={"_count": "0"}))
    assert only_total["total"] == 5 and "entry" not in only_total


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("content", "status", "code"), [
    (b'{"resourceType": "ServiceRequest", ', 400, "structure"),
    (b'[1, 2]', 400, "structure"),
    (b'{"resourceType": "Patient", "identifier": [{"value": "X"}]}', 400, "structure"),
    (b'{"resourceType": "ServiceRequest", "status": "active", "intent": "order", '
     b'"subject": {"reference": "Patient/1"}, "authoredOn": "yesterday"}', 422, "invalid"),
    (b'{"resourceType": "ServiceRequest", "status": "bogus", "intent": "order", '
     b'"identifier": [{"system": "urn:x", "value": "1", "type": {"coding": [{"code": '
     b'"PLAC"}]}}], "subject": {"reference": "Patient/1"}}', 422, "code-invalid"),
    (b'{"resourceType": "ServiceRequest", "status": "active", "intent": "order", '
     b'"identifier": [{"system": "urn:x", "value": "1", "type": {"coding": [{"code": '
     b'"PLAC"}]}}], "subject": {"reference": "Patient/424242"}}', 422, "not-found"),
])
def test_bad_input_gets_an_outcome_and_changes_nothing(api: Api, writer: httpx.Client,
                                                       content: bytes, status: int,
                                                       code: str) -> None:
    before = counts(api.session_factory)
    answered = issue(writer.post("/fhir/ServiceRequest", content=content), status)
    assert answered["code"] == code
    assert counts(api.session_factory) == before
    assert issue(writer.post("/fhir/ServiceRequest", content=b"<xml/>",
                             headers={"Content-Type": "application/fhir+xml"}), 415)
    assert issue(writer.get("/fhir/Practitioner/1"), 404)
    assert issue(writer.delete("/fhir/ServiceRequest/1"), 405)


# ------------------------------------------------------------------------------ bundles


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(resource: dict[str, Any], full_url: str | None = None,
               **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {
        "method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def test_a_transaction_is_all_or_nothing(api: Api, writer: httpx.Client) -> None:
    bundle = transaction(
        post_entry(service_request("T1", {"reference": "urn:uuid:p1"}), "urn:uuid:s1"),
        post_entry(patient("MRN-T1"), "urn:uuid:p1",
                   ifNoneExist=f"identifier={MRN}|MRN-T1"),
        post_entry(service_request("T2", {"reference": "urn:uuid:p1"})),
        {"request": {"method": "GET", "url": "ServiceRequest?identifier=T1"}},
    )
    answer = writer.post("/fhir", json=bundle)
    assert answer.status_code == 200, answer.text
    response = valid(answer)
    assert response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created", "201 Created", "201 Created", "200 OK"]
    assert response["entry"][3]["resource"]["total"] == 1
    patient_id = response["entry"][1]["response"]["location"].split("/")[1]
    subjects = {i["patient"]["patient_id"] for i in worklist(api)}
    assert subjects == {"MRN-T1"}
    with api.session_factory() as session:
        orders = session.scalars(select(Order)).all()
    assert {o.patient_id for o in orders} == {int(patient_id)}
    before = counts(api.session_factory)
    broken = transaction(
        post_entry(patient("MRN-T3"), "urn:uuid:p3"),
        post_entry(service_request("T3", {"reference": "urn:uuid:p3"})),
        post_entry(service_request("T4", {"reference": "urn:uuid:p3"}, priority="soon")),
    )
    failed = issue(writer.post("/fhir", json=broken), 422)
    assert failed["expression"] == ["Bundle.entry[2].resource.priority"]
    assert counts(api.session_factory) == before


def test_a_batch_answers_each_entry(api: Api, writer: httpx.Client) -> None:
    bundle = transaction(
        post_entry(service_request("B1")),
        post_entry(service_request("B2", status="bogus")),
        {"request": {"method": "DELETE", "url": "ServiceRequest/1"}},
        post_entry(service_request("B3")),
        kind="batch",
    )
    response = valid(writer.post("/fhir/", json=bundle,
                                 headers={"Prefer": "return=representation"}))
    assert response["type"] == "batch-response"
    assert response["entry"][0]["resource"]["resourceType"] == "ServiceRequest"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "405 Method Not Allowed",
                        "201 Created"]
    assert response["entry"][1]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.status"]
    placers = sorted(i["order"]["placer_number"] for i in worklist(api))
    assert placers == ["B1", "B3"]


def test_a_bundle_too_big_is_refused_whole(api: Api, writer: httpx.Client) -> None:
    bundle = transaction(*[post_entry(service_request(f"X{n}")) for n in range(1001)],
                         kind="batch")
    assert issue(writer.post("/fhir", json=bundle), 413)["code"] == "too-costly"
    assert counts(api.session_factory) == (0, 0, 0, 0)


def test_concurrent_creates_of_one_order_make_one_order(api: Api) -> None:
    """Four clients create the same order (accession only: no unique constraint) at once."""
    body = service_request("unused", identifier=[
        {"type": {"coding": [{"system": V2, "code": "ACSN"}]}, "value": "RACE-1"}])
    start = threading.Barrier(4)
    statuses: list[int] = []

    def post() -> None:
        with api.client("integration") as client:
            start.wait()
            statuses.append(client.post("/fhir/ServiceRequest", json=body).status_code)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409, 409, 409]
    assert counts(api.session_factory)[1] == 1


# ------------------------------------------------------------------- registry import


def test_importing_the_same_service_request_again_changes_nothing(
        api: Api, settings: Settings) -> None:
    registry_copy = {**service_request("R1", status="active"), "id": "abc",
                     "meta": {"versionId": "7", "lastUpdated": "2031-04-30T10:00:00Z"},
                     "contained": [{**patient("MRN-R1"), "id": "subject"}],
                     "subject": {"reference": "#subject"}}
    with api.session_factory() as session, session.begin():
        order_id, created = apply_service_request(session, registry_copy, settings)
    assert created
    with api.session_factory() as session:
        first = session.get(Order, order_id)
        source = session.get(FhirSource, ("ServiceRequest", order_id))
        assert first is not None and source is not None
        stamp, version = first.updated_at, source.version
        patient_row = session.get(Patient, first.patient_id)
        assert patient_row is not None and patient_row.name == "Галаган^Олена"
    with api.session_factory() as session, session.begin():
        assert apply_service_request(session, registry_copy, settings) == (order_id, False)
    with api.session_factory() as session:
        again = session.get(Order, order_id)
        source = session.get(FhirSource, ("ServiceRequest", order_id))
        assert again is not None and source is not None
        assert (again.updated_at, source.version) == (stamp, version)
    recalled = {**registry_copy, "status": "recalled"}
    with api.session_factory() as session, session.begin():
        assert apply_service_request(session, recalled, settings) == (order_id, False)
    assert [s.status for s in steps_of(api.session_factory, order_id)] == ["CANCELED"]
    with api.client("viewer") as viewer:  # patient data: not for the viewer role
        assert viewer.get(f"/fhir/ServiceRequest/{order_id}").status_code == 403
    with api.client("integration") as reader:
        read = valid(reader.get(f"/fhir/ServiceRequest/{order_id}"))
    assert read["status"] == "revoked"  # the registry's "recalled", in FHIR's words
    assert "contained" not in read and read["subject"]["reference"].startswith("Patient/")


# ---------------------------------------------------------------- ImagingStudy, Endpoint


def test_imaging_studies_and_the_endpoint_are_served(api: Api, writer: httpx.Client,
                                                     settings: Settings) -> None:
    order = valid(writer.post("/fhir/ServiceRequest", json=service_request("I1")))
    patient_ref = order["subject"]["reference"]
    with api.session_factory() as session, session.begin():
        row = session.get(Order, int(order["id"]))
        assert row is not None
        study = archive_study(session, settings.archive_root, patient=row.patient, order=row)
    found = valid(writer.get("/fhir/ImagingStudy", params={
        "patient": patient_ref, "_include": "ImagingStudy:subject"}))
    matches = [e["resource"] for e in found["entry"] if e["search"]["mode"] == "match"]
    included = [e["resource"] for e in found["entry"] if e["search"]["mode"] == "include"]
    assert [m["id"] for m in matches] == [str(study.pk)]
    assert matches[0]["subject"]["reference"] == patient_ref
    assert [f"Patient/{p['id']}" for p in included] == [patient_ref]
    assert valid(writer.get(f"/fhir/ImagingStudy/{study.pk}"))["id"] == str(study.pk)
    endpoint = valid(writer.get("/fhir/Endpoint/wado-rs"))
    assert endpoint["address"].endswith("/dicomweb")
    assert issue(writer.get("/fhir/ImagingStudy/424242"), 404)
    assert issue(writer.post("/fhir/ImagingStudy", json={"resourceType": "ImagingStudy"}), 405)


# ------------------------------------------------------------------------------------ R5


@pytest.fixture
def r5_api(tmp_path: Path, database_url: str,
           session_factory: sessionmaker[Session]) -> Iterator[Api]:
    settings = load_settings(data_dir=tmp_path / "r5", database_url=database_url,
                             mllp_port=0, dicom_port=0, http_port=0, fhir_version="R5")
    with running_api(with_fhir(create_app(settings, session_factory)),
                     session_factory) as served:
        yield served


def test_r5_resources_in_and_out(r5_api: Api) -> None:
    request = service_request("R5-1", orderDetail=[{"parameter": [{
        "code": {"coding": [{"system": DCM, "code": "121139"}]},
        "valueCodeableConcept": {"coding": [{"system": DCM, "code": "MR"}]}}]}])
    request["code"] = {"concept": request["code"]}
    request["reason"] = [{"concept": {"text": "headache"}}]
    with r5_api.client("integration") as client:
        assert valid(client.get("/fhir/metadata"), "R5")["fhirVersion"] == "5.0.0"
        r4_shaped = client.post("/fhir/ServiceRequest", json=service_request("R5-0"))
        assert issue(r4_shaped, 422, "R5")["code"] == "invalid"
        created = valid(client.post("/fhir/ServiceRequest", json=request), "R5")
        assert created["code"] == request["code"] and created["reason"] == request["reason"]
        valid(client.get(f"/fhir/{created['subject']['reference']}"), "R5")
        valid(client.get("/fhir/ServiceRequest", params={"_include": "ServiceRequest:subject"}),
              "R5")
        valid(client.get("/fhir/Endpoint/wado-rs"), "R5")
    [item] = worklist(r5_api)
    assert (item["step"]["modality"], item["order"]["reason"]) == ("MR", "headache")
    with r5_api.session_factory() as session:
        identifiers = session.scalars(select(PatientIdentifier.value)).all()
    assert identifiers == ["MRN-R5-1"]
