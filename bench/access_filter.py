#!/usr/bin/env python
"""Per-doctor access: what the access filter costs, and referral transitions end to end.

1. **Search with and without the filter.** An archive of ``--studies`` studies (default
   100,000; index rows, five studies per patient) and ``--shares`` shares (default 10,000)
   spread over 1,000 clinicians; one family doctor has referred 50 patients and has 200
   studies shared with them. ``bridge serve`` runs on it in its own process. In one run, the
   same searches go in turns to the same server as that doctor (the filter is in every
   query) and as an operator (no filter): QIDO-RS ``/dicomweb/studies`` (a page of 50, and by
   date range) and FHIR ``/fhir/ImagingStudy`` (a page of 50). Each read also writes its
   audit record, for both. The p95 ratio (doctor / operator) is held to the target.
2. **Referral transitions.** A FHIR Subscription (rest-hook) points at an HTTP receiver in
   this process; ``--referrals`` referrals are made and moved requested → received →
   accepted (the order on the worklist) → completed (a result); the run ends when the
   receiver has every notification. Printed: transitions per second, and each
   notification's delay after its transition (p50, p95).

    python bench/access_filter.py [--studies 100000] [--shares 10000] [--postgres]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    add_common_options,
    bench_token,
    bridge_process,
    log,
    machine,
    percentile,
    postgres_url,
    print_header,
    scratch_database,
)
from bridge.domain import Identifier
from bridge.services.auth.principal import user_principal
from bridge.services.auth.users import create_organization, create_user
from bridge.services.referrals.workflow import NewReferral, create_referral
from bridge.store.archive_models import Study
from bridge.store.db import make_engine, make_session_factory
from bridge.store.migrate import upgrade
from bridge.store.models import Patient, PatientIdentifier, table_of, utcnow
from bridge.store.people_models import User
from bridge.store.referral_models import AccessGrant
from tests.archive_factories import bulk_index

TARGET_RATIO = 1.3
PASSWORD = "benchmark password 1"
CLINICIANS = 1000


def build_archive(url: str, studies: int, shares: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    started = time.monotonic()
    with sessions.begin() as session:
        bulk_index(session, patients=studies // 5, studies_per_patient=5, queued=0)
        create_organization(session, identifier="PR-1", name="Practice", kind="practice")
        create_organization(session, identifier="DX-1", name="Radiology", kind="diagnostics")
        create_user(session, username="ops", role="operator", password=PASSWORD)
        gp = create_user(session, username="gp", role="family_doctor", password=PASSWORD,
                         organization="PR-1")
        users = table_of(User)
        now = utcnow()
        session.connection().execute(insert(users), [
            {"username": f"doctor{n}", "display_name": "", "role": "family_doctor",
             "disabled": False, "created_at": now} for n in range(CLINICIANS - 1)])
        doctor_ids = list(session.execute(select(User.id).where(
            User.username.like("doctor%"))).scalars())
        study_ids = list(session.execute(select(Study.id)).scalars())
        rng = random.Random(13)
        own = rng.sample(study_ids, 200)
        rows = [{"user_id": gp.id, "study_id": sid, "source": "share", "granted_by": "bench",
                 "created_at": now} for sid in own]
        rows += [{"user_id": rng.choice(doctor_ids), "study_id": rng.choice(study_ids),
                  "source": "share", "granted_by": "bench", "created_at": now}
                 for _ in range(shares - len(rows))]
        session.connection().execute(insert(table_of(AccessGrant)), rows)
        doctor = user_principal(gp.id, "gp", "family_doctor", gp.organization_id)
        patients = session.execute(select(PatientIdentifier.value, PatientIdentifier.issuer)
                                   .join(Patient).limit(50)).all()
        for value, issuer in patients:
            create_referral(session, doctor, NewReferral(
                patient=Identifier(value, issuer), performer_kind="diagnostics",
                performer_org="DX-1", modality="CT"))
    log(f"archive of {studies:,} studies and {shares:,} shares built in "
        f"{time.monotonic() - started:.0f} s")
    engine.dispose()


def login(base: str, username: str) -> httpx.Client:
    with httpx.Client(base_url=base, timeout=60) as anonymous:
        token = anonymous.post("/api/login", json={"username": username,
                                                   "password": PASSWORD}).json()
    return httpx.Client(base_url=base, timeout=60,
                        headers={"Authorization": f"Bearer {token['access_token']}"})


SEARCHES: dict[str, tuple[str, dict[str, str]]] = {
    "QIDO-RS studies, page of 50": ("/dicomweb/studies", {"limit": "50"}),
    "QIDO-RS studies by date range": ("/dicomweb/studies",
                                      {"StudyDate": "20260101-20261231", "limit": "50"}),
    "FHIR ImagingStudy, page of 50": ("/fhir/ImagingStudy", {"_count": "50"}),
}


def measure_searches(base: str, rounds: int) -> list[dict[str, Any]]:
    doctor, operator = login(base, "gp"), login(base, "ops")
    results = []
    for name, (path, params) in SEARCHES.items():
        timings: dict[str, list[float]] = {"doctor": [], "operator": []}
        counts: dict[str, int] = {}
        for client in (doctor, operator):
            client.get(path, params=params)  # warm-up
        for _ in range(rounds):
            for who, client in (("doctor", doctor), ("operator", operator)):
                began = time.perf_counter()
                answer = client.get(path, params=params)
                timings[who].append((time.perf_counter() - began) * 1000)
                assert answer.status_code in (200, 204), answer.text[:200]
                body = answer.json() if answer.content else []
                counts[who] = len(body.get("entry", [])) if isinstance(body, dict) else len(body)
        p95 = {who: percentile(values, 95) for who, values in timings.items()}
        results.append({"search": name, "doctor_p95_ms": round(p95["doctor"], 1),
                        "operator_p95_ms": round(p95["operator"], 1),
                        "ratio": round(p95["doctor"] / p95["operator"], 2),
                        "doctor_matches": counts["doctor"],
                        "operator_matches": counts["operator"]})
    doctor.close()
    operator.close()
    return results


class Receiver:
    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str]] = []  # (arrival, task id, version)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.seen.append((time.monotonic(), body["id"],
                                          body["meta"]["versionId"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"


def measure_transitions(base: str, admin_token: str, referrals: int) -> dict[str, Any]:
    receiver = Receiver()
    with httpx.Client(base_url=base, timeout=60,
                      headers={"Authorization": f"Bearer {admin_token}"}) as admin:
        made = admin.post("/fhir/Subscription", headers={"Content-Type": "application/fhir+json"},
                          json={"resourceType": "Subscription", "status": "requested",
                                "reason": "bench", "criteria": "Task",
                                "channel": {"type": "rest-hook", "endpoint": receiver.url,
                                            "payload": "application/fhir+json"}})
        assert made.status_code == 201, made.text
        patients = admin.get("/api/worklist", params={"limit": "1"})
        assert patients.status_code == 200
    doctor = login(base, "gp")
    sent: dict[tuple[str, str], float] = {}
    began = time.monotonic()
    for n in range(referrals):
        answer = doctor.post("/api/referrals", json={
            "patient": {"patient_id": f"P{100 + n}", "issuer": "HOSP"},
            "performer_kind": "diagnostics", "performer_org": "DX-1", "modality": "CT"})
        assert answer.status_code == 201, answer.text
        task = answer.json()["task"]
        sent[(task["id"], task["meta"]["versionId"])] = time.monotonic()
        referral_id = answer.json()["id"]
        with httpx.Client(base_url=base, timeout=60, headers={
                "Authorization": f"Bearer {admin_token}"}) as system:
            for status in ("received", "accepted"):
                moved = system.post(f"/api/referrals/{referral_id}/status",
                                    json={"status": status})
                assert moved.status_code == 200, moved.text
                task = moved.json()["task"]
                sent[(task["id"], task["meta"]["versionId"])] = time.monotonic()
            done = system.post(f"/api/referrals/{referral_id}/report",
                               json={"conclusion": "Normal."})
            assert done.status_code == 201, done.text
            task = done.json()["task"]
            sent[(task["id"], task["meta"]["versionId"])] = time.monotonic()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with receiver.lock:
            arrived = {(task, version): at for at, task, version in receiver.seen}
        if all(key in arrived for key in sent):
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    delays = [(arrived[key] - at) * 1000 for key, at in sent.items() if key in arrived]
    receiver.server.shutdown()
    doctor.close()
    return {"transitions": len(sent), "delivered": len(delays),
            "transitions_per_s": round(len(sent) / elapsed, 1),
            "notify_p50_ms": round(percentile(delays, 50), 0),
            "notify_p95_ms": round(percentile(delays, 95), 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--shares", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--referrals", type=int, default=50)
    add_common_options(parser, postgres_help="run on PostgreSQL instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(
            Path(tmp) / "bridge.db", postgres_url(args)) as url:
        build_archive(url, args.studies, args.shares)
        admin_token = bench_token(url, "admin", migrate=False)
        with bridge_process(Path(tmp) / "var", url,
                            {"BRIDGE_WORKER_POLL_SECONDS": "0.1"}) as ports:
            base = f"http://127.0.0.1:{ports['http']}"
            searches = measure_searches(base, args.rounds)
            transitions = measure_transitions(base, admin_token, args.referrals)
    result = {"date": datetime.now(UTC).date().isoformat(), "machine": machine(),
              "database": "postgresql" if args.postgres else "sqlite",
              "studies": args.studies, "shares": args.shares, "searches": searches,
              "transitions": transitions, "target_ratio": TARGET_RATIO}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['date']} {result['machine']} ({result['database']}, "
              f"{args.studies:,} studies, {args.shares:,} shares)")
        print_header(f"{'search':34} {'doctor p95':>11} {'operator p95':>13} {'ratio':>6} "
                     f"{'matches':>9}")
        for row in searches:
            print(f"{row['search']:34} {row['doctor_p95_ms']:>8.1f} ms "
                  f"{row['operator_p95_ms']:>10.1f} ms {row['ratio']:>6.2f} "
                  f"{row['doctor_matches']:>4}/{row['operator_matches']:<4}")
        t = transitions
        print(f"referral transitions: {t['transitions']} ({t['delivered']} notified) at "
              f"{t['transitions_per_s']}/s; notification after its transition p50 "
              f"{t['notify_p50_ms']:.0f} ms, p95 {t['notify_p95_ms']:.0f} ms")
    worst = max(row["ratio"] for row in searches)
    ok = worst <= TARGET_RATIO and transitions["delivered"] == transitions["transitions"]
    print(f"target: doctor/operator p95 <= {TARGET_RATIO}x -> worst {worst:.2f}x "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
