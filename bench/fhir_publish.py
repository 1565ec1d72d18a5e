#!/usr/bin/env python
"""ImagingStudy publishing latency: from a study becoming stable to its ImagingStudy being
readable on the target FHIR server.

The whole bridge runs in its own process (``bridge serve``) with ``BRIDGE_FHIR_TARGET_URL``
pointing at a real sekmet-fhir (the MIS), and a short ``BRIDGE_STUDY_STABLE_SECONDS``. sekmet
first gets the MIS's Patient (the HL7 fixture's P10001) and, per study, an active
ServiceRequest with the accession; the bridge gets the same order over MLLP (ORM^O01). Then
each study's CT objects are sent by DCMTK storescu, with other patient values than the order
so that every study is reconciled by accession. Two phases:

- **paced**: one study every ``--pace`` seconds, as a department sends them. The latency of
  each study is from its ``stable`` study event (``created_at``, in the bridge's database) to
  the moment its ImagingStudy is first found on sekmet by identifier (polled every 50 ms, OR
  lists of identifiers, so the poll resolution adds at most 50 ms);
- **burst**: every study in one storescu run, so they become stable within a sweep or two and
  the queue drains at the publishing rate: publications/s = (studies - 1) / (last readable -
  first readable). Objects arrive at the storage rate, so studies become stable over several
  sweeps and this phase mostly shows latency under a burst of arrivals;
- **backlog**: a publication queued at once for every study already published (as after a
  target outage, or a republication of everything), drained by the bridge's job worker: the
  publishing capacity, publications/s = (jobs - 1) / (last done - first done), and the
  latency from queueing to done. Each is an update of an existing ImagingStudy.

The limit it is compared with: the same ImagingStudies written straight to sekmet by one
client, one conditional update each (``PUT ImagingStudy?identifier=...``). A publication by
the bridge also resolves the Patient and the ServiceRequest by identifier and completes the
ServiceRequest (four requests instead of one). Afterwards every study is checked to exist
exactly once on sekmet, and the failed list of the ``fhir_publish`` queue to be empty.

    python bench/fhir_publish.py [--studies 100] [--objects 3] [--stable-seconds 1]
                                 [--pace 0.2] [--postgres] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, bindparam, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    add_common_options,
    bridge_process,
    log,
    machine,
    percentile,
    postgres_url,
    print_header,
    scratch_database,
)
from bench._dicom_data import (
    StudyFiles,
    schedule_order,
    storescu_send,
    write_ct_study,
)
from bridge.services.fhir.publish import enqueue_publication
from bridge.store.db import make_engine, make_session_factory
from tests.fhir_peer import SekmetPeer, running_sekmet

TARGET_P95_SECONDS = 2.0
POLL_SECONDS = 0.05
#: Identifiers per polling search (an OR list; keeps the URL short).
POLL_CHUNK = 20
MIS_PATIENT_ID = "P10001"  # the patient of fixtures/hl7/orm_o01_nw.hl7
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass(slots=True)
class Phase:
    name: str
    studies: int
    published: int
    p50: float
    p95: float
    max: float
    per_second: float
    note: str = ""


@dataclass(slots=True)
class Result:
    machine: str
    database: str
    stable_seconds: float
    objects_per_study: int
    phases: list[Phase] = field(default_factory=list)
    limit_per_second: float = 0.0
    duplicates: int = 0
    failed_jobs: int = 0
    target_met: bool = False


# ----------------------------------------------------------------------------- polling


class Watcher:
    """Polls sekmet for the ImagingStudies of the studies it is told about; remembers when
    each was first readable and how many resources carried its identifier."""

    def __init__(self, peer: SekmetPeer) -> None:
        self.client = httpx.Client(base_url=peer.base_url, timeout=30.0,
                                   headers={"Accept": "application/fhir+json"})
        self.seen: dict[str, float] = {}
        self.copies: dict[str, int] = {}
        self._wanted: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poll", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def want(self, study_uids: Sequence[str]) -> None:
        with self._lock:
            self._wanted.update(study_uids)

    def wait(self, study_uids: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(uid in self.seen for uid in study_uids):
                    return
            time.sleep(POLL_SECONDS)
        missing = sum(1 for uid in study_uids if uid not in self.seen)
        log(f"  {missing} of {len(study_uids)} ImagingStudies not on sekmet after {timeout} s")

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pending = sorted(self._wanted - set(self.seen))
            for start in range(0, len(pending), POLL_CHUNK):
                self._poll(pending[start:start + POLL_CHUNK])
            self._stop.wait(POLL_SECONDS)

    def _poll(self, uids: list[str]) -> None:
        token = ",".join(f"urn:dicom:uid|urn:oid:{uid}" for uid in uids)
        try:
            response = self.client.get("/ImagingStudy", params={
                "identifier": token, "_elements": "identifier", "_count": str(4 * len(uids))})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log(f"  poll failed: {exc}")
            return
        now = time.time()
        counts: dict[str, int] = {}
        for entry in response.json().get("entry", []):
            for identifier in entry.get("resource", {}).get("identifier", []):
                value = str(identifier.get("value", ""))
                if identifier.get("system") == "urn:dicom:uid" and value.startswith("urn:oid:"):
                    uid = value[len("urn:oid:"):]
                    counts[uid] = counts.get(uid, 0) + 1
        with self._lock:
            for uid, count in counts.items():
                self.seen.setdefault(uid, now)
                self.copies[uid] = count


# ----------------------------------------------------------------------------- the run


def stable_times(engine: Engine, study_uids: Sequence[str]) -> dict[str, float]:
    """First ``stable`` event of each study, as a POSIX time."""
    found: dict[str, float] = {}
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT s.study_instance_uid, MIN(e.created_at) FROM study_events e "
            "JOIN studies s ON s.id = e.study_id WHERE e.kind = 'stable' "
            "GROUP BY s.study_instance_uid")).all()
    wanted = set(study_uids)
    for uid, created in rows:
        if uid in wanted:
            found[uid] = _as_utc(created).timestamp()
    return found


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite through a text() query: the stored string
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def prepare(peer: SekmetPeer, mis_patient: str, ports: dict[str, int], study: StudyFiles,
            run: str) -> None:
    """The order on both sides: the ServiceRequest on sekmet, the ORM^O01 to the bridge."""
    peer.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                 "subject": {"reference": f"Patient/{mis_patient}"},
                 "identifier": [{"type": {"coding": [{"system": V2, "code": "ACSN"}]},
                                 "value": study.accession}],
                 "code": {"text": "CT head and neck"}})
    schedule_order(ports["mllp"], run=run, accession=study.accession,
                   study_uid=study.study_uid)


def measure(name: str, studies: list[StudyFiles], watcher: Watcher, engine: Engine,
            timeout: float) -> Phase:
    uids = [s.study_uid for s in studies]
    watcher.wait(uids, timeout)
    stable = stable_times(engine, uids)
    latencies = [watcher.seen[u] - stable[u] for u in uids if u in watcher.seen and u in stable]
    published = sum(1 for u in uids if u in watcher.seen)
    seen = sorted(watcher.seen[u] for u in uids if u in watcher.seen)
    span = seen[-1] - seen[0] if len(seen) > 1 else 0.0
    note = "" if len(stable) == len(uids) else f"{len(uids) - len(stable)} never stable"
    if not latencies:
        return Phase(name, len(uids), published, 0.0, 0.0, 0.0, 0.0, note or "none published")
    return Phase(name, len(uids), published, percentile(latencies, 50),
                 percentile(latencies, 95), max(latencies),
                 (published - 1) / span if span > 0 else 0.0, note)


def backlog(engine: Engine, study_uids: Sequence[str], timeout: float) -> Phase:
    """Queue a publication of every study in one transaction; wait for the worker to drain
    them; rate and latency from the jobs' completion times."""
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        ids = session.execute(text(
            "SELECT id FROM studies WHERE study_instance_uid IN :uids").bindparams(
            bindparam("uids", expanding=True)), {"uids": list(study_uids)}).scalars().all()
        before = int(session.execute(text("SELECT COALESCE(MAX(id), 0) FROM jobs")).scalar_one())
        for study_id in ids:
            enqueue_publication(session, int(study_id))
    queued_at = time.time()
    deadline = time.monotonic() + timeout
    query = text("SELECT status, updated_at FROM jobs WHERE queue = 'fhir_publish' AND id > :id")
    while True:
        with engine.connect() as conn:
            rows = conn.execute(query, {"id": before}).all()
        if all(status in ("done", "failed") for status, _ in rows) or \
                time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    done = sorted(_as_utc(at).timestamp() for status, at in rows if status == "done")
    note = f"{len(rows) - len(done)} not done" if len(done) < len(rows) else ""
    if len(done) < 2:
        return Phase("backlog", len(ids), len(done), 0.0, 0.0, 0.0, 0.0, note or "none done")
    latencies = [at - queued_at for at in done]
    return Phase("backlog", len(ids), len(done), percentile(latencies, 50),
                 percentile(latencies, 95), max(latencies),
                 (len(done) - 1) / (done[-1] - done[0]), note)


def direct_limit(peer: SekmetPeer, template: dict[str, Any], count: int) -> float:
    """Conditional updates of ``count`` new ImagingStudies like ``template``, one client."""
    body = {k: v for k, v in template.items() if k not in ("id", "meta")}
    with httpx.Client(base_url=peer.base_url, timeout=30.0,
                      headers={"Accept": "application/fhir+json"}) as client:
        start = time.perf_counter()
        for n in range(count):
            uid = f"2.25.{time.time_ns()}{n}"
            body["identifier"] = [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}]
            client.put("/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"},
                       json=body).raise_for_status()
        return count / (time.perf_counter() - start)


@contextmanager
def database(args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    with scratch_database(workdir / "bridge.db", postgres_url(args)) as url:
        yield url


def run(args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="fhir-publish-bench-") as tmp:
        root = Path(tmp)
        paced = [write_ct_study(root / "data" / f"p{n}", args.objects, accession=f"FP{n:05d}",
                                seed=n, rows=64, columns=64) for n in range(args.studies)]
        burst = [write_ct_study(root / "data" / f"b{n}", args.objects, accession=f"FB{n:05d}",
                                seed=n, rows=64, columns=64) for n in range(args.studies)]
        log(f"{2 * args.studies} studies of {args.objects} objects written")
        with running_sekmet(root / "sekmet") as peer, database(args, root) as db_url:
            mis_patient = str(peer.create({
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.804.99.1", "value": MIS_PATIENT_ID}],
                "name": [{"family": "Galagan", "given": ["Olena"]}]})["id"])
            env = {"BRIDGE_FHIR_TARGET_URL": peer.base_url,
                   "BRIDGE_STUDY_STABLE_SECONDS": str(args.stable_seconds),
                   "BRIDGE_LOG_LEVEL": "WARNING"}
            if args.poll_seconds:
                env["BRIDGE_WORKER_POLL_SECONDS"] = str(args.poll_seconds)
            result = Result(machine(), "PostgreSQL" if args.postgres else "SQLite",
                            args.stable_seconds, args.objects)
            with bridge_process(root / "var", db_url, env) as ports, Watcher(peer) as watcher:
                engine = make_engine(db_url)
                try:
                    log("paced phase")
                    for n, study in enumerate(paced):
                        prepare(peer, mis_patient, ports, study, f"P{n:05d}")
                        watcher.want([study.study_uid])
                        sent = storescu_send(ports["dicom"], "BRIDGE", study.files)
                        if sent.problems:
                            log(f"  study {n}: {'; '.join(sent.problems)}")
                        time.sleep(args.pace)
                    result.phases.append(measure("paced", paced, watcher, engine,
                                                 timeout=args.timeout))
                    log("burst phase")
                    for n, study in enumerate(burst):
                        prepare(peer, mis_patient, ports, study, f"B{n:05d}")
                    watcher.want([s.study_uid for s in burst])
                    sent = storescu_send(ports["dicom"], "BRIDGE",
                                         [f for s in burst for f in s.files])
                    if sent.problems:
                        log(f"  burst: {'; '.join(sent.problems)}")
                    result.phases.append(measure("burst", burst, watcher, engine,
                                                 timeout=args.timeout))
                    log("backlog phase")
                    result.phases.append(backlog(engine, [s.study_uid for s in paced + burst],
                                                 timeout=args.timeout))
                    with engine.connect() as conn:
                        result.failed_jobs = int(conn.execute(text(
                            "SELECT COUNT(*) FROM jobs WHERE queue = 'fhir_publish' "
                            "AND status = 'failed'")).scalar_one())
                finally:
                    engine.dispose()
            result.duplicates = sum(1 for count in watcher.copies.values() if count > 1)
            template = peer.search("ImagingStudy", identifier=(
                f"urn:dicom:uid|urn:oid:{paced[0].study_uid}"))
            if template:
                result.limit_per_second = direct_limit(peer, template[0], args.studies)
    paced_phase = result.phases[0]
    result.target_met = (paced_phase.published == paced_phase.studies
                         and paced_phase.p95 <= TARGET_P95_SECONDS)
    return result


def report(result: Result) -> None:
    print(f"# {result.machine}; bridge on {result.database}, stable after "
          f"{result.stable_seconds} s, {result.objects_per_study} objects per study")
    header = (f"{'phase':6} {'studies':>7} {'published':>9} {'p50 s':>6} {'p95 s':>6} "
              f"{'max s':>6} {'publications/s':>14}  note")
    print_header(header)
    for phase in result.phases:
        print(f"{phase.name:6} {phase.studies:>7} {phase.published:>9} {phase.p50:>6.2f} "
              f"{phase.p95:>6.2f} {phase.max:>6.2f} {phase.per_second:>14.1f}  {phase.note}")
    print()
    print(f"limit: sekmet conditional updates from one client, one request per study: "
          f"{result.limit_per_second:.1f}/s")
    drained = next((p for p in result.phases if p.name == "backlog"), None)
    if drained and result.limit_per_second:
        print(f"bridge publishing capacity (backlog) = "
              f"{drained.per_second / result.limit_per_second:.0%} of the limit (a publication "
              "also finds the Patient and the ServiceRequest by identifier)")
    print(f"duplicates on sekmet: {result.duplicates}; failed publication jobs: "
          f"{result.failed_jobs}")
    verdict = "met" if result.target_met else "NOT met"
    print(f"target: paced p95 <= {TARGET_P95_SECONDS:.1f} s: {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=100, help="studies per phase")
    parser.add_argument("--objects", type=int, default=3, help="CT objects per study")
    parser.add_argument("--stable-seconds", type=float, default=1.0)
    parser.add_argument("--pace", type=float, default=0.2,
                        help="seconds between studies in the paced phase")
    parser.add_argument("--poll-seconds", type=float, default=0.0,
                        help="BRIDGE_WORKER_POLL_SECONDS (default: the bridge's own)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for a phase's ImagingStudies")
    add_common_options(parser, postgres_help="run the bridge on PostgreSQL")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        report(result)
    return 0 if result.target_met and not result.duplicates and not result.failed_jobs else 1


if __name__ == "__main__":
    raise SystemExit(main())
