"""The HTTP API over real sockets: a uvicorn server on a free port, httpx as the client.

Every test runs on SQLite and on PostgreSQL (the ``session_factory`` / ``settings`` fixtures).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.config.settings import Settings
from bridge.errors import ANSWERS
from bridge.mapping.hl7.tables import load_hl7_tables
from bridge.services.auth.tokens import revoke_token
from bridge.services.hl7.ingest import HL7Ingest
from bridge.store.models import ApiToken, HL7Message, Order, ProcedureStep
from tests.conftest import hl7_fixture
from tests.http_harness import Api, make_tokens, running_api, serve

pytestmark = pytest.mark.integration

SECRET_NAME = "Ґалаґан^Олена"  # stands for PHI that must never leak into errors or logs


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def metrics_registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session],
        metrics_registry: CollectorRegistry) -> FastAPI:
    ingest = HL7Ingest(session_factory, load_hl7_tables(settings.mappings_dir), settings)
    return create_app(settings, session_factory, reprocess=ingest.reprocess,
                      metrics_registry=metrics_registry)


@pytest.fixture
def api(app: FastAPI, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    with running_api(app, session_factory) as served:
        yield served


# -------------------------------------------------------------------- health and auth


def test_health_is_open(api: Api) -> None:
    with api.client() as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_reports_unreachable_database(settings: Settings) -> None:
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none",
                         connect_args={"connect_timeout": 2})
    app = create_app(settings, sessionmaker(dead))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


@pytest.mark.parametrize("path", ["/api/messages", "/api/worklist", "/metrics"])
def test_missing_token_is_401(api: Api, path: str) -> None:
    with api.client() as client:
        response = client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("header", [
    "Bearer brg_not-a-real-token",
    "Bearer nonsense",
    "Basic dXNlcjpwYXNz",
    "Bearer " + "x" * 5000,
])
def test_wrong_token_is_401(api: Api, header: str) -> None:
    with httpx.Client(base_url=api.url, headers={"Authorization": header}) as client:
        response = client.get("/api/messages")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_revoked_token_is_401(api: Api) -> None:
    with api.client("admin") as client:
        assert client.get("/api/messages").status_code == 200
    with api.session_factory() as session, session.begin():
        token_id = session.execute(
            select(ApiToken.id).where(ApiToken.role == "admin")
        ).scalar_one()
        revoke_token(session, token_id=token_id)
    with api.client("admin") as client:
        assert client.get("/api/messages").status_code == 401


def test_viewer_cannot_write_or_read_message_content(api: Api) -> None:
    message_id = _log_message(api.session_factory, status="error")
    with api.client("viewer") as client:
        assert client.get("/api/messages").status_code == 200
        assert client.get("/api/worklist").status_code == 200
        assert client.get(f"/api/messages/{message_id}").status_code == 403
        assert client.post(f"/api/messages/{message_id}/reprocess").status_code == 403
        response = client.post("/api/worklist", json=_new_order())
        assert client.patch("/api/worklist/1", json={}).status_code == 403
        assert client.post("/api/worklist/1/cancel").status_code == 403
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "this needs the integration role",
                               "location": None}
    with api.session_factory() as session:
        assert session.execute(select(Order)).first() is None


# ----------------------------------------------------------------------------- messages


def _log_message(session_factory: sessionmaker[Session], *, fixture: str = "orm_o01_nw.hl7",
                 status: str = "processed", message_type: str | None = "ORM^O01",
                 sender: str = "MIS", control_id: str | None = None,
                 received_at: datetime | None = None, charset: str = "utf-8") -> int:
    raw = hl7_fixture(fixture)
    with session_factory() as session, session.begin():
        row = HL7Message(
            received_at=received_at or datetime.now(UTC), peer="127.0.0.1:40000",
            sending_application=sender, sending_facility="KYIV_CITY_HOSP_1",
            control_id=control_id or f"C{time.monotonic_ns()}", message_type=message_type,
            version="2.5", charset=charset, raw=raw,
            text=raw.decode(charset, errors="replace"), status=status,
            ack_code={"processed": "AA", "error": "AE", "rejected": "AR"}.get(status),
            error="PID-3 missing" if status in ("error", "rejected") else None,
            error_location="PID-3" if status in ("error", "rejected") else None,
        )
        session.add(row)
        session.flush()
        return row.id


def test_message_list_filters_and_order(api: Api) -> None:
    base = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    ids = {
        "adt": _log_message(api.session_factory, fixture="adt_a01_utf8.hl7",
                            message_type="ADT^A01", received_at=base),
        "orm": _log_message(api.session_factory, received_at=base + timedelta(minutes=1)),
        "bad": _log_message(api.session_factory, fixture="bad_missing_pid3.hl7", status="error",
                            received_at=base + timedelta(minutes=2)),
        "other": _log_message(api.session_factory, sender="LIS",
                              received_at=base + timedelta(minutes=3)),
    }
    with api.client("viewer") as client:
        def listed(**params: str | int) -> list[int]:
            response = client.get("/api/messages", params=params)
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()]

        assert listed() == [ids["other"], ids["bad"], ids["orm"], ids["adt"]]
        assert listed(type="ADT^A01") == [ids["adt"]]
        assert listed(status="error") == [ids["bad"]]
        assert listed(sender="LIS") == [ids["other"]]
        assert listed(type="ORM^O01", sender="MIS") == [ids["bad"], ids["orm"]]
        # since inclusive, until exclusive; offsets other than UTC are honoured
        assert listed(since=(base + timedelta(minutes=1)).isoformat(),
                      until=(base + timedelta(minutes=3)).isoformat()) == [ids["bad"], ids["orm"]]
        assert listed(since="2026-11-21T12:02:00+02:00") == [ids["other"], ids["bad"]]
        assert listed(limit=2) == [ids["other"], ids["bad"]]
        assert listed(limit=2, offset=2) == [ids["orm"], ids["adt"]]

        summary = client.get("/api/messages", params={"status": "error"}).json()[0]
        assert set(summary) == {"id", "received_at", "sending_application", "sending_facility",
                                "control_id", "message_type", "status", "ack_code", "error"}
        assert summary["received_at"] == "2026-11-21T10:02:00Z"
        assert "Ґалаґан" not in client.get("/api/messages").text  # no content in summaries

        for bad in ({"limit": 1001}, {"limit": 0}, {"offset": -1}, {"since": "yesterday"},
                    {"status": "lost"}):
            response = client.get("/api/messages", params=bad)
            assert response.status_code == 422, bad
            assert response.json()["error"] == "invalid_request"


def test_message_detail(api: Api) -> None:
    message_id = _log_message(api.session_factory, status="error")
    with api.client("integration") as client:
        response = client.get(f"/api/messages/{message_id}")
        missing = client.get("/api/messages/999999")
    assert response.status_code == 200
    detail = response.json()
    assert base64.b64decode(detail["raw"]) == hl7_fixture("orm_o01_nw.hl7")
    assert "Ґалаґан" in detail["text"]
    assert detail["error"] == "PID-3 missing" and detail["error_location"] == "PID-3"
    assert {"accept_ack", "ack", "ack_code", "charset", "attempts"} <= set(detail)
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "no HL7 message with id 999999",
                              "location": None}


def test_reprocess_refuses_processed_messages(api: Api) -> None:
    message_id = _log_message(api.session_factory, status="processed")
    with api.client("integration") as client:
        response = client.post(f"/api/messages/{message_id}/reprocess")
        missing = client.post("/api/messages/999999/reprocess")
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert missing.status_code == 404


def test_reprocess_runs_failed_messages_again(api: Api) -> None:
    """Through the HL7 intake's own reprocess: a message that failed is applied now, one
    that cannot be parsed is rejected again."""
    fixed = _log_message(api.session_factory, status="error")
    broken = _log_message(api.session_factory, fixture="bad_no_msh.hl7", status="rejected",
                          message_type=None)
    with api.client("admin") as client:
        response = client.post(f"/api/messages/{fixed}/reprocess")
        again = client.post(f"/api/messages/{fixed}/reprocess")
        still_broken = client.post(f"/api/messages/{broken}/reprocess")
    assert response.status_code == 200, response.text
    assert response.json() == {"message_id": fixed, "status": "processed", "ack_code": "AA",
                               "error": None}
    with api.session_factory() as session:  # the ORM^O01 was really applied this time
        order = session.execute(select(Order).where(Order.placer_number == "PLC1001")).scalar_one()
        assert order.accession == "ACC1001"
        assert [step.sps_id for step in order.steps] == ["SPS1001"]
    assert again.status_code == 409  # it is processed now
    assert still_broken.status_code == 200
    assert still_broken.json()["status"] == "rejected"
    assert still_broken.json()["ack_code"] == "AR"
    with api.session_factory() as session:
        row = session.get(HL7Message, fixed)
        assert row is not None and row.status == "processed" and row.attempts == 1
        assert row.processed_at is not None


def test_reprocess_without_intake_is_503(settings: Settings,
                                         session_factory: sessionmaker[Session]) -> None:
    tokens = make_tokens(session_factory)
    message_id = _log_message(session_factory, status="error")
    with serve(create_app(settings, session_factory)) as url, httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {tokens['integration']}"}
    ) as client:
        response = client.post(f"/api/messages/{message_id}/reprocess")
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


# ----------------------------------------------------------------------------- worklist


def _new_order(**changes: object) -> dict[str, object]:
    order: dict[str, object] = {
        "patient": {
            "identifiers": [{"value": "P10001", "issuer": "KYIV_CITY_HOSP_1", "id_type": "MR"},
                            {"value": "1234567890", "issuer": "UA_ESOZ", "id_type": "NI"}],
            "name": "Ґалаґан^Олена^Павлівна", "birth_date": "19850315", "sex": "F",
        },
        "placer_number": "PLC-API-1", "placer_issuer": "MIS",
        "procedure_code": {"code": "CTHEAD", "scheme": "LOCAL", "meaning": "КТ голови"},
        "priority": "STAT",
        "steps": [{"sps_id": "SPS-API-1", "station_ae": "CT_SCANNER_1", "modality": "CT",
                   "start_date": "20261122", "start_time": "100000",
                   "description": "КТ голови без контрасту"}],
    }
    order.update(changes)
    return order


def test_worklist_round_trip(api: Api) -> None:
    with api.client("integration") as client:
        created = client.post("/api/worklist", json=_new_order())
        assert created.status_code == 201, created.text
        order = created.json()
        order_id = order["id"]
        assert created.headers["location"] == f"/api/worklist/{order_id}"
        assert order["source"] == "api" and order["status"] == "SCHEDULED"
        assert order["accession"].startswith("BR")  # generated by policy
        assert order["study_instance_uid"].startswith("1.2.826.0.1.3680043.10.1137.")
        assert order["patient"]["patient_id"] == "P10001"
        assert [s["sps_id"] for s in order["steps"]] == ["SPS-API-1"]

        duplicate = client.post("/api/worklist", json=_new_order())
        assert duplicate.status_code == 409

        listed = client.get("/api/worklist", params={"station_ae": "CT_SCANNER_1",
                                                     "date": "20261122"}).json()
        assert len(listed) == 1
        item = listed[0]
        assert item["step"]["sps_id"] == "SPS-API-1" and item["step"]["status"] == "SCHEDULED"
        assert item["order"]["id"] == order_id
        assert item["patient"] == {"id": order["patient"]["id"], "patient_id": "P10001",
                                   "issuer": "KYIV_CITY_HOSP_1",
                                   "name": "Ґалаґан^Олена^Павлівна",
                                   "birth_date": "19850315", "sex": "F"}
        for params in ({"modality": "MR"}, {"date": "20261123"}, {"patient_id": "P99999"},
                       {"accession": "NOPE"}, {"from": "20261123", "to": "20261130"}):
            assert client.get("/api/worklist", params=params).json() == [], params
        for params in ({"modality": "CT"}, {"patient_id": "1234567890"},
                       {"accession": order["accession"]}, {"from": "20261122", "to": "20261122"}):
            assert len(client.get("/api/worklist", params=params).json()) == 1, params

        changed = client.patch(f"/api/worklist/{order_id}", json={
            "priority": "ROUTINE",
            "steps": [{"sps_id": "SPS-API-1", "start_time": "113000"},
                      {"sps_id": "SPS-API-2", "station_ae": "MR_SCANNER_1", "modality": "MR",
                       "start_date": "20261122", "start_time": "140000"}],
        })
        assert changed.status_code == 200, changed.text
        assert changed.json()["priority"] == "ROUTINE"
        steps = {s["sps_id"]: s for s in changed.json()["steps"]}
        assert steps["SPS-API-1"]["start_time"] == "113000"
        assert steps["SPS-API-1"]["station_ae"] == "CT_SCANNER_1"  # kept
        assert steps["SPS-API-2"]["modality"] == "MR"
        assert changed.json()["accession"] == order["accession"]
        assert len(client.get("/api/worklist", params={"date": "20261122"}).json()) == 2

        canceled = client.post(f"/api/worklist/{order_id}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "CANCELED"
        assert {s["status"] for s in canceled.json()["steps"]} == {"CANCELED"}
        assert client.get("/api/worklist").json() == []  # closed steps are not offered
        assert len(client.get("/api/worklist", params={"status": "CANCELED"}).json()) == 2
        assert client.post(f"/api/worklist/{order_id}/cancel").status_code == 409
        assert client.get(f"/api/worklist/{order_id}").json()["status"] == "CANCELED"
        assert client.patch("/api/worklist/999999", json={}).status_code == 404
        assert client.post("/api/worklist/999999/cancel").status_code == 404

    with api.session_factory() as session:
        statuses = session.execute(select(ProcedureStep.status)).scalars().all()
    assert sorted(statuses) == ["CANCELED", "CANCELED"]


def test_worklist_accession_change_of_keyless_order_is_refused(api: Api) -> None:
    body = _new_order(accession="ACC-API-9")
    del body["placer_number"]
    with api.client("integration") as client:
        order_id = client.post("/api/worklist", json=body).json()["id"]
        response = client.patch(f"/api/worklist/{order_id}", json={"accession": "ACC-API-10"})
        order = client.get(f"/api/worklist/{order_id}").json()
    assert response.status_code == 409
    assert order["accession"] == "ACC-API-9"
    with api.session_factory() as session:
        assert len(session.execute(select(Order)).all()) == 1


@pytest.mark.parametrize(("body", "location"), [
    (_new_order(steps=[{"start_date": "2026-11-22"}]), "body.steps.0.start_date"),
    (_new_order(steps=[{"start_date": "20260230"}]), "body.steps.0.start_date"),
    (_new_order(steps=[{"start_time": "250000"}]), "body.steps.0.start_time"),
    (_new_order(steps=[{"station_ae": "A_VERY_LONG_AE_TITLE"}]), "body.steps.0.station_ae"),
    (_new_order(steps=[{"station_ae": "КТ"}]), "body.steps.0.station_ae"),
    (_new_order(steps=[{"modality": "ct"}]), "body.steps.0.modality"),
    (_new_order(steps=[]), "body.steps"),
    (_new_order(priority="URGENT"), "body.priority"),
    (_new_order(study_instance_uid="1.02.3"), "body.study_instance_uid"),
    (_new_order(accession="A" * 17), "body.accession"),
    (_new_order(unknown_field=1), "body.unknown_field"),
    (_new_order(patient={"identifiers": []}), "body.patient.identifiers"),
    (_new_order(placer_number=None), "body"),
])
def test_invalid_order_is_422(api: Api, body: dict[str, object], location: str) -> None:
    with api.client("integration") as client:
        response = client.post("/api/worklist", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "invalid_request"
    assert answer["location"] == location, answer
    assert location in answer["detail"]
    assert "Ґалаґан" not in response.text  # the input is not echoed


def test_bad_json_is_422(api: Api) -> None:
    with api.client("integration") as client:
        response = client.post("/api/worklist", content=b'{"patient": ',
                               headers={"Content-Type": "application/json"})
        query = client.get("/api/worklist", params={"date": "22.11.2026"})
        both = client.get("/api/worklist", params={"date": "20261122", "from": "20261101"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert query.status_code == 422 and query.json()["location"] == "query.date"
    assert both.status_code == 422


# ----------------------------------------------------------- errors, metrics, OpenAPI


def test_every_error_kind_has_its_http_status(app: FastAPI,
                                              session_factory: sessionmaker[Session],
                                              caplog: pytest.LogCaptureFixture) -> None:
    kinds = {kind.__name__: kind for kind in ANSWERS}

    def fail(kind: str) -> None:
        if kind == "unexpected":
            raise RuntimeError(f"insert failed for {SECRET_NAME}")
        raise kinds[kind](f"failed: {kind}", location="PID-3")

    app.add_api_route("/test-failure/{kind}", fail)
    caplog.set_level(logging.INFO)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for name, kind in kinds.items():
            response = client.get(f"/test-failure/{name}")
            assert response.status_code == ANSWERS[kind].http_status, name
            body = response.json()
            assert body["detail"] == f"failed: {name}" and body["location"] == "PID-3"
            assert body["error"] != "http_error"
        response = client.get("/test-failure/unexpected")
    assert response.status_code == 500
    assert response.json()["error"] == "internal"
    assert SECRET_NAME not in response.text
    assert "RuntimeError" in caplog.text  # logged ...
    assert SECRET_NAME not in caplog.text  # ... without the PHI in its message


def test_metrics_need_a_token_and_count_requests(api: Api,
                                                 metrics_registry: CollectorRegistry) -> None:
    jobs = Counter("bridge_test_jobs", "registered by another part", registry=metrics_registry)
    jobs.inc(3)
    with api.client() as anonymous:
        anonymous.get("/health")
        assert anonymous.get("/metrics").status_code == 401
    with api.client("viewer") as client:
        client.get("/api/messages/12345")  # 403 for a viewer
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'bridge_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert ('bridge_http_requests_total{method="GET",route="/api/messages/{message_id}",'
            'status="403"} 1.0') in text
    assert 'bridge_http_requests_total{method="GET",route="/metrics",status="401"} 1.0' in text
    assert "bridge_http_request_duration_seconds_bucket" in text
    assert "bridge_test_jobs_total 3.0" in text


def test_openapi_lists_endpoints_and_bearer_scheme(api: Api) -> None:
    with api.client() as client:
        spec = client.get("/openapi.json").json()
        docs = client.get("/docs")
        bundle = client.get("/docs/static/swagger-ui-bundle.js")
    assert spec["info"]["title"] == "bridge"
    assert docs.status_code == 200
    # Swagger UI from the bridge's own files: nothing from a CDN (hospitals run offline).
    assert "/docs/static/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text and "https://" not in docs.text.replace(
        "https://fastapi.tiangolo.com", "")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    instance = "/dicomweb/studies/{study}/series/{series}/instances/{instance}"
    expected: dict[str, set[str]] = {
        "/health": {"get"},
        "/metrics": {"get"},
        "/api/messages": {"get"},
        "/api/messages/{message_id}": {"get"},
        "/api/messages/{message_id}/reprocess": {"post"},
        "/api/worklist": {"get", "post"},
        "/api/worklist/{order_id}": {"get", "patch"},
        "/api/worklist/{order_id}/cancel": {"post"},
        "/api/reconciliation": {"get"},
        "/api/reconciliation/summary": {"get"},
        "/api/reconciliation/{study_uid}/assign": {"post"},
        "/api/reconciliation/{study_uid}/reject": {"post"},
        "/api/jobs": {"get"},
        "/api/jobs/counts": {"get"},
        "/api/jobs/requeue-failed": {"post"},
        "/api/jobs/{job_id}": {"get"},
        "/api/jobs/{job_id}/requeue": {"post"},
        "/api/peers": {"get"},
        "/api/activity": {"get"},
        "/api/links": {"get"},
        "/api/studies/{study_uid}/forward": {"post"},
        "/api/studies/{study_uid}/delete": {"post"},
        "/api/login": {"post"},
        "/api/logout": {"post"},
        "/api/users": {"get", "post"},
        "/api/users/{username}/disable": {"post"},
        "/api/users/{username}/enable": {"post"},
        "/api/organizations": {"get", "post"},
        "/api/referrals": {"get", "post"},
        "/api/referrals/{referral_id}": {"get"},
        "/api/referrals/{referral_id}/status": {"post"},
        "/api/referrals/{referral_id}/report": {"post"},
        "/api/shares": {"post"},
        "/api/deid/destinations": {"get"},
        "/api/deid/exports": {"get", "post"},
        "/api/deid/exports/{export_id}": {"get"},
        "/api/shares/{share_id}/revoke": {"post"},
        "/fhir/Task": {"get"},
        "/fhir/Task/{resource_id}": {"get"},
        "/fhir/Task/{task_id}": {"put"},
        "/fhir/DiagnosticReport": {"get", "post"},
        "/fhir/DiagnosticReport/{resource_id}": {"get"},
        "/fhir/Practitioner": {"get"},
        "/fhir/Practitioner/{resource_id}": {"get"},
        "/fhir/PractitionerRole": {"get"},
        "/fhir/PractitionerRole/{resource_id}": {"get"},
        "/fhir/Organization": {"get"},
        "/fhir/Organization/{resource_id}": {"get"},
        "/fhir/ServiceRequest/ref-{referral_id}": {"get"},
        "/fhir/Subscription": {"post"},
        "/fhir/Consent": {"post"},
        "/fhir/AuditEvent": {"get"},
        "/fhir/AuditEvent/{event_id}": {"get"},
        "/fhir/Subscription/{subscription_id}": {"get"},
        "/api/storage": {"get"},
        "/api/storage/history": {"get"},
        "/api/storage/deletions": {"get"},
        "/api/storage/cleanup": {"post"},
        "/api/storage/migrate": {"post"},
        "/api/storage/studies/{study_uid}/recall": {"post"},
        "/dicomweb/studies": {"get", "post"},
        "/dicomweb/series": {"get"},
        "/dicomweb/instances": {"get"},
        "/dicomweb/studies/{study}": {"get", "post"},
        "/dicomweb/studies/{study}/series": {"get"},
        "/dicomweb/studies/{study}/instances": {"get"},
        "/dicomweb/studies/{study}/metadata": {"get"},
        "/dicomweb/studies/{study}/series/{series}": {"get"},
        "/dicomweb/studies/{study}/series/{series}/instances": {"get"},
        "/dicomweb/studies/{study}/series/{series}/metadata": {"get"},
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}": {"get"},
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata": {"get"},
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}": {"get"},
        "/dicomweb/studies/{study}/rendered": {"get"},
        "/dicomweb/studies/{study}/series/{series}/rendered": {"get"},
        f"{instance}/rendered": {"get"},
        f"{instance}/frames/{{frames}}/rendered": {"get"},
        "/dicomweb/studies/{study}/thumbnail": {"get"},
        "/dicomweb/studies/{study}/series/{series}/thumbnail": {"get"},
        f"{instance}/thumbnail": {"get"},
        f"{instance}/frames/{{frame}}/thumbnail": {"get"},
        "/fhir": {"post"},
        "/fhir/metadata": {"get"},
        "/fhir/$notify": {"post"},
        "/fhir/$notify/{resource_type}/{resource_id}": {"put"},
        "/fhir/{resource_type}": {"get", "post", "put"},
        "/fhir/{resource_type}/_search": {"post"},
        "/fhir/{resource_type}/{resource_id}": {"get", "put"},
    }
    assert {path: set(ops) for path, ops in spec["paths"].items()} == expected
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            secured = operation.get("security") == [{"bearer": []}]
            # Open: the health check, the CapabilityStatement (as FHIR servers do), and the
            # login that hands out a bearer token.
            assert secured == (path not in ("/health", "/fhir/metadata", "/api/login")), path


def test_concurrent_requests(api: Api) -> None:
    """Parallel readers and writers neither deadlock nor fail (SQLite takes the write lock)."""
    results: list[int] = []

    def work(index: int) -> Callable[[], None]:
        def run() -> None:
            with api.client("integration") as client:
                body = _new_order(placer_number=f"PLC-C-{index}")
                results.append(client.post("/api/worklist", json=body).status_code)
                results.append(client.get("/api/worklist").status_code)
        return run

    threads = [threading.Thread(target=work(i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [200] * 8 + [201] * 8
