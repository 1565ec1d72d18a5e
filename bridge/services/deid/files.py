"""``bridge deid FILES --out DIR`` and ``bridge deid restore DIR --out DIR``: files in,
files out, the key kept in the database (one export per run, the destination's pseudonyms)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.errors import BridgeError
from bridge.services.deid import records
from bridge.services.deid.engine import Prepared, Recipe, prepare
from bridge.services.deid.exports import send_batch
from bridge.services.deid.keys import KeyProblem, master_key
from bridge.services.deid.outbound import BlobOutbound
from bridge.services.deid.restore import Restorer
from bridge.storage.blobs.file_store import FileBlobStore
from bridge.store.audit import append_audit
from bridge.store.deid_models import DeidExport

#: Files de-identified per commit of their key records.
BATCH = 16


@dataclass(slots=True)
class FilesReport:
    export_id: int = 0
    sent: int = 0
    held: list[tuple[Path, str]] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    restored: dict[str, int] = field(default_factory=dict)


def collect(paths: Iterable[Path]) -> list[Path]:
    """Every regular file under the paths, sorted (hidden files and folders skipped)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
        elif path.is_file():
            found.append(path)
    return found


def deidentify_files(settings: Settings, sessions: sessionmaker[Session], files: list[Path],
                     out: Path, *, destination: str, options: tuple[str, ...], actor: str,
                     progress: Callable[[int], None] = lambda _n: None) -> FilesReport:
    master = master_key(settings)
    with sessions() as session, session.begin():
        secret = records.destination_secret(session, destination, master)
        export = records.new_export(session, master, destination=destination, source="files",
                                    actor=actor, options=options)
        export.total = len(files)
        export.status = "running"
        export_id, key = export.id, records.data_key(export, master)
    recipe = Recipe.build(settings.mappings_dir, options, secret)
    out.mkdir(parents=True, exist_ok=True)
    outbound = BlobOutbound(FileBlobStore(out))
    report = FilesReport(export_id=export_id)
    for batch in _batches(files):
        prepared: list[tuple[int | None, Prepared]] = []
        for path in batch:
            try:
                item = prepare(path.read_bytes(), recipe)
            except (BridgeError, OSError) as exc:
                report.refused.append((path, getattr(exc, "message", str(exc))))
                continue
            if item.status == records.HELD:
                report.held.append((path, item.reason))
            prepared.append((None, item))
        problem = send_batch(sessions, outbound, export_id, key, prepared) if prepared else None
        if problem:
            report.refused.extend((path, problem) for path in batch)
        report.sent += sum(1 for _, item in prepared if item.status != records.HELD)
        progress(len(batch))
    with sessions() as session, session.begin():
        row = session.get(DeidExport, export_id)
        assert row is not None
        records.finish_export(session, row)
        append_audit(session, actor=actor, action="deid-export", entity="export",
                     entity_id=str(export_id), outcome="success" if not report.refused
                     else "failure", details={"destination": destination, "source": "files",
                                              "sent": row.sent, "held": row.held,
                                              "refused": len(report.refused)})
    return report


def restore_files(settings: Settings, sessions: sessionmaker[Session], files: list[Path],
                  out: Path, *, actor: str,
                  progress: Callable[[int], None] = lambda _n: None) -> FilesReport:
    restorer = Restorer(settings, sessions)
    master = master_key(settings)
    report = FilesReport()
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        try:
            restored = restorer.restore(path.read_bytes(), actor=actor, source="files",
                                        master=master)
        except KeyProblem:
            raise  # the key, not the file: nothing more can be restored
        except (BridgeError, OSError) as exc:
            report.refused.append((path, getattr(exc, "message", str(exc))))
        else:
            target = out / restored.study_instance_uid / f"{restored.sop_instance_uid}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_durably(target, restored.data)
            report.restored[restored.kind] = report.restored.get(restored.kind, 0) + 1
        progress(1)
    return report


def _batches(files: list[Path]) -> Iterator[list[Path]]:
    for start in range(0, len(files), BATCH):
        yield files[start:start + BATCH]


def _write_durably(target: Path, data: bytes) -> None:
    spool = target.with_name(f".{target.name}.part")
    with open(spool, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(spool, target)
