"""The importer's list of processed files (``import_files``): what was seen, what became of it.

Rows are written after the archive has committed the objects (a crash in between means the
file is looked at again, and the archive's duplicate check answers). Two importers on the
same folder (the CLI next to a watched folder) can race: the unique key on the file version
lets one row win, the other is dropped quietly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from bridge.services.legacy_import.scan import FileVersion
from bridge.store.import_models import IMPORTED, ImportedFile
from bridge.store.models import table_of, utcnow

F = table_of(ImportedFile)
_CHUNK = 500


def path_digest(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class Record:
    version: FileVersion
    source: str
    status: str
    reason: str | None = None
    sha256: str | None = None
    sop_instance_uid: str | None = None
    objects: int = 0


class ProcessedList:
    def __init__(self, engine: Engine, writer: AbstractContextManager[object]) -> None:
        self.engine = engine
        #: The archive's SQLite writer lock (a no-op on PostgreSQL): queue, don't busy-wait.
        self._writer = writer

    def seen(self, versions: Sequence[FileVersion]) -> set[tuple[str, int, int]]:
        """The versions among ``versions`` that have a row already (a few queries)."""
        found: set[tuple[str, int, int]] = set()
        by_digest = {path_digest(str(v.path)): v for v in versions}
        digests = list(by_digest)
        with self.engine.connect() as conn:
            for start in range(0, len(digests), _CHUNK):
                rows = conn.execute(select(F.c.path, F.c.size, F.c.mtime_ns).where(
                    F.c.path_digest.in_(digests[start:start + _CHUNK])))
                found.update((row.path, int(row.size), int(row.mtime_ns)) for row in rows)
        return found

    def imported_with(self, sha256: str) -> int | None:
        """The row id of an imported file with this content, if any."""
        with self.engine.connect() as conn:
            return conn.execute(select(F.c.id).where(
                F.c.sha256 == sha256, F.c.status == IMPORTED).limit(1)).scalar()

    def record(self, records: Iterable[Record]) -> None:
        rows = [{
            "source": r.source, "path": str(r.version.path),
            "path_digest": path_digest(str(r.version.path)), "size": r.version.size,
            "mtime_ns": r.version.mtime_ns, "sha256": r.sha256, "status": r.status,
            "reason": r.reason, "sop_instance_uid": r.sop_instance_uid, "objects": r.objects,
            "at": utcnow()} for r in records]
        if not rows:
            return
        try:
            with self._writer, self.engine.begin() as conn:
                conn.execute(F.insert(), rows)
        except IntegrityError:  # another importer recorded some of them: one at a time
            for row in rows:
                try:
                    with self._writer, self.engine.begin() as conn:
                        conn.execute(F.insert(), [row])
                except IntegrityError:
                    continue
