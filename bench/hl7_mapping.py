#!/usr/bin/env python
"""The pure, per-message part of HL7 intake (``HL7Ingest.prepare``), step by step.

No database and no network: each fixture's bytes go through the same steps ``prepare``
runs (raw header, charset choice, decode, ``HL7Message``, ``AckContext.of``, mapping), many
times over. Prints microseconds per message for each step and for ``prepare`` as a whole,
the best of several runs (the machine is shared, so the minimum is the figure least
disturbed by other work).

    python bench/hl7_mapping.py [--runs 7] [--iterations 5000] [fixture.hl7 ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.orm import sessionmaker

from bridge.config.settings import Settings
from bridge.mapping.hl7.ack import AckContext
from bridge.mapping.hl7.message import HL7Message, choose_charset, decode, read_raw_header
from bridge.mapping.hl7.tables import load_hl7_tables
from bridge.services.hl7.ingest import HL7Ingest, Inbound

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
DEFAULT_FIXTURES = ("orm_o01_nw.hl7", "adt_a01_utf8.hl7", "omi_o23_three_ipc.hl7")


def best_us(step: Callable[[], Any], iterations: int, runs: int) -> float:
    """The fastest of ``runs`` timings of ``iterations`` calls, in µs per call."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6


def steps_for(ingest: HL7Ingest, settings: Settings, raw: bytes
              ) -> dict[str, Callable[[], Any]]:
    """Each step of ``prepare`` on its own, fed with the previous step's result."""
    header = read_raw_header(raw)
    assert header is not None
    charset = choose_charset(header.msh18, header.sending_application,
                             settings.hl7_sender_charsets, settings.hl7_default_charset)
    text = decode(raw, charset)
    message = HL7Message(text, charset)
    item = Inbound(raw=raw, peer="bench")
    return {
        "read_raw_header": lambda: read_raw_header(raw),
        "choose_charset": lambda: choose_charset(
            header.msh18, header.sending_application, settings.hl7_sender_charsets,
            settings.hl7_default_charset),
        "decode": lambda: decode(raw, charset),
        "HL7Message": lambda: HL7Message(text, charset),
        "AckContext.of": lambda: AckContext.of(message),
        "map_message": lambda: ingest.map_message(message),
        "prepare": lambda: ingest.prepare(item),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fixtures", nargs="*", default=list(DEFAULT_FIXTURES),
                        help="fixture file names under fixtures/hl7 (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs; the best is shown")
    parser.add_argument("--iterations", type=int, default=5000, help="calls per timed run")
    args = parser.parse_args()

    settings = Settings()
    ingest = HL7Ingest(sessionmaker(), load_hl7_tables(settings.mappings_dir), settings)
    names = list(steps_for(ingest, settings, (FIXTURES / args.fixtures[0]).read_bytes()))
    width = max(len(n) for n in names)
    print(f"µs per message, best of {args.runs} runs of {args.iterations} "
          f"(Python {sys.version.split()[0]})")
    for fixture in args.fixtures:
        raw = (FIXTURES / fixture).read_bytes()
        prepared = ingest.prepare(Inbound(raw=raw))
        if prepared.error is not None:
            raise SystemExit(f"{fixture}: {prepared.error.message}")
        print(f"\n{fixture}")
        for name, step in steps_for(ingest, settings, raw).items():
            print(f"  {name:<{width}}  {best_us(step, args.iterations, args.runs):8.2f}")


if __name__ == "__main__":
    main()
