"""Benchmark: Modality Worklist C-FIND latency of the bridge, and of DCMTK wlmscpfs.

Not a test. For each size it synthesises N scheduled steps (one patient and order each,
over 30 station AEs, 6 modalities and 365 days), starts ``bridge serve`` on free ports and
times three typical queries: station AE + one day, modality + one day, patient ID.
At 10,000 steps the same items are also written as .wl files and served by ``wlmscpfs``.

Client: pynetdicom with TCP_NODELAY (as DCMTK), one association per query as modalities
do, configured as a lean modality: it does not format every response identifier for a
debug log nobody reads (``LOG_RESPONSE_IDENTIFIERS``, ``LOG_HANDLER_LEVEL``; about 0.7 ms
per response otherwise), the same for the bridge and wlmscpfs. ``find`` is the time from
the C-FIND request to the final response; ``total`` adds association set-up and release.

``raw``: every query also from ``bench/_raw_find.py``, a minimal socket client that decodes
only each response's Status (as a modality's C/C++ stack would), so ``find`` measures the
server rather than pynetdicom's client.

``floor``: the pynetdicom client against a pynetdicom SCP that answers every query with the
same number of canned responses (no database, nothing to build) through the bridge's own
response writer: what the client and pynetdicom's protocol handling cost by themselves.

    python bench/mwl_query.py --sizes 10000,100000 --queries 200 [--database-url URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    bridge_process,
    free_port,
    log,
    no_delay,
    percentile,
    print_header,
    scratch_database,
    stop_process,
    wait_for_port,
)
from bench._raw_find import RawFindClient
from bridge.mapping.worklist.dataset import ResponseOptions, build_identifier
from bridge.mapping.worklist.query import parse_worklist_query
from bridge.services.worklist.query import find_worklist
from bridge.store.db import make_engine, make_session_factory
from bridge.store.migrate import upgrade
from tests.worklist_factories import (
    MODALITIES,
    BulkPlan,
    bulk_patient_id,
    bulk_schedule,
    bulk_station,
)

MWL = ModalityWorklistInformationFind
WLM_AE = "WLMSCP"
TARGET_P95_MS = 20.0
TARGET_SPEEDUP = 10.0


@dataclass(frozen=True, slots=True)
class Stats:
    server: str
    #: ``pynetdicom`` or ``raw`` (bench/_raw_find.py: decodes only each response's Status).
    client: str
    size: int
    query: str
    matches_mean: float
    find_p50: float
    find_p95: float
    total_p50: float
    total_p95: float


def identifier(kind: str, plan: BulkPlan, rng: random.Random) -> Dataset:
    """A modality's query with the usual return keys."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "AccessionNumber", "StudyInstanceUID", "RequestedProcedureID",
                    "RequestedProcedureDescription"):
        setattr(ds, keyword, "")
    day = (plan.first_day.toordinal() + rng.randrange(plan.days))
    date = type(plan.first_day).fromordinal(day).strftime("%Y%m%d")
    sps = Dataset()
    for keyword in ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                    "ScheduledProcedureStepStartTime", "Modality",
                    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID"):
        setattr(sps, keyword, "")
    if kind == "station+date":
        sps.ScheduledStationAETitle = bulk_station(rng.randrange(plan.stations))
        sps.ScheduledProcedureStepStartDate = date
    elif kind == "modality+date":
        sps.Modality = rng.choice(MODALITIES)
        sps.ScheduledProcedureStepStartDate = date
    else:
        ds.PatientID = bulk_patient_id(rng.randrange(plan.first_id, plan.first_id + plan.steps))
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def run_queries(port: int, called_ae: str, plan: BulkPlan, kind: str, count: int,
                server: str) -> Stats:
    rng = random.Random(f"{kind}-{plan.steps}")
    finds, totals, matches = [], [], []
    client = AE(ae_title="BENCH")
    client.add_requested_context(MWL)
    for _ in range(count):
        query = identifier(kind, plan, rng)
        start = time.perf_counter()
        assoc = client.associate("127.0.0.1", port, ae_title=called_ae)
        if not assoc.is_established:
            raise RuntimeError(f"{server}: association failed")
        no_delay(assoc)
        sent = time.perf_counter()
        responses = list(assoc.send_c_find(query, MWL))
        found = time.perf_counter()
        assoc.release()
        done = time.perf_counter()
        final = responses[-1][0]
        if final is None or final.Status != 0x0000:
            raise RuntimeError(f"{server}: C-FIND failed: {final}")
        finds.append((found - sent) * 1000)
        totals.append((done - start) * 1000)
        matches.append(len(responses) - 1)
    return Stats(server, "pynetdicom", plan.steps, kind, statistics.mean(matches),
                 percentile(finds, 50), percentile(finds, 95), percentile(totals, 50),
                 percentile(totals, 95))


def run_raw_queries(port: int, called_ae: str, plan: BulkPlan, kind: str, count: int,
                    server: str) -> Stats:
    """The same queries (same seed) from the raw-socket client: what the server takes."""
    rng = random.Random(f"{kind}-{plan.steps}")
    finds, totals, matches = [], [], []
    for _ in range(count):
        query = identifier(kind, plan, rng)
        start = time.perf_counter()
        client = RawFindClient("127.0.0.1", port, calling="BENCH", called=called_ae,
                               abstract_syntax=MWL)
        sent = time.perf_counter()
        result = client.find(query)
        found = time.perf_counter()
        client.release()
        done = time.perf_counter()
        if result.status != 0x0000:
            raise RuntimeError(f"{server}: C-FIND failed: {result.status:#06x}")
        finds.append((found - sent) * 1000)
        totals.append((done - start) * 1000)
        matches.append(result.pending)
    return Stats(server, "raw", plan.steps, kind, statistics.mean(matches),
                 percentile(finds, 50), percentile(finds, 95), percentile(totals, 50),
                 percentile(totals, 95))


def write_wl_files(session_factory: Any, folder: Path) -> int:
    """Every open item as a .wl file, built by the bridge's own response mapping."""
    folder.mkdir(parents=True)
    (folder / "lockfile").touch()
    full = Dataset()
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                    "PatientSex", "AccessionNumber", "StudyInstanceUID",
                    "RequestedProcedureID", "RequestedProcedureDescription",
                    "RequestedProcedurePriority", "ReferringPhysicianName"):
        setattr(full, keyword, "")
    full.RequestedProcedureCodeSequence = []
    full.ScheduledProcedureStepSequence = [Dataset()]
    keys = parse_worklist_query(full).return_keys
    written = 0
    with session_factory() as session:
        for item in find_worklist(session, parse_worklist_query(Dataset())):
            ds = build_identifier(item, keys, ResponseOptions())
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = MWL
            ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(folder / f"item{written:06d}.wl", enforce_file_format=True)
            written += 1
    return written


@contextmanager
def wlmscpfs(data_dir: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(["wlmscpfs", "-dfp", str(data_dir), "-dfr", "-csk", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, 10, proc)
        yield port
    finally:
        stop_process(proc, 10)


KINDS = ("station+date", "modality+date", "patient id")


def serve_canned(port: int, count: int, identifier_file: str) -> None:
    """The floor's SCP (run in its own process): ``count`` copies of one identifier for any
    C-FIND, through the bridge's response writer."""
    from pynetdicom.dsutils import encode

    from bridge.adapters.dicom.worklist_scp import streamed_responses

    identifier: Dataset = pickle.loads(Path(identifier_file).read_bytes())

    def handle(event: Any) -> Iterator[Any]:
        syntax = event.context.transfer_syntax
        data = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian,
                      syntax.is_deflated)
        yield from streamed_responses(event, range(count), lambda _: identifier, {},
                                      comment="canned", encoded=lambda _: data)

    ae = AE(ae_title="BRIDGE")
    ae.add_supported_context(MWL)
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[
        (evt.EVT_C_FIND, handle), (evt.EVT_CONN_OPEN, lambda event: no_delay(event.assoc))])


def floor(plan: BulkPlan, kind: str, hits: float, session_factory: Any, tmp: Path,
          count: int) -> Stats:
    """The client against canned responses (see the module): as many as the bridge found."""
    rng = random.Random(f"{kind}-{plan.steps}")
    request = identifier(kind, plan, rng)
    keys = parse_worklist_query(request).return_keys
    with session_factory() as session:
        item = next(find_worklist(session, parse_worklist_query(Dataset())))
    path = tmp / f"canned-{kind.replace(' ', '_')}.pickle"
    path.write_bytes(pickle.dumps(build_identifier(item, keys, ResponseOptions())))
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--canned-server", str(port),
                             str(round(hits)), str(path)], stderr=subprocess.PIPE)
    try:
        wait_for_port(port, 30, proc)
        run_queries(port, "BRIDGE", plan, kind, 10, "warm-up")
        return run_queries(port, "BRIDGE", plan, kind, count, "floor")
    finally:
        stop_process(proc, 10)


def bench_size(size: int, args: argparse.Namespace, log: Callable[[str], None]) -> list[Stats]:
    results: list[Stats] = []
    plan = BulkPlan(steps=size)
    with tempfile.TemporaryDirectory(prefix="mwl-bench-") as tmp, \
            scratch_database(Path(tmp) / "bridge.db", args.database_url) as url:
        engine = make_engine(url)
        upgrade(engine)
        started = time.perf_counter()
        with engine.begin() as conn:
            bulk_schedule(conn, plan)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        elapsed = time.perf_counter() - started
        log(f"{size} steps inserted in {elapsed:.1f} s ({engine.dialect.name})")
        session_factory = make_session_factory(engine)
        # The bridge runs as `bridge serve` in its own process, as in production: a client
        # in the same process would share its GIL and pynetdicom's polling threads.
        with bridge_process(Path(tmp) / "var", url) as ports:
            for kind in KINDS:
                run_queries(ports["dicom"], "BRIDGE", plan, kind, 10, "warm-up")
                results.append(run_queries(ports["dicom"], "BRIDGE", plan, kind,
                                           args.queries, "bridge"))
                results.append(run_raw_queries(ports["dicom"], "BRIDGE", plan, kind,
                                               args.queries, "bridge"))
        if args.floor:
            for kind, found in [(r.query, r.matches_mean) for r in results
                                if r.client == "pynetdicom"]:
                results.append(floor(plan, kind, found, session_factory, Path(tmp),
                                     args.queries))
        if size == args.wlm_size and shutil.which("wlmscpfs"):
            folder = Path(tmp) / "wlm" / WLM_AE
            written = write_wl_files(session_factory, folder)
            log(f"{written} .wl files written for wlmscpfs")
            with wlmscpfs(folder.parent) as port:
                for kind in KINDS:
                    wlm_count = min(args.queries, args.wlm_queries)
                    results.append(run_queries(port, WLM_AE, plan, kind, wlm_count,
                                               "wlmscpfs"))
                    results.append(run_raw_queries(port, WLM_AE, plan, kind, wlm_count,
                                                   "wlmscpfs"))
        engine.dispose()
    return results


def report(results: list[Stats], args: argparse.Namespace) -> dict[str, Any]:
    by_key = {(r.server, r.client, r.size, r.query): r for r in results}
    checks: list[dict[str, Any]] = []
    for r in results:
        if r.server == "bridge" and r.size >= 100_000:
            checks.append({"check": f"p95 <= {TARGET_P95_MS} ms at {r.size} ({r.query}, "
                                    f"{r.client} client)",
                           "value": r.find_p95, "ok": r.find_p95 <= TARGET_P95_MS})
        wlm = by_key.get(("wlmscpfs", r.client, r.size, r.query))
        if r.server == "bridge" and wlm is not None:
            speedup = wlm.find_p50 / r.find_p50
            checks.append({"check": f">= {TARGET_SPEEDUP}x faster than wlmscpfs at {r.size} "
                                    f"({r.query}, p50, {r.client} client)",
                           "value": round(speedup, 1), "ok": speedup >= TARGET_SPEEDUP})
    return {"results": [asdict(r) for r in results], "checks": checks}


def print_table(results: list[Stats], summary: dict[str, Any]) -> None:
    by_key = {(r.server, r.client, r.size, r.query): r for r in results}
    header = (f"{'server':9} {'client':10} {'steps':>7} {'query':14} {'hits':>6} "
              f"{'find p50':>9} {'find p95':>9} {'total p50':>10} {'total p95':>10} "
              f"{'bridge/wlm p50':>15}")
    print_header(header)
    for r in results:
        ratio = ""
        wlm = by_key.get(("wlmscpfs", r.client, r.size, r.query))
        if r.server == "bridge" and wlm is not None:
            ratio = f"{r.find_p50 / wlm.find_p50:.3f}"
        print(f"{r.server:9} {r.client:10} {r.size:>7} {r.query:14} {r.matches_mean:>6.1f} "
              f"{r.find_p50:>8.2f}ms {r.find_p95:>8.2f}ms {r.total_p50:>9.2f}ms "
              f"{r.total_p95:>9.2f}ms {ratio:>15}")
    print()
    for check in summary["checks"]:
        print(f"[{'PASS' if check['ok'] else 'FAIL'}] {check['check']}: {check['value']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--wlm-size", type=int, default=10_000,
                        help="the size at which wlmscpfs is run too")
    parser.add_argument("--wlm-queries", type=int, default=200,
                        help="cap on queries against wlmscpfs (it scans every file)")
    parser.add_argument("--database-url", default=os.environ.get("BRIDGE_BENCH_DATABASE_URL"),
                        help="PostgreSQL URL (a schema is created and dropped); default SQLite")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the client's floor (canned responses)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--canned-server", nargs=3, metavar=("PORT", "COUNT", "FILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.canned_server:
        port, count, path = args.canned_server
        serve_canned(int(port), int(count), path)
        return 0
    # A lean modality: no response identifier formatted for pynetdicom's debug log.
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"

    results: list[Stats] = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        results.extend(bench_size(size, args, log))
    summary = report(results, args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(results, summary)
    return 0 if all(c["ok"] for c in summary["checks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
