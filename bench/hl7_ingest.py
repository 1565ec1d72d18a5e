#!/usr/bin/env python
"""HL7 intake throughput: N ORM^O01 over K MLLP connections, end to end, side by side.

An ACK received means the message was logged, mapped and committed (patient, order,
procedure step) — the bridge acknowledges only after the commit. In the same run, hl7apy's
``MLLPServer`` handles the same messages (parse + ACK only, no database, one connection per
message since it cannot keep a connection open), as the reference point named by the issue.

    python bench/hl7_ingest.py --messages 20000 --connections 8 [--repeat 3]

Each database is measured ``--repeat`` times on a fresh bridge; the median is reported with
every run and the CPU steal during it (a shared VM's neighbours take CPU time unannounced).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    DEFAULT_PG,
    ROOT,
    StealMeter,
    bridge_process,
    free_port,
    machine,
    postgres_schema,
    wait_for_port,
)

TEMPLATE = (ROOT / "fixtures" / "hl7" / "orm_o01_nw.hl7").read_bytes()
START, END = b"\x0b", b"\x1c\r"

HL7APY_SERVER = r'''
import sys
from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

class OrderHandler(AbstractHandler):
    def reply(self):
        msg = parse_message(self.incoming_message, find_groups=False)
        ack = Message("ACK", version="2.5")
        ack.msh.msh_3 = msg.msh.msh_5.value
        ack.msh.msh_5 = msg.msh.msh_3.value
        ack.msa.msa_1 = "AA"
        ack.msa.msa_2 = msg.msh.msh_10.value
        return "\x0b" + ack.to_er7() + "\x1c\r"

server = MLLPServer("127.0.0.1", int(sys.argv[1]), {"ORM^O01^ORM_O01": (OrderHandler,),
                                                    "ORM^O01": (OrderHandler,)})
server.serve_forever()
'''


def make_messages(count: int, run: str) -> list[bytes]:
    """Distinct orders; every 4 orders share a patient, as a day's orders do."""
    messages = []
    for i in range(count):
        raw = TEMPLATE.replace(b"ORM0001", f"{run}{i:08d}".encode())
        raw = raw.replace(b"PLC1001", f"P{run}{i:08d}".encode())
        raw = raw.replace(b"ACC1001", f"A{i:09d}".encode()[:16])
        raw = raw.replace(b"SPS1001", f"S{i:09d}".encode())
        raw = raw.replace(b"P10001^", f"PT{i // 4:08d}^".encode())
        raw = raw.replace(b"1234567890^", f"{i // 4:010d}^".encode())  # national ID
        raw = raw.replace("АА123456".encode(), f"PP{i // 4:08d}".encode())  # passport
        messages.append(raw)
    return messages


async def _connection(port: int, messages: list[bytes], reconnect: bool) -> int:
    ok = 0
    reader = writer = None
    for raw in messages:
        if writer is None or reconnect:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        assert reader is not None
        writer.write(START + raw + END)
        await writer.drain()
        ack = await reader.readuntil(END)
        ok += b"MSA|AA|" in ack
        if reconnect:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()
    return ok


async def drive(port: int, messages: list[bytes], connections: int,
                reconnect: bool = False) -> tuple[float, int]:
    shares = [messages[i::connections] for i in range(connections)]
    start = time.perf_counter()
    results = await asyncio.gather(*(_connection(port, s, reconnect) for s in shares))
    return time.perf_counter() - start, sum(results)


def run_bridge(database_url: Callable[[], AbstractContextManager[str | None]], count: int,
               connections: int, label: str, repeat: int) -> dict[str, object]:
    """``repeat`` runs, each on a fresh bridge and database; the median is the figure."""
    rates, steals, ok_all = [], [], True
    for _ in range(repeat):
        with (database_url() as url, tempfile.TemporaryDirectory() as tmp,
              bridge_process(Path(tmp), url) as ports):
            asyncio.run(drive(ports["mllp"], make_messages(200, "W"), connections))  # warm-up
            steal = StealMeter()
            elapsed, ok = asyncio.run(drive(ports["mllp"], make_messages(count, "M"),
                                            connections))
            steals.append(steal.percent())
        rates.append(count / elapsed)
        ok_all = ok_all and ok == count
    return {"target": label, "messages": count, "connections": connections,
            "runs": [round(r) for r in rates], "steal_percent": steals,
            "acked_AA": count if ok_all else 0, "per_second": round(statistics.median(rates))}


def run_hl7apy(count: int, connections: int) -> dict[str, object]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", HL7APY_SERVER, str(port)],
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30, proc)
        asyncio.run(drive(port, make_messages(20, "W"), connections, reconnect=True))
        elapsed, ok = asyncio.run(drive(port, make_messages(count, "H"), connections,
                                        reconnect=True))
    finally:
        proc.terminate()
        proc.wait(10)
    return {"target": "hl7apy MLLPServer (parse+ACK, no DB)", "messages": count,
            "connections": connections, "seconds": round(elapsed, 3), "acked_AA": ok,
            "per_second": round(count / elapsed)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--hl7apy-messages", type=int, default=2000)
    parser.add_argument("--postgres-url", default=os.environ.get("BRIDGE_TEST_POSTGRES_URL",
                                                                 DEFAULT_PG))
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per database, each on a fresh bridge; the median counts")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()

    rows = [run_bridge(lambda: nullcontext(None), args.messages, args.connections,
                       "bridge, SQLite", args.repeat)]
    if not args.skip_postgres:
        rows.append(run_bridge(lambda: postgres_schema(args.postgres_url), args.messages,
                               args.connections, "bridge, PostgreSQL", args.repeat))
    rows.append(run_hl7apy(args.hl7apy_messages, args.connections))
    hl7apy_rate = float(rows[-1]["per_second"])  # type: ignore[arg-type]
    targets = {"bridge, SQLite": 2000, "bridge, PostgreSQL": 1000}
    for row in rows:
        rate = float(row["per_second"])  # type: ignore[arg-type]
        row["vs_hl7apy"] = round(rate / hl7apy_rate, 1)
        goal = targets.get(str(row["target"]))
        if goal:
            row["target_per_second"] = goal
            row["meets_target"] = rate >= goal and rate / hl7apy_rate >= 10
    if args.json:
        print(json.dumps({"machine": machine(), "rows": rows}, indent=2))
        return 0
    print(f"machine: {machine()}")
    print(f"{'target':40} {'msgs':>7} {'conns':>5} {'msg/s':>7} {'x hl7apy':>9} {'goal':>6} ok"
          "   runs (msg/s) / CPU steal %")
    for row in rows:
        runs = f"{row.get('runs', '')} / {row.get('steal_percent', '')}" if "runs" in row else ""
        print(f"{row['target']!s:40} {row['messages']:>7} {row['connections']:>5} "
              f"{row['per_second']:>7} {row['vs_hl7apy']:>9} "
              f"{row.get('target_per_second', ''):>6} {row.get('meets_target', '')!s:5} {runs}")
    failed = [r for r in rows if r["acked_AA"] != r["messages"]]
    for row in failed:
        print(f"WARNING: {row['target']}: only {row['acked_AA']} of {row['messages']} were AA")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
