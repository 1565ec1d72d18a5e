"""Referral notifications to a real HTTP receiver through FHIR Subscriptions (rest-hook),
from the durable outbox: a receiver that is down gets them later, one that refuses leaves
them in the failed list until requeued, and no change is delivered twice."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from bridge.app.runtime import Bridge
from bridge.clients.mllp import MLLPClient
from bridge.config.settings import Settings
from bridge.services.auth.tokens import create_token
from tests.hl7_harness import running_bridge
from tests.referral_harness import Clinics, log_in_everyone, make_directory
from tests.waiting import eventually

pytestmark = pytest.mark.integration
HOSPITAL = "KYIV_CITY_HOSP_1"


class Receiver:
    """An MIS's FHIR endpoint: answers ``status``; records what it was sent."""

    def __init__(self) -> None:
        self.status = 200
        #: (method, path, body, Authorization, the status answered)
        self.seen: list[tuple[str, str, dict[str, Any] | None, str, int]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _take(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with receiver.lock:
                    status = receiver.status
                    receiver.seen.append((self.command, self.path,
                                          json.loads(raw) if raw else None,
                                          self.headers.get("Authorization", ""), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_POST = _take

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mis-fhir"

    def taken(self) -> list[tuple[str, str]]:
        """(Task status, versionId) of each notification the receiver answered 200."""
        with self.lock:
            return [(body["status"], body["meta"]["versionId"])
                    for _method, _path, body, _auth, answered in self.seen
                    if body and answered == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    peer = Receiver()
    thread = threading.Thread(target=peer.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        peer.server.shutdown()


@pytest.fixture
def world(settings: Settings, session_factory: sessionmaker[Session]
          ) -> Iterator[tuple[Bridge, Clinics, httpx.Client]]:
    configured = settings.model_copy(update={"worker_poll_seconds": 0.1})
    make_directory(session_factory)
    with session_factory.begin() as session:
        token = create_token(session, role="admin", name="MIS")
    with running_bridge(configured) as bridge:
        base = f"http://127.0.0.1:{bridge.http_port}"
        with MLLPClient("127.0.0.1", bridge.mllp_port) as mis:
            ack = mis.send((
                f"MSH|^~\\&|MIS|{HOSPITAL}|BRIDGE|RAD|20261207080000||ADT^A04^ADT_A01|N1|P|2.5"
                "|||||UKR|UNICODE UTF-8\rEVN|A04|20261207080000\r"
                f"PID|1||P50001^^^{HOSPITAL}^MR||Гнатюк^Ніна||19700101|F\rPV1|1|O\r").encode())
            assert b"MSA|AA|" in ack
        clinics = log_in_everyone(base)
        system = httpx.Client(base_url=base, timeout=30,
                              headers={"Authorization": f"Bearer {token}"})
        try:
            yield bridge, clinics, system
        finally:
            clinics.close()
            system.close()


def _move(people: Clinics, referral_id: int, status: str) -> None:
    answer = people["rad"].post(f"/api/referrals/{referral_id}/status", json={"status": status})
    assert answer.status_code == 200, answer.text


def test_every_change_reaches_the_subscriber_once_through_outages_and_refusals(
        world: tuple[Bridge, Clinics, httpx.Client], receiver: Receiver) -> None:
    _bridge, people, system = world
    subscribed = system.post("/fhir/Subscription", headers={
        "Content-Type": "application/fhir+json"}, json={
        "resourceType": "Subscription", "status": "requested", "reason": "MIS inbox",
        "criteria": "Task", "channel": {"type": "rest-hook", "endpoint": receiver.url,
                                        "payload": "application/fhir+json",
                                        "header": ["Authorization: Bearer mis-secret"]}})
    assert subscribed.status_code == 201, subscribed.text
    assert system.get(f"/fhir/Subscription/{subscribed.json()['id']}").json()["status"] == \
        "active"
    # A criteria the bridge cannot evaluate is refused, not silently ignored.
    refused = system.post("/fhir/Subscription", headers={
        "Content-Type": "application/fhir+json"}, json={
        "resourceType": "Subscription", "status": "requested", "reason": "x",
        "criteria": "Observation?code=1", "channel": {"type": "rest-hook",
                                                      "endpoint": receiver.url}})
    assert refused.status_code == 422

    receiver.status = 503  # the MIS is down
    made = people["gp"].post("/api/referrals", json={
        "patient": {"patient_id": "P50001", "issuer": HOSPITAL},
        "performer_kind": "diagnostics", "performer_org": "DX-1", "modality": "MR"})
    assert made.status_code == 201, made.text
    referral_id = made.json()["id"]
    _move(people, referral_id, "received")
    eventually(lambda: len(receiver.seen) >= 3, timeout=30)  # tried, and tried again
    receiver.status = 200  # back up: the outbox delivers what waited
    eventually(lambda: {"requested", "received"} <= {s for s, _ in receiver.taken()},
               timeout=60)

    receiver.status = 400  # the MIS refuses the next one: it waits in the failed list
    _move(people, referral_id, "accepted")

    def failed() -> list[dict[str, Any]]:
        return system.get("/api/jobs", params={"queue": "subscription_deliver",
                                               "status": "failed"}).json()
    [job] = eventually(failed, timeout=30)
    receiver.status = 200
    assert system.post(f"/api/jobs/{job['id']}/requeue").status_code == 200
    eventually(lambda: "accepted" in {s for s, _ in receiver.taken()}, timeout=30)

    # Exactly once per change after it was taken; PUT [endpoint]/Task/[id] with the header.
    taken = receiver.taken()
    assert sorted(taken) == sorted(set(taken))
    assert [s for s, _ in sorted(taken, key=lambda t: int(t[1]))] == [
        "requested", "received", "accepted"]
    methods = {(m, p, auth) for m, p, _b, auth, _answered in receiver.seen}
    assert methods == {("PUT", f"/mis-fhir/Task/{referral_id}", "Bearer mis-secret")}
