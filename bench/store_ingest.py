#!/usr/bin/env python
"""C-STORE intake throughput: one CT series sent by DCMTK storescu, side by side.

Receivers, in one run, each in its own process and with its own empty storage:

- the bridge (``bridge serve``: reconciliation and indexing on) on SQLite, and with
  ``--postgres`` on PostgreSQL too; before each study the MIS order is sent over MLLP, and
  the objects carry another PatientID and name than the order, so every study is matched
  by accession and reconciled;
- a bare pynetdicom SCP that only writes ``event.encoded_dataset()`` to disk (the practical
  limit of pynetdicom here), and the same with chunked receive (temporary file renamed);
- Orthanc from Debian with its default settings.

Each receiver first takes a warm-up study, then one study per association count
(``--associations 1,4``: N storescu processes, each sending its share over one association).
After every send the receiver is asked what it stored (index rows and files for the bridge,
files for the bare SCP, the REST API for Orthanc): a run that lost objects says so. Besides
the wall-clock rates, the receiving process's CPU time per object (user + system, from
/proc) is shown: on a shared machine it varies much less than the rates do.

Same conditions for the pynetdicom receivers: storescu sends P-DATA PDUs of at most 128 KiB
(DCMTK's own send limit) whether the receiver announces 1 MiB (the bridge) or no limit (the
bare SCP), so both receive the same PDUs; both set TCP_NODELAY; the bridge logs at WARNING
(its per-object INFO line costs about 25 µs).

    python bench/store_ingest.py --count 200 [--associations 1,4] [--repeat 1] [--postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    ROOT,
    add_common_options,
    bridge_process,
    log,
    machine,
    postgres_schema,
    print_header,
)
from bench._dicom_data import (
    StudyFiles,
    bare_scp,
    pid_listening_on,
    schedule_order,
    storescu_send,
    write_ct_study,
)
from bridge.store.db import make_engine
from tests.orthanc_peer import orthanc_binary, running_orthanc

STORAGE_SCP = ROOT / "bridge" / "adapters" / "dicom" / "storage_scp.py"
TARGET_VS_BARE = 0.7
TARGET_VS_ORTHANC = 10.0
BARE = "bare pynetdicom"
BARE_CHUNKED = "bare pynetdicom, chunked"
ORTHANC = "Orthanc 1.10 (defaults)"
BRIDGE_SQLITE = "bridge, SQLite"
BRIDGE_PG = "bridge, PostgreSQL"


@dataclass(frozen=True, slots=True)
class Receiver:
    label: str
    port: int
    called_ae: str
    #: Called before a study is sent, outside the timing (the bridge: schedule its order).
    prepare: Callable[[StudyFiles, str], None]
    #: How many of the study's objects the receiver holds, and a note (reconciliation).
    verify: Callable[[StudyFiles], tuple[int, str]]


@dataclass(slots=True)
class Row:
    target: str
    associations: int
    objects: int
    megabytes: float
    seconds: float
    stored: int
    note: str
    #: CPU time (user + system) of the receiving process during the send; None if unknown.
    cpu_seconds: float | None = None

    @property
    def cpu_ms_per_object(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds * 1000 / self.objects

    @property
    def per_second(self) -> float:
        return self.objects / self.seconds if self.seconds else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.megabytes / self.seconds if self.seconds else 0.0


def _nothing(_study: StudyFiles, _run: str) -> None:
    return None


@contextmanager
def bridge_receiver(workdir: Path, database_url: str, label: str) -> Iterator[Receiver]:
    data_dir = workdir / "var"
    with bridge_process(data_dir, database_url) as ports:
        engine = make_engine(database_url)

        def prepare(study: StudyFiles, run: str) -> None:
            schedule_order(ports["mllp"], run=run, accession=study.accession,
                           study_uid=study.study_uid)

        def verify(study: StudyFiles) -> tuple[int, str]:
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT i.sop_instance_uid, i.path FROM instances i "
                    "JOIN studies s ON s.id = i.study_id WHERE s.study_instance_uid = :uid"),
                    {"uid": study.study_uid}).all()
                state = conn.execute(text(
                    "SELECT reconciliation, patient_id FROM studies "
                    "WHERE study_instance_uid = :uid"), {"uid": study.study_uid}).first()
            archive = data_dir / "archive"
            on_disk = {uid for uid, path in rows if (archive / path).is_file()}
            note = "no study row" if state is None else (
                f"study {state[0]}" + ("" if state[1] is not None else ", no MIS patient"))
            if len(on_disk) < len(rows):
                note += f", {len(rows) - len(on_disk)} indexed without a file"
            return len(on_disk & study.sop_uids), note

        try:
            yield Receiver(label, ports["dicom"], "BRIDGE", prepare, verify)
        finally:
            engine.dispose()


@contextmanager
def bare_receiver(workdir: Path, *, chunked: bool) -> Iterator[Receiver]:
    out = workdir / "received"
    with bare_scp(out, chunked=chunked) as port:
        def verify(study: StudyFiles) -> tuple[int, str]:
            names = {p.stem for p in out.iterdir()}
            return len(names & study.sop_uids), "files only"

        yield Receiver(BARE_CHUNKED if chunked else BARE, port, "BARE", _nothing, verify)


@contextmanager
def orthanc_receiver(workdir: Path) -> Iterator[Receiver]:
    with running_orthanc(workdir, binary=orthanc_binary()) as orthanc:
        def verify(study: StudyFiles) -> tuple[int, str]:
            return len(set(orthanc.instances()) & study.sop_uids), "SQLite index"

        yield Receiver(ORTHANC, orthanc.dicom_port, orthanc.aet, _nothing, verify)


def measure(receiver: Receiver, warm_up: StudyFiles,
            studies: list[tuple[int, StudyFiles]], log: Callable[[str], None]) -> list[Row]:
    rows = []
    try:
        pid: int | None = pid_listening_on(receiver.port)
    except LookupError:
        pid = None
    for run, (associations, study) in enumerate([(1, warm_up), *studies]):
        receiver.prepare(study, f"{run:03d}{study.accession[-6:]}")
        cpu_before = _cpu_seconds(pid)
        sent = storescu_send(receiver.port, receiver.called_ae, study.files, associations)
        cpu_after = _cpu_seconds(pid)
        cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        stored, note = receiver.verify(study)
        if sent.problems:
            note += "; " + "; ".join(sent.problems)
        row = Row(receiver.label, associations, study.count, study.total_bytes / 1e6,
                  sent.seconds, stored, note, cpu)
        log(f"{receiver.label:32} {associations} assoc: {row.per_second:7.1f} obj/s, "
            f"CPU {_ms(row.cpu_ms_per_object)} ms/obj, {stored}/{study.count} stored ({note})")
        if run > 0:
            rows.append(row)
    return rows


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads, ended ones included)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run(args: argparse.Namespace, log: Callable[[str], None]) -> list[Row]:
    associations = [int(a) for a in args.associations.split(",") if a]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        root = Path(tmp)
        warm_up = write_ct_study(root / "data" / "warm", min(20, args.count),
                                 accession="BWARM0001")
        studies = [(a, write_ct_study(root / "data" / f"a{a}r{r}", args.count,
                                      accession=f"BA{a}R{r}",
                                      seed=r))
                   for r in range(args.repeat) for a in associations]
        log(f"{len(studies)} studies of {args.count} objects "
            f"({studies[0][1].total_bytes / args.count / 1e6:.2f} MB each) written")

        Factory = Callable[[Path], AbstractContextManager[Receiver]]
        receivers: list[tuple[str, Factory]] = []
        if STORAGE_SCP.exists():
            receivers.append((BRIDGE_SQLITE, lambda w: bridge_receiver(
                w, f"sqlite:///{w / 'var' / 'bridge.db'}", BRIDGE_SQLITE)))
            if args.postgres:
                receivers.append((BRIDGE_PG, lambda w: _bridge_on_postgres(w, args)))
        else:
            log(f"{STORAGE_SCP.relative_to(ROOT)} does not exist yet: no bridge rows")
        receivers.append((BARE, lambda w: bare_receiver(w, chunked=False)))
        receivers.append((BARE_CHUNKED, lambda w: bare_receiver(w, chunked=True)))
        if orthanc_binary() and not args.skip_orthanc:
            receivers.append((ORTHANC, orthanc_receiver))
        for number, (label, factory) in enumerate(receivers):
            workdir = root / f"receiver{number}"
            workdir.mkdir()
            try:
                with factory(workdir) as receiver:
                    rows.extend(measure(receiver, warm_up, studies, log))
            except Exception as exc:  # a receiver that cannot start is reported, not fatal
                log(f"{label}: failed: {exc!r}")
                rows.extend(Row(label, a, s.count, s.total_bytes / 1e6, 0.0, 0,
                                f"FAILED: {exc!r}"[:300]) for a, s in studies)
    return rows


@contextmanager
def _bridge_on_postgres(workdir: Path, args: argparse.Namespace) -> Iterator[Receiver]:
    with postgres_schema(args.postgres_url) as url, \
            bridge_receiver(workdir, url, BRIDGE_PG) as receiver:
        yield receiver


def best(rows: list[Row]) -> list[Row]:
    """The fastest of the repeats per (target, associations), unless one lost objects: then
    that one, so a loss is never hidden behind a good run."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.target, row.associations), []).append(row)
    chosen = []
    for group in groups.values():
        lossy = [r for r in group if r.stored < r.objects]
        chosen.append(lossy[0] if lossy else max(group, key=lambda r: r.per_second))
    return chosen


def checks(rows: list[Row]) -> list[dict[str, object]]:
    by_key = {(r.target, r.associations): r for r in rows}
    out: list[dict[str, object]] = []
    for row in rows:
        if row.stored < row.objects:
            out.append({"check": f"{row.target}, {row.associations} assoc: every object stored",
                        "value": f"{row.objects - row.stored} of {row.objects} LOST",
                        "ok": False})
        if not row.target.startswith("bridge"):
            continue
        for other, goal in ((BARE, TARGET_VS_BARE), (ORTHANC, TARGET_VS_ORTHANC)):
            ref = by_key.get((other, row.associations))
            if ref is None:
                continue  # not run (--skip-orthanc)
            ratio = _ratio(row, ref)
            out.append({"check": f"{row.target}, {row.associations} assoc: >= {goal}x "
                                 f"{other} (obj/s and MB/s)",
                        "value": "n/a" if ratio is None else round(ratio, 2),
                        "ok": ratio is not None and ratio >= goal})
    return out


def _ratio(row: Row, ref: Row | None) -> float | None:
    """``row`` against ``ref``, or None when either lost objects (a speed that skips the
    work means nothing) or ``ref`` did not run. Same files, so obj/s and MB/s ratios agree."""
    if ref is None or not ref.per_second or row.stored < row.objects or ref.stored < ref.objects:
        return None
    return row.per_second / ref.per_second


def print_table(rows: list[Row], summary: list[dict[str, object]]) -> None:
    by_key = {(r.target, r.associations): r for r in rows}
    header = (f"{'receiver':28} {'assoc':>5} {'objects':>7} {'MB':>7} {'seconds':>8} "
              f"{'obj/s':>7} {'MB/s':>7} {'CPU ms/obj':>10} {'stored':>14} {'vs bare':>8} "
              f"{'vs Orthanc':>10}")
    print_header(header)
    for row in sorted(rows, key=lambda r: (r.associations, r.target)):
        ratios = []
        for other in (BARE, ORTHANC):
            ratio = _ratio(row, by_key.get((other, row.associations)))
            ratios.append("" if row.target == other else "-" if ratio is None
                          else f"{ratio:.2f}x")
        stored = f"{row.stored}/{row.objects}" + ("" if row.stored == row.objects else " LOST")
        print(f"{row.target:28} {row.associations:>5} {row.objects:>7} {row.megabytes:>7.1f} "
              f"{row.seconds:>8.2f} {row.per_second:>7.1f} {row.mb_per_second:>7.1f} "
              f"{_ms(row.cpu_ms_per_object):>10} {stored:>14} {ratios[0]:>8} {ratios[1]:>10}")
    notes = {f"{r.target}, {r.associations} assoc": r.note for r in rows}
    print()
    for key, note in notes.items():
        print(f"  {key}: {note}")
    print()
    for check in summary:
        print(f"[{'PASS' if check['ok'] else 'FAIL'}] {check['check']}: {check['value']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--count", type=int, default=200, help="objects per study")
    parser.add_argument("--associations", default="1,4",
                        help="comma-separated association counts (storescu processes)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="studies per association count; the fastest run is reported")
    parser.add_argument("--skip-orthanc", action="store_true")
    add_common_options(parser, postgres_help="also the bridge on PostgreSQL")
    args = parser.parse_args()

    log(machine())
    rows = best(run(args, log))
    summary = checks(rows)
    if args.json:
        print(json.dumps({"rows": [{**asdict(r), "per_second": round(r.per_second, 1),
                                    "mb_per_second": round(r.mb_per_second, 1),
                                    "cpu_ms_per_object": r.cpu_ms_per_object} for r in rows],
                          "checks": summary}, indent=2))
    else:
        print_table(rows, summary)
    return 0 if all(c["ok"] for c in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
