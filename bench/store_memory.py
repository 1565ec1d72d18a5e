#!/usr/bin/env python
"""Peak memory of the bridge while it receives one ~1 GB multi-frame object.

The object (Multi-frame Grayscale Word Secondary Capture, 512x512 16-bit frames) is written
to a temporary file without ever being held in memory, checked with ``dcmdump``, and sent
by DCMTK storescu to ``bridge serve`` (SQLite) after its order was scheduled over MLLP.
The figure is the bridge process's RSS high-water mark (``VmHWM`` in /proc/PID/status),
read before and after; the object must then be indexed and its data set on disk as sent
(same length, same last megabyte; the file meta is the receiver's own).

``--references`` also measures the bare pynetdicom SCP, with and without chunked receive.

    python bench/store_memory.py [--megabytes 1024] [--references] [--postgres]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    add_common_options,
    bridge_process,
    log,
    machine,
    postgres_url,
    print_header,
    scratch_database,
)
from bench._dicom_data import (
    LargeObject,
    bare_scp,
    memory_kib,
    pid_listening_on,
    same_data_set,
    schedule_order,
    storescu_send,
    write_large_multiframe,
)
from bridge.store.db import make_engine

LIMIT_MB = 300.0


@dataclass(frozen=True, slots=True)
class Result:
    receiver: str
    object_mb: float
    seconds: float
    rss_before_mb: float
    peak_mb: float
    stored: bool
    note: str

    @property
    def ok(self) -> bool:
        return self.stored and self.peak_mb < LIMIT_MB


def check_parses(obj: LargeObject) -> None:
    """DCMTK must read the file we wrote (``-M``: long values are not loaded)."""
    done = subprocess.run(["dcmdump", "-M", "+L", str(obj.path)], capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0 or "PixelData" not in done.stdout:
        raise RuntimeError(f"dcmdump cannot read the object: {done.stderr[-500:]}")
    frames = next((line for line in done.stdout.splitlines() if "NumberOfFrames" in line), "")
    if f"[{obj.frames}]" not in frames:
        raise RuntimeError(f"dcmdump reads another frame count: {frames!r}")


def measure_bridge(obj: LargeObject, workdir: Path, args: argparse.Namespace) -> Result:
    label = "bridge, PostgreSQL" if args.postgres else "bridge, SQLite"
    with scratch_database(workdir / "var" / "bridge.db", postgres_url(args)) as url, \
            bridge_process(workdir / "var", url) as ports:
        pid = pid_listening_on(ports["dicom"])
        schedule_order(ports["mllp"], run="MEM1", accession=obj.accession,
                       study_uid=obj.study_uid)
        before = memory_kib(pid)
        sent = storescu_send(ports["dicom"], "BRIDGE", [obj.path])
        after = memory_kib(pid)
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT path, size FROM instances "
                                        "WHERE sop_instance_uid = :uid"),
                                   {"uid": obj.sop_uid}).first()
        finally:
            engine.dispose()
    stored_path = workdir / "var" / "archive" / row[0] if row else None
    stored = (row is not None and stored_path is not None and stored_path.is_file()
              and int(row[1]) == stored_path.stat().st_size
              and same_data_set(stored_path, obj.path))
    note = "indexed, file complete" if stored else (
        "NOT STORED" if row is None else "indexed, but the file differs from what was sent")
    if sent.problems:
        note += "; " + "; ".join(sent.problems)
    return Result(label, obj.size / 1e6, sent.seconds, before["VmRSS"] / 1024,
                  after["VmHWM"] / 1024, stored, note)


def measure_bare(obj: LargeObject, workdir: Path, chunked: bool) -> Result:
    out = workdir / "received"
    with bare_scp(out, chunked=chunked) as port:
        pid = pid_listening_on(port)
        before = memory_kib(pid)
        sent = storescu_send(port, "BARE", [obj.path])
        after = memory_kib(pid)
    path = out / f"{obj.sop_uid}.dcm"
    stored = path.is_file() and same_data_set(path, obj.path)
    label = "bare pynetdicom, chunked" if chunked else "bare pynetdicom, in memory"
    note = "file written" if stored else "NOT STORED"
    if sent.problems:
        note += "; " + "; ".join(sent.problems)
    return Result(label, obj.size / 1e6, sent.seconds, before["VmRSS"] / 1024,
                  after["VmHWM"] / 1024, stored, note)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--megabytes", type=int, default=1024, help="size of the object (MiB)")
    parser.add_argument("--references", action="store_true",
                        help="also the bare pynetdicom SCP, in memory and chunked")
    add_common_options(parser, postgres_help="the bridge on PostgreSQL")
    args = parser.parse_args()

    log(machine())
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="store-mem-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        obj = write_large_multiframe(root / "big.dcm", args.megabytes * 1024 * 1024,
                                     accession="BMEM0001")
        check_parses(obj)
        log(f"{obj.size / 1e6:.0f} MB, {obj.frames} frames written and checked with dcmdump "
            f"in {time.perf_counter() - started:.1f} s")
        results.append(measure_bridge(obj, root / "bridge", args))
        log(f"{results[-1]}")
        if args.references:
            for chunked in (True, False):
                results.append(measure_bare(obj, root / f"bare{int(chunked)}", chunked))
                log(f"{results[-1]}")

    bridge = results[0]
    if args.json:
        print(json.dumps({"limit_mb": LIMIT_MB,
                          "results": [{**asdict(r), "ok": r.ok} for r in results]}, indent=2))
    else:
        header = (f"{'receiver':28} {'object MB':>9} {'seconds':>8} {'MB/s':>7} "
                  f"{'RSS before':>10} {'peak RSS':>9} {'limit':>6}  stored")
        print_header(header)
        for r in results:
            print(f"{r.receiver:28} {r.object_mb:>9.0f} {r.seconds:>8.2f} "
                  f"{r.object_mb / r.seconds if r.seconds else 0:>7.1f} "
                  f"{r.rss_before_mb:>8.0f}MB {r.peak_mb:>7.0f}MB {LIMIT_MB:>4.0f}MB  {r.note}")
        print()
        print(f"[{'PASS' if bridge.ok else 'FAIL'}] {bridge.receiver}: peak RSS "
              f"{bridge.peak_mb:.0f} MB < {LIMIT_MB:.0f} MB while receiving "
              f"{bridge.object_mb:.0f} MB, object stored: {bridge.stored}")
    return 0 if bridge.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
