#!/usr/bin/env python
"""Legacy import throughput: ``bridge import`` of a modality's export folder, side by side.

In one run, each target with its own empty database and archive:

- ``bridge import`` (the CLI, a process of its own, timed from start to exit: start-up and
  migrations check, walk, hashing, the processed list, the archive store) of N CT slices
  (Part 10, 512x512 16-bit, ~0.5 MB) and, separately, of M JPEG photos (1024x768, named by
  the default file-name pattern, converted to Secondary Capture with the bitstream kept);
  and the same importer called in-process (the steady rate without the CLI's start-up);
- the same DICOM files sent by DCMTK ``storescu`` to ``bridge serve`` (the C-STORE path the
  import shares its store with), over 1 and 4 associations;
- a plain copy loop of the same DICOM files (copy + fsync each file): the floor of any
  import that keeps the data durable.

After each target the archive is asked what it holds (a run that lost objects says so).

    python bench/legacy_import.py [--dicom 500] [--jpeg 200] [--postgres] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    ROOT,
    add_common_options,
    bridge_process,
    log,
    machine,
    postgres_url,
    print_header,
    scratch_database,
)
from bench._dicom_data import storescu_send, write_ct_study
from bridge.store.db import make_engine

BRIDGE = str(ROOT / ".venv" / "bin" / "bridge")


@dataclass(slots=True)
class Row:
    target: str
    files: int
    megabytes: float
    seconds: float
    archived: int
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.megabytes / self.seconds if self.seconds else 0.0


def write_jpegs(folder: Path, count: int) -> list[Path]:
    """Photos as an endoscopy or ultrasound PC exports them: smooth content with noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:768, 0:1024]
    base = np.stack([(x / 4) % 256, (y / 3) % 256, ((x + y) / 8) % 256], axis=-1)
    paths = []
    for n in range(1, count + 1):
        noise = rng.integers(0, 40, base.shape)
        out = io.BytesIO()
        Image.fromarray(((base + noise) % 256).astype("uint8")).save(out, "JPEG", quality=90)
        path = folder / f"P{n % 17:05d}_22.11.2026_ACC{n % 17:04d}_{n}.jpg"
        path.write_bytes(out.getvalue())
        paths.append(path)
    return paths


def archived_count(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM instances")).scalar_one())
    finally:
        engine.dispose()


def cli_import(label: str, folder: Path, files: Sequence[Path], workdir: Path,
               pg: str | None) -> Row:
    with scratch_database(workdir / "bridge.db", pg) as url:
        env = {**os.environ, "BRIDGE_DATA_DIR": str(workdir / "var"),
               "BRIDGE_DATABASE_URL": url, "BRIDGE_LOG_LEVEL": "WARNING"}
        start = time.perf_counter()
        done = subprocess.run([BRIDGE, "import", str(folder)], env=env, capture_output=True,
                              text=True, check=False)
        seconds = time.perf_counter() - start
        note = "" if done.returncode == 0 else f"exit {done.returncode}: {done.stdout[-300:]}"
        archived = archived_count(url)
    return Row(label, len(files), sum(p.stat().st_size for p in files) / 1e6, seconds,
               archived, note)


def in_process_import(label: str, folder: Path, files: Sequence[Path], workdir: Path,
                      pg: str | None) -> Row:
    """The importer called directly: the steady rate, without the CLI's start-up."""
    from bridge.config.settings import load_settings
    from bridge.services.archive.store import ArchiveStore
    from bridge.services.legacy_import import build_importer, walk
    from bridge.store.db import make_session_factory
    from bridge.store.migrate import upgrade

    with scratch_database(workdir / "bridge.db", pg) as url:
        settings = load_settings(data_dir=workdir / "var", database_url=url)
        engine = make_engine(url)
        upgrade(engine)
        importer = build_importer(settings, ArchiveStore(settings, make_session_factory(engine)))
        start = time.perf_counter()
        report = importer.run(walk([folder]))
        seconds = time.perf_counter() - start
        engine.dispose()
        archived = archived_count(url)
    note = "" if report.count("imported") == len(files) else "not all imported"
    return Row(label, len(files), sum(p.stat().st_size for p in files) / 1e6, seconds,
               archived, note)


def storescu_to_bridge(label: str, files: Sequence[Path], associations: int, workdir: Path,
                       pg: str | None) -> Row:
    with scratch_database(workdir / "bridge.db", pg) as url:
        with bridge_process(workdir / "var", url) as ports:
            sent = storescu_send(ports["dicom"], "BRIDGE", files, associations)
        archived = archived_count(url)
    return Row(label, len(files), sum(p.stat().st_size for p in files) / 1e6, sent.seconds,
               archived, "; ".join(sent.problems))


def copy_loop(files: Sequence[Path], target: Path) -> Row:
    target.mkdir(parents=True)
    start = time.perf_counter()
    for path in files:
        copy = target / path.name
        shutil.copyfile(path, copy)
        fd = os.open(copy, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - start
    return Row("copy + fsync loop (DICOM files)", len(files),
               sum(p.stat().st_size for p in files) / 1e6, seconds,
               len(list(target.iterdir())), "no parsing, no index")


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> list[Row]:
    pg = postgres_url(args)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        root = Path(tmp)
        progress(f"writing {args.dicom} CT slices and {args.jpeg} JPEG photos")
        study = write_ct_study(root / "export" / "ct", args.dicom, accession="LEGBENCH1")
        dicom = list(study.files)
        jpegs = write_jpegs(root / "export" / "photos", args.jpeg)
        db = "PostgreSQL" if pg else "SQLite"
        steps: list[tuple[str, Callable[[], Row]]] = [
            ("import dicom", lambda: cli_import(f"bridge import, DICOM ({db})",
                                                root / "export" / "ct", dicom,
                                                root / "import-dicom", pg)),
            ("in-process dicom", lambda: in_process_import(
                f"importer in-process, DICOM ({db})", root / "export" / "ct", dicom,
                root / "inproc-dicom", pg)),
            ("in-process jpeg", lambda: in_process_import(
                f"importer in-process, JPEG -> SC ({db})", root / "export" / "photos", jpegs,
                root / "inproc-jpeg", pg)),
            ("import jpeg", lambda: cli_import(f"bridge import, JPEG -> SC ({db})",
                                               root / "export" / "photos", jpegs,
                                               root / "import-jpeg", pg)),
            ("storescu 1", lambda: storescu_to_bridge(f"storescu -> bridge serve, 1 assoc ({db})",
                                                      dicom, 1, root / "scp1", pg)),
            ("storescu 4", lambda: storescu_to_bridge(f"storescu -> bridge serve, 4 assoc ({db})",
                                                      dicom, 4, root / "scp4", pg)),
            ("copy", lambda: copy_loop(dicom, root / "copy")),
        ]
        for name, step in steps:
            progress(f"{name} ...")
            row = step()
            progress(f"{row.target}: {row.per_second:.1f} files/s, {row.archived}/{row.files} "
                     f"archived {row.note}")
            rows.append(row)
    return rows


def print_table(rows: list[Row]) -> None:
    reference = {r.target: r for r in rows}
    scp = next(r for r in rows if "1 assoc" in r.target)
    copy = reference["copy + fsync loop (DICOM files)"]
    print(f"Legacy import throughput ({machine()})")
    print_header(f"{'target':44} {'files':>6} {'MB':>7} {'s':>7} {'files/s':>8} {'MB/s':>7} "
                 f"{'archived':>9} {'vs storescu 1':>13} {'vs copy':>8}")
    for row in rows:
        vs_scp = row.per_second / scp.per_second if "JPEG" not in row.target else None
        vs_copy = row.per_second / copy.per_second if "JPEG" not in row.target else None
        print(f"{row.target:44} {row.files:6d} {row.megabytes:7.1f} {row.seconds:7.2f} "
              f"{row.per_second:8.1f} {row.mb_per_second:7.1f} {row.archived:9d} "
              f"{_ratio(vs_scp):>13} {_ratio(vs_copy):>8}")
    for row in rows:
        if row.archived != row.files or row.note.startswith("exit"):
            print(f"!! {row.target}: {row.archived}/{row.files} archived {row.note}")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicom", type=int, default=500, help="CT slices to import")
    parser.add_argument("--jpeg", type=int, default=200, help="JPEG photos to import")
    add_common_options(parser, postgres_help="run the bridge on PostgreSQL instead of SQLite")
    args = parser.parse_args()
    rows = run(args, log)
    if args.json:
        print(json.dumps([{**asdict(r), "files_per_second": r.per_second,
                           "mb_per_second": r.mb_per_second} for r in rows], indent=2))
    else:
        print_table(rows)
    return 0 if all(r.archived == r.files for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
