#!/usr/bin/env python
"""FHIR intake throughput: ServiceRequests in transaction Bundles into the worklist, side by
side with sekmet-fhir.

Each Bundle holds ``--per-bundle`` ServiceRequests, each with its Patient (a conditional
create, ``ifNoneExist: identifier=...``, referenced by ``urn:uuid``), as an MIS sends them.
The bridge runs in its own process (``bridge serve``) on SQLite (``--postgres`` for
PostgreSQL); ``--clients`` threads post the Bundles. An answer means the whole Bundle was
committed: patients, orders, procedure steps — the worklist. The run checks that the worklist
holds every step afterwards (the database, and ``GET /api/worklist``).

In the same run the same Bundles go to sekmet-fhir (a FHIR server on SQLite that stores the
resources and nothing more), the named peer, and the ratio is printed.

    python bench/fhir_intake.py --total 2000 --per-bundle 100 --clients 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    ROOT,
    add_common_options,
    bridge_process,
    free_port,
    log,
    machine,
    postgres_url,
    print_header,
    scratch_database,
    stop_process,
    wait_for_port,
)
from bridge.store.db import make_engine
from tests.fhir_peer import running_sekmet, sekmet_binary

TARGET_PER_SECOND = 500.0
PLACER_SYSTEM = "urn:oid:1.2.804.99.3"
MRN_SYSTEM = "urn:oid:1.2.804.99.1"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MODALITIES = ("CT", "MR", "US", "DX")

#: ``bridge serve`` with the FHIR router added when the composition root does not include it
#: yet (the same Bridge, listeners and settings otherwise).
_SERVE_WITH_FHIR = r"""
import asyncio
import bridge.app.runtime as composition
from bridge.adapters.http import routes_fhir
from bridge.config.settings import load_settings
from bridge.app.logging_setup import configure_logging

made = composition.create_app

def create_app(*args, **kwargs):
    app = made(*args, **kwargs)
    if not any(getattr(r, "path", "").startswith("/fhir/") for r in app.routes):
        app.include_router(routes_fhir.router)
    return app

composition.create_app = create_app
settings = load_settings()
configure_logging(settings.log_level)
asyncio.run(composition.serve(settings))
"""


@dataclass
class Run:
    name: str
    service_requests: int
    seconds: float
    per_second: float
    failed_bundles: int
    on_worklist: int | None = None
    note: str = ""


@dataclass
class Result:
    machine: str
    database: str
    per_bundle: int
    clients: int
    runs: list[Run]
    ratio: float | None
    target_met: bool


def make_bundles(total: int, per_bundle: int, run_id: str) -> list[dict[str, Any]]:
    bundles = []
    for start in range(0, total, per_bundle):
        entries: list[dict[str, Any]] = []
        for n in range(start, min(total, start + per_bundle)):
            patient_url = f"urn:uuid:{uuid.uuid4()}"
            mrn = f"{run_id}-{n:06d}"
            entries.append({
                "fullUrl": patient_url,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                                    "system": MRN_SYSTEM, "value": mrn}],
                    "name": [{"family": f"Fam{n}", "given": ["Given"]}],
                    "gender": "female" if n % 2 else "male",
                    "birthDate": f"19{50 + n % 50:02d}-0{1 + n % 9}-1{n % 10}",
                },
                "request": {"method": "POST", "url": "Patient",
                            "ifNoneExist": f"identifier={MRN_SYSTEM}|{mrn}"},
            })
            modality = MODALITIES[n % len(MODALITIES)]
            entries.append({
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
                                    "system": PLACER_SYSTEM, "value": f"{run_id}-P{n:06d}"}],
                    "status": "active",
                    "intent": "order",
                    "priority": "routine",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2",
                                         "display": "CT Chest"}]},
                    "orderDetail": [{"coding": [{
                        "system": "http://dicom.nema.org/resources/ontology/DCM",
                        "code": modality}]}],
                    "subject": {"reference": patient_url},
                    "occurrenceDateTime": f"2031-05-{1 + n % 28:02d}T09:30:00+03:00",
                    "authoredOn": "2031-04-30T12:00:00+03:00",
                    "note": [{"text": "bench"}],
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            })
        bundles.append({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return bundles


def post_all(base_url: str, bundles: list[dict[str, Any]], clients: int,
             headers: dict[str, str]) -> tuple[float, int, str]:
    """Post every Bundle with ``clients`` threads; (seconds, failed bundles, first error)."""
    bodies = [json.dumps(b).encode() for b in bundles]
    lock = threading.Lock()
    pending = list(range(len(bodies)))
    failures: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=300, headers={
                **headers, "Content-Type": "application/fhir+json",
                "Accept": "application/fhir+json"}) as client:
            while True:
                with lock:
                    if not pending:
                        return
                    index = pending.pop(0)
                response = client.post("", content=bodies[index])
                problem = _problem(response)
                if problem:
                    with lock:
                        failures.append(problem)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, len(failures), failures[0] if failures else ""


def _problem(response: httpx.Response) -> str:
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    statuses = [e.get("response", {}).get("status", "") for e in response.json()["entry"]]
    bad = [s for s in statuses if not s.startswith(("200", "201"))]
    return f"entries answered {bad[:3]}" if bad else ""


@contextmanager
def bridge_with_fhir(data_dir: Path, database_url: str) -> Iterator[dict[str, int]]:
    """The bridge in its own process; with the FHIR router added if it is not wired yet."""
    with bridge_process(data_dir, database_url) as ports:
        probe = httpx.get(f"http://127.0.0.1:{ports['http']}/fhir/metadata", timeout=30)
        if probe.status_code == 200:
            yield ports
            return
    log("  /fhir is not in the composition root yet: serving it from a launcher")
    ports = {"mllp": free_port(), "dicom": free_port(), "http": free_port()}
    env = {**os.environ, "BRIDGE_DATA_DIR": str(data_dir), "BRIDGE_LOG_LEVEL": "WARNING",
           "BRIDGE_DATABASE_URL": database_url, "BRIDGE_MLLP_PORT": str(ports["mllp"]),
           "BRIDGE_DICOM_PORT": str(ports["dicom"]), "BRIDGE_HTTP_PORT": str(ports["http"])}
    with (data_dir / "bridge-fhir.log").open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-c", _SERVE_WITH_FHIR], env=env, cwd=ROOT,
                                stderr=log_file)
        try:
            wait_for_port(ports["http"], 60, proc)
            yield ports
        finally:
            stop_process(proc, 30)


def make_token(data_dir: Path, database_url: str) -> str:
    env = {**os.environ, "BRIDGE_DATA_DIR": str(data_dir), "BRIDGE_DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-m", "bridge", "token", "create", "--role",
                           "integration", "--name", "fhir bench"], env=env, cwd=ROOT,
                          capture_output=True, check=True)
    return done.stdout.decode().strip().splitlines()[-1]


def worklist_count(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT COUNT(*) FROM procedure_steps WHERE status = 'SCHEDULED'")).scalar_one())
    finally:
        engine.dispose()


def api_worklist_count(base: str, token: str) -> int:
    """Steps the worklist API lists (paged), to check the HTTP view agrees with the DB."""
    count, offset = 0, 0
    with httpx.Client(base_url=base, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        while True:
            page = client.get("/api/worklist", params={"limit": 1000, "offset": offset})
            page.raise_for_status()
            items = page.json()
            count += len(items)
            if len(items) < 1000:
                return count
            offset += 1000


def run(args: argparse.Namespace) -> Result:
    run_id = uuid.uuid4().hex[:6]
    bundles = make_bundles(args.total, args.per_bundle, run_id)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="fhir-intake-bench-") as tmp:
        root = Path(tmp)
        with scratch_database(root / "var" / "bridge.db", postgres_url(args)) as db_url, \
                bridge_with_fhir(root / "var", db_url) as ports:
            token = make_token(root / "var", db_url)
            base = f"http://127.0.0.1:{ports['http']}"
            warm = make_bundles(args.per_bundle, args.per_bundle, run_id + "w")
            post_all(f"{base}/fhir", warm, 1, {"Authorization": f"Bearer {token}"})
            before = worklist_count(db_url)
            log(f"bridge: {len(bundles)} bundles of {args.per_bundle}")
            seconds, failed, first = post_all(f"{base}/fhir", bundles, args.clients,
                                              {"Authorization": f"Bearer {token}"})
            on_worklist = worklist_count(db_url) - before
            listed = api_worklist_count(base, token) - before
            note = first or ("" if listed == on_worklist else
                             f"API lists {listed} steps, the database {on_worklist}")
            runs.append(Run("bridge", args.total, seconds, args.total / seconds, failed,
                            on_worklist, note))
        if not args.skip_peer and sekmet_binary() is not None:
            with running_sekmet(root / "sekmet") as peer:
                post_all(peer.base_url, make_bundles(args.per_bundle, args.per_bundle,
                                                     run_id + "w"), 1, {})
                log(f"sekmet-fhir: the same {len(bundles)} bundles")
                seconds, failed, first = post_all(peer.base_url, bundles, args.clients, {})
                runs.append(Run("sekmet-fhir", args.total, seconds, args.total / seconds,
                                failed, None, first or "stores the resources only"))
        elif not args.skip_peer:
            log("sekmet-fhir is not installed: no side-by-side run")
    bridge_run, peer_run = runs[0], next((r for r in runs if r.name != "bridge"), None)
    ratio = bridge_run.per_second / peer_run.per_second if peer_run else None
    met = (bridge_run.per_second >= TARGET_PER_SECOND and bridge_run.failed_bundles == 0
           and bridge_run.on_worklist == args.total)
    return Result(machine(), "PostgreSQL" if args.postgres else "SQLite", args.per_bundle,
                  args.clients, runs, ratio, met)


def report(result: Result) -> None:
    print(f"# {result.machine}; bridge on {result.database}; {result.per_bundle} "
          f"ServiceRequests (+ their Patients) per transaction Bundle, {result.clients} "
          "client(s)")
    header = (f"{'server':12} {'SRs':>6} {'seconds':>8} {'SR/s':>8} {'failed':>6} "
              f"{'worklist':>8}  note")
    print_header(header)
    for one in result.runs:
        worklist = "-" if one.on_worklist is None else str(one.on_worklist)
        print(f"{one.name:12} {one.service_requests:>6} {one.seconds:>8.2f} "
              f"{one.per_second:>8.1f} {one.failed_bundles:>6} {worklist:>8}  {one.note}")
    if result.ratio is not None:
        print(f"\nbridge / sekmet-fhir = {result.ratio:.2f}x")
    verdict = "met" if result.target_met else "NOT met"
    print(f"target: >= {TARGET_PER_SECOND:.0f} SR/s into the worklist, every one listed: "
          f"{verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--total", type=int, default=2000, help="ServiceRequests in all")
    parser.add_argument("--per-bundle", type=int, default=100)
    parser.add_argument("--clients", type=int, default=2, help="concurrent posting threads")
    parser.add_argument("--skip-peer", action="store_true", help="bridge only")
    add_common_options(parser, postgres_help="run the bridge on PostgreSQL")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        report(result)
    return 0 if result.target_met else 1


if __name__ == "__main__":
    sys.exit(main())
