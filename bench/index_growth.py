#!/usr/bin/env python
"""C-STORE latency as the archive index grows: 10,000 versus 1,000,000 instances indexed.

The index is grown in place, one size after the other: rows are synthesised straight into
patients, patient_identifiers, orders, studies, series and instances of a migrated bridge
database (bulk inserts, ``--per-study`` instances in two series per study, one order and one
patient per study, UIDs in random order as different modalities make them). Then
``bridge serve`` is started on it, the order of a new study is sent over MLLP, and that
study's CT objects are sent over one association by a pynetdicom SCU, one C-STORE at a
time, each timed from request to response (after a warm-up study).

    python bench/index_growth.py [--sizes 10000,1000000] [--objects 200] [--postgres]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, insert, select, text

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
from bench._dicom_data import UID_PREFIX, pynetdicom_send_timed, schedule_order, write_ct_study
from bridge.store.archive_models import Instance, Series, Study
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade
from bridge.store.models import Order, Patient, PatientIdentifier, table_of

TARGET_RATIO = 1.5
BATCH = 20_000
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True, slots=True)
class Stats:
    indexed: int
    objects: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    per_second: float
    failures: int
    #: Objects of the measured study found in the index afterwards.
    stored: int
    insert_seconds: float


# --- synthesising the index ----------------------------------------------------------------

def _filler(table: Table, given: set[str]) -> dict[str, Any]:
    """Values for NOT NULL columns the synthesiser does not know about (the schema may have
    grown since this script): the column's scalar default, else a neutral value."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {}
    for column in table.columns:
        if column.name in given or column.nullable or column.primary_key:
            continue
        default = column.default
        arg = getattr(default, "arg", None)
        if default is not None and not callable(arg):
            values[column.name] = arg
            continue
        python_type = column.type.python_type
        values[column.name] = (now if python_type is datetime else
                               0 if python_type in (int, float) else
                               {} if python_type is dict else "")
    return values


class Synthesiser:
    """Appends studies (each with its patient, identifier, order, 2 series and instances)
    with explicit ids, so one executemany per table and batch is all it takes."""

    def __init__(self, engine: Engine, per_study: int, seed: int = 7) -> None:
        self.engine = engine
        self.per_study = max(2, per_study)
        self.rng = random.Random(seed)
        self.tables = {name: table_of(model) for name, model in (
            ("patients", Patient), ("patient_identifiers", PatientIdentifier),
            ("orders", Order), ("studies", Study), ("series", Series),
            ("instances", Instance))}
        self.now = datetime.now(UTC)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(
                self.tables["instances"])).scalar_one())

    def grow_to(self, instances: int) -> float:
        started = time.perf_counter()
        have = self.count()
        with self.engine.connect() as conn:
            next_ids = {name: int(conn.execute(select(func.coalesce(func.max(t.c.id), 0)))
                                  .scalar_one()) + 1 for name, t in self.tables.items()}
        while have < instances:
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in self.tables}
            while have < instances and len(rows["instances"]) < BATCH:
                have += self._study(rows, next_ids, min(self.per_study, instances - have))
            with self.engine.begin() as conn:
                for name, table in self.tables.items():
                    self._insert(conn, table, rows[name])
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Explicit ids do not advance PostgreSQL's sequences: the bridge's own
                # inserts would collide with the synthesised rows.
                for name in self.tables:
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                      f"(SELECT max(id) FROM {name}))"))
            conn.execute(text("ANALYZE"))
        return time.perf_counter() - started

    def _insert(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        extra = _filler(table, set(rows[0]))
        if extra:
            rows = [{**extra, **row} for row in rows]
        conn.execute(insert(table), rows)

    def _uid(self) -> str:
        # Random components: UIDs from many modalities do not arrive in index order.
        return f"{UID_PREFIX}{self.rng.randrange(10**9)}.{self.rng.randrange(10**12)}"

    def _study(self, rows: dict[str, list[dict[str, Any]]], ids: dict[str, int],
               instances: int) -> int:
        pid, oid, stid = ids["patients"], ids["orders"], ids["studies"]
        ids["patients"] += 1
        ids["orders"] += 1
        ids["studies"] += 1
        name = f"Patient{pid}^Synthetic"
        rows["patients"].append({"id": pid, "name": name, "name_search": name.casefold(),
                                 "birth_date": "19700101", "sex": "MF"[pid % 2],
                                 "created_at": self.now, "updated_at": self.now})
        rows["patient_identifiers"].append({"id": ids["patient_identifiers"],
                                            "patient_id": pid, "value": f"SYN{pid:09d}",
                                            "issuer": "HOSP", "id_type": "MR", "position": 0})
        ids["patient_identifiers"] += 1
        study_uid = self._uid()
        accession = f"SYN{oid:09d}"
        day = f"2025{1 + stid % 12:02d}{1 + stid % 28:02d}"
        rows["orders"].append({"id": oid, "patient_id": pid, "placer_number": f"SPL{oid}",
                               "placer_issuer": "", "filler_number": f"SFL{oid}",
                               "filler_issuer": "", "accession": accession,
                               "study_instance_uid": study_uid, "status": "COMPLETED",
                               "source": "bench", "created_at": self.now,
                               "updated_at": self.now})
        rows["studies"].append({
            "id": stid, "study_instance_uid": study_uid, "patient_id": pid, "order_id": oid,
            "source_patient_id": f"SYN{pid:09d}", "source_issuer": "HOSP",
            "source_patient_name": name, "source_name_search": name.casefold(),
            "source_birth_date": "19700101", "source_sex": "MF"[pid % 2],
            "accession": accession, "study_date": day, "study_time": "101500", "study_id": "1",
            "description": "CT synthetic", "referring_physician": "", "modalities": "CT",
            "num_series": 2, "num_instances": instances, "size_bytes": instances * 526_000,
            "state": "stable", "reconciliation": "matched", "match_key": "accession",
            "last_received_at": self.now, "stable_at": self.now, "created_at": self.now,
            "updated_at": self.now})
        series_ids = []
        for number in (1, 2):
            series_ids.append((ids["series"], self._uid()))
            rows["series"].append({"id": ids["series"], "study_id": stid,
                                   "series_instance_uid": series_ids[-1][1], "modality": "CT",
                                   "series_number": number, "description": "Axial",
                                   "body_part": "HEAD", "num_instances": 0,
                                   "created_at": self.now})
            ids["series"] += 1
        for n in range(instances):
            series_id, series_uid = series_ids[n % 2]
            sop_uid = self._uid()
            iid = ids["instances"]
            ids["instances"] += 1
            rows["instances"].append({
                "id": iid, "series_id": series_id, "study_id": stid,
                "sop_instance_uid": sop_uid, "sop_class_uid": CT_IMAGE,
                "instance_number": n + 1, "transfer_syntax_uid": EXPLICIT_LE,
                "path": f"{study_uid}/{series_uid}/{sop_uid}.dcm", "size": 526_000,
                "sha256": f"{iid:064x}", "source_charset": None, "calling_ae": "CT1",
                "received_at": self.now})
        return instances


# --- measuring ----------------------------------------------------------------------------

def measure(url: str, workdir: Path, size: int, insert_seconds: float,
            args: argparse.Namespace, log: Callable[[str], None]) -> Stats:
    data = workdir / "data" / str(size)
    warm = write_ct_study(data / "warm", 20, accession=f"BW{size}"[:16], rows=args.rows,
                          columns=args.rows)
    study = write_ct_study(data / "measured", args.objects, accession=f"BM{size}"[:16],
                           rows=args.rows, columns=args.rows, seed=size)
    with bridge_process(workdir / "var", url) as ports:
        for run, files in (("W", warm), ("M", study)):
            schedule_order(ports["mllp"], run=f"{run}{size}", accession=files.accession,
                           study_uid=files.study_uid)
        pynetdicom_send_timed(ports["dicom"], "BRIDGE", warm.files)
        started = time.perf_counter()
        sent = pynetdicom_send_timed(ports["dicom"], "BRIDGE", study.files)
        elapsed = time.perf_counter() - started
    for failure in sent.failures[:5]:
        log(f"  refused: {failure}")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            indexed = set(conn.execute(text(
                "SELECT i.sop_instance_uid FROM instances i JOIN studies s "
                "ON s.id = i.study_id WHERE s.study_instance_uid = :uid"),
                {"uid": study.study_uid}).scalars())
    finally:
        engine.dispose()
    values = sent.latencies_ms
    return Stats(size, len(values), percentile(values, 50), percentile(values, 95),
                 statistics.mean(values), len(values) / elapsed, len(sent.failures),
                 len(indexed & study.sop_uids), insert_seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default="10000,1000000",
                        help="instances already indexed, ascending (the index grows)")
    parser.add_argument("--objects", type=int, default=200, help="objects timed per size")
    parser.add_argument("--per-study", type=int, default=100,
                        help="synthesised instances per study")
    parser.add_argument("--rows", type=int, default=512, help="rows and columns of the CT")
    add_common_options(parser, postgres_help="PostgreSQL instead of SQLite")
    args = parser.parse_args()

    log(machine())
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    results: list[Stats] = []
    with tempfile.TemporaryDirectory(prefix="index-growth-") as tmp, \
            scratch_database(Path(tmp) / "var" / "bridge.db", postgres_url(args)) as url:
        engine = make_engine(url)
        upgrade(engine)
        synthesiser = Synthesiser(engine, args.per_study)
        for size in sizes:
            seconds = synthesiser.grow_to(size)
            indexed = synthesiser.count()
            log(f"{indexed} instances indexed ({engine.dialect.name}); "
                f"synthesised in {seconds:.1f} s")
            results.append(measure(url, Path(tmp), indexed, seconds, args, log))
            log(f"  {results[-1]}")
        engine.dispose()

    first, last = results[0], results[-1]
    ratio_p50 = last.p50_ms / first.p50_ms
    ratio_p95 = last.p95_ms / first.p95_ms
    lost = sum(r.objects - r.stored for r in results)
    ok = ratio_p50 <= TARGET_RATIO and lost == 0
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "ratio_p50": ratio_p50,
                          "ratio_p95": ratio_p95, "ok": ok}, indent=2))
    else:
        db = "PostgreSQL" if args.postgres else "SQLite"
        header = (f"{'database':10} {'indexed':>9} {'objects':>7} {'p50':>9} {'p95':>9} "
                  f"{'mean':>9} {'obj/s':>7} {'stored':>9} {'synth s':>8}")
        print_header(header)
        for r in results:
            print(f"{db:10} {r.indexed:>9} {r.objects:>7} {r.p50_ms:>7.2f}ms "
                  f"{r.p95_ms:>7.2f}ms {r.mean_ms:>7.2f}ms {r.per_second:>7.1f} "
                  f"{f'{r.stored}/{r.objects}':>9} {r.insert_seconds:>8.1f}")
        print()
        print(f"ratio {last.indexed} / {first.indexed}: p50 {ratio_p50:.2f}x, "
              f"p95 {ratio_p95:.2f}x")
        print(f"[{'PASS' if ok else 'FAIL'}] store latency (p50) at {last.indexed} at most "
              f"{TARGET_RATIO}x that at {first.indexed}, every object indexed: "
              f"{ratio_p50:.2f}x" + (f", {lost} NOT STORED" if lost else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
