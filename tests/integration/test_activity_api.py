"""``GET /api/activity`` over a real socket, on SQLite and on PostgreSQL: HL7 messages put in
through the real ingest at known times, received instances, jobs in every state, and the
exact per-minute counts the dashboard is sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.adapters.http.app import create_app
from bridge.config.settings import Settings
from bridge.jobs import queue
from bridge.services.hl7.ingest import Inbound
from bridge.store.archive_models import Instance, Study
from bridge.store.models import HL7Message, Patient
from tests.archive_factories import SeriesPlan, Source, archive_study
from tests.conftest import hl7_fixture
from tests.hl7_harness import make_ingest
from tests.http_harness import Api, running_api
from tests.referral_harness import log_in_everyone, make_directory

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)
FIELDS = {"at", "minutes", "hl7", "dicom", "totals", "queues", "failed_jobs",
          "reconciliation_queued"}
ZERO_HL7 = {"AA": 0, "AE": 0, "AR": 0, "none": 0}
#: Fixtures and the ACK the ingest answers them with (tests/fixtures/hl7/INDEX.md).
ANSWERED = {"AA": "adt_a04_8859_5", "AE": "bad_missing_pid3", "AR": "bad_unknown_type"}


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return create_app(settings, session_factory, metrics_registry=CollectorRegistry())


@pytest.fixture
def api(app: FastAPI, session_factory: sessionmaker[Session]) -> Iterator[Api]:
    with running_api(app, session_factory) as served:
        yield served


def _steady_minute() -> datetime:
    """The current minute, after waiting out its last seconds: the rows are placed relative
    to it and the answer must come within the same minute."""
    now = datetime.now(UTC)
    if now.second >= 45:
        time.sleep(60.5 - now.second - now.microsecond / 1e6)
        now = datetime.now(UTC)
    return now.replace(second=0, microsecond=0)


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


# ------------------------------------------------------------------------------ the rows


def _ingest(settings: Settings, sessions: sessionmaker[Session],
            sent: list[tuple[str, datetime]]) -> None:
    """Each (expected ACK, received_at) through the real ingest, in one batch, every message
    with a control ID of its own (no duplicate answers)."""
    ingest = make_ingest(settings, sessions)
    try:
        items = []
        for n, (code, received_at) in enumerate(sent):
            raw = hl7_fixture(f"{ANSWERED[code]}.hl7")
            control_id = raw.split(b"\r", 1)[0].split(b"|")[9]
            raw = raw.replace(b"|" + control_id + b"|", b"|ACT%04d|" % n, 1)
            items.append(Inbound(raw, peer="127.0.0.1:40000", received_at=received_at))
        outcomes = ingest.handle_batch(items)
    finally:
        ingest.close()
    assert [o.ack_code for o in outcomes] == [code for code, _ in sent]


def _log_unanswered(sessions: sessionmaker[Session], received_at: datetime) -> None:
    """A message logged on arrival whose ACK is not stored yet (status ``received``)."""
    with sessions.begin() as session:
        session.add(HL7Message(received_at=received_at, peer="127.0.0.1:40000",
                               sending_application="MIS", sending_facility="HOSP",
                               control_id="PENDING1", message_type="ADT^A08",
                               raw=b"MSH|^~\\&|MIS|HOSP\r", status="received"))


def _received(session: Session, settings: Settings, times: list[datetime], *,
              patient: Patient | None = None) -> list[tuple[int, int]]:
    """A study with one instance received at each of ``times``; its ``last_received_at`` is
    the latest, as the store leaves it. Returns each instance's (id, size), in order."""
    study = archive_study(session, settings.archive_root, patient=patient,
                          source=Source(patient_id=f"SRC{len(times)}"),
                          series=[SeriesPlan(instances=len(times))])
    for instance, received_at in zip(study.instances, times, strict=True):
        session.execute(update(Instance).where(Instance.id == instance.pk)
                        .values(received_at=received_at))
    session.execute(update(Study).where(Study.id == study.pk)
                    .values(last_received_at=max(times)))
    pks = [i.pk for i in study.instances]
    rows = session.execute(select(Instance.id, Instance.size).where(Instance.id.in_(pks))
                           .order_by(Instance.id)).all()
    return [(int(pk), int(size)) for pk, size in rows]


def _jobs(sessions: sessionmaker[Session]) -> None:
    """forward: one pending, one running, one failed; fhir_publish: one done;
    deid_export: one failed."""
    with sessions.begin() as session:
        for n in range(3):
            queue.enqueue(session, queue="forward", payload={"n": n}, dedup_key=f"f{n}")
        queue.enqueue(session, queue="fhir_publish", payload={})
        queue.enqueue(session, queue="deid_export", payload={})
    [running] = queue.claim(sessions, ["forward"])
    [failing] = queue.claim(sessions, ["forward"])
    [done] = queue.claim(sessions, ["fhir_publish"])
    [failing_export] = queue.claim(sessions, ["deid_export"])
    assert running.id != failing.id
    with sessions.begin() as session:
        for job in (failing, failing_export):
            assert queue.fail(session, job, error="refused", retryable=False,
                              policy=queue.RetryPolicy()) == queue.FAILED
        assert queue.complete(session, done)


# ------------------------------------------------------------------------------ the counts


def test_counts_per_minute_zero_filled_within_the_window(
        api: Api, settings: Settings, session_factory: sessionmaker[Session]) -> None:
    minute = _steady_minute()
    since = minute - 9 * MINUTE  # ?minutes=10: this minute and the nine before it
    _ingest(settings, session_factory, [
        ("AA", since - timedelta(seconds=1)),  # the second before the window: not counted
        ("AA", since),                         # its first instant: counted
        ("AA", since + 5 * MINUTE + timedelta(seconds=10)),
        ("AA", since + 5 * MINUTE + timedelta(seconds=50)),
        ("AE", since + 5 * MINUTE + timedelta(seconds=20)),
        ("AR", since + 5 * MINUTE + timedelta(seconds=30)),
        ("AE", minute),                        # the minute still going
    ])
    _log_unanswered(session_factory, since + 7 * MINUTE + timedelta(seconds=30))
    with session_factory.begin() as session:
        patient = session.execute(select(Patient)).scalar_one()  # made by the ADT A04s
        # A queued study: one object before the window, two in its sixth minute, one now.
        queued = _received(session, settings, [
            since - timedelta(seconds=1), since + 6 * MINUTE + timedelta(seconds=5),
            since + 6 * MINUTE + timedelta(seconds=55), minute + timedelta(seconds=1)])
        queued_sizes = [size for _, size in queued]
        # Compressed since: the dashboard shows the bytes as they arrived.
        session.execute(update(Instance).where(Instance.id == queued[1][0])
                        .values(original_size=queued_sizes[1] + 1000, size=100))
        # Reconciled to the patient, all of it long ago: nothing counted, not queued.
        _received(session, settings, [minute - 30 * MINUTE] * 2, patient=patient)
        # Queued, all of it an hour ago.
        _received(session, settings, [minute - 60 * MINUTE])
    _jobs(session_factory)

    with api.client("viewer") as client:
        response = client.get("/api/activity", params={"minutes": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == FIELDS
    assert _when(body["at"]).replace(second=0, microsecond=0) == minute, "the minute turned"
    assert body["minutes"] == 10

    expected_hl7 = [dict(ZERO_HL7) for _ in range(10)]
    expected_hl7[0]["AA"] = 1
    expected_hl7[5].update(AA=2, AE=1, AR=1)
    expected_hl7[7]["none"] = 1
    expected_hl7[9]["AE"] = 1
    assert [_when(m.pop("minute")) for m in body["hl7"]] == [since + n * MINUTE
                                                            for n in range(10)]
    assert body["hl7"] == expected_hl7

    sixth = queued_sizes[1] + 1000 + queued_sizes[2]
    expected_dicom = [{"objects": 0, "bytes": 0} for _ in range(10)]
    expected_dicom[6] = {"objects": 2, "bytes": sixth}
    expected_dicom[9] = {"objects": 1, "bytes": queued_sizes[3]}
    assert [_when(m.pop("minute")) for m in body["dicom"]] == [since + n * MINUTE
                                                              for n in range(10)]
    assert body["dicom"] == expected_dicom

    assert body["totals"] == {"hl7": {"AA": 3, "AE": 2, "AR": 1, "none": 1},
                              "dicom_objects": 3, "dicom_bytes": sixth + queued_sizes[3]}
    assert body["queues"] == [
        {"queue": "deid_export", "pending": 0, "running": 0, "failed": 1},
        {"queue": "fhir_publish", "pending": 0, "running": 0, "failed": 0},
        {"queue": "forward", "pending": 1, "running": 1, "failed": 1},
    ]
    assert body["failed_jobs"] == 2
    assert body["reconciliation_queued"] == 2


def test_a_wider_window_takes_in_what_was_just_outside(
        api: Api, settings: Settings, session_factory: sessionmaker[Session]) -> None:
    minute = _steady_minute()
    _ingest(settings, session_factory, [("AA", minute - 10 * MINUTE + timedelta(seconds=59)),
                                        ("AR", minute - 11 * MINUTE)])
    with api.client("viewer") as client:
        ten, eleven, twelve = (client.get("/api/activity", params={"minutes": n}).json()
                               for n in (10, 11, 12))
    for body in (ten, eleven, twelve):
        assert _when(body["at"]).replace(second=0, microsecond=0) == minute, "minute turned"
    assert ten["totals"]["hl7"] == ZERO_HL7
    assert eleven["totals"]["hl7"] == {**ZERO_HL7, "AA": 1}
    assert eleven["hl7"][0] == {"minute": eleven["hl7"][0]["minute"], **ZERO_HL7, "AA": 1}
    assert twelve["totals"]["hl7"] == {**ZERO_HL7, "AA": 1, "AR": 1}
    assert [m["AR"] for m in twelve["hl7"]] == [1] + [0] * 11


def test_an_empty_bridge_answers_sixty_zero_minutes_by_default(api: Api) -> None:
    with api.client("integration") as client:
        response = client.get("/api/activity")
    assert response.status_code == 200
    body = response.json()
    current = _when(body["at"]).replace(second=0, microsecond=0)
    assert body["minutes"] == 60
    assert [_when(m["minute"]) for m in body["hl7"]] == [current - (59 - n) * MINUTE
                                                         for n in range(60)]
    assert [_when(m["minute"]) for m in body["dicom"]] == [current - (59 - n) * MINUTE
                                                           for n in range(60)]
    assert all({k: v for k, v in m.items() if k != "minute"} == ZERO_HL7 for m in body["hl7"])
    assert all((m["objects"], m["bytes"]) == (0, 0) for m in body["dicom"])
    assert body["totals"] == {"hl7": ZERO_HL7, "dicom_objects": 0, "dicom_bytes": 0}
    assert (body["queues"], body["failed_jobs"], body["reconciliation_queued"]) == ([], 0, 0)


@pytest.mark.parametrize("minutes", [1, 1440])
def test_the_window_limits_are_allowed(api: Api, minutes: int) -> None:
    with api.client("admin") as client:
        body = client.get("/api/activity", params={"minutes": minutes}).json()
    assert body["minutes"] == minutes
    assert len(body["hl7"]) == len(body["dicom"]) == minutes
    assert _when(body["hl7"][-1]["minute"]) == _when(body["at"]).replace(second=0,
                                                                         microsecond=0)


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("minutes", ["0", "1441", "-5", "an hour"])
def test_a_bad_window_is_422_in_the_api_error_shape(api: Api, minutes: str) -> None:
    with api.client("viewer") as client:
        response = client.get("/api/activity", params={"minutes": minutes})
    assert response.status_code == 422
    body: dict[str, Any] = response.json()
    assert body["error"] == "invalid_request"
    assert body["location"] == "query.minutes"
    assert body["detail"].startswith("query.minutes: ")
    assert [e["location"] for e in body["errors"]] == ["query.minutes"]


def test_without_a_token_is_401(api: Api) -> None:
    with api.client() as client:
        response = client.get("/api/activity")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json() == {"error": "unauthorized", "detail": "missing bearer token",
                               "location": None}


def test_systems_and_operators_read_it_and_clinicians_are_refused(
        api: Api, session_factory: sessionmaker[Session]) -> None:
    for role in ("viewer", "integration", "admin"):
        with api.client(role) as client:
            assert client.get("/api/activity").status_code == 200, role
    make_directory(session_factory)
    clinics = log_in_everyone(api.url)
    try:
        assert clinics["ops"].get("/api/activity").status_code == 200
        for doctor in ("gp", "rad", "cardio"):
            response = clinics[doctor].get("/api/activity")
            assert response.status_code == 403, doctor
            assert response.json() == {
                "error": "forbidden", "location": None,
                "detail": "this is for systems and operators, not clinicians"}
    finally:
        clinics.close()
