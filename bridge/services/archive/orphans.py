"""Files a crash left in the archive that no index row names.

The store places an object's file at its final name, then commits its row (group commit),
then answers the sender. A process killed between the two leaves a file nothing names:
never acknowledged (the sender sends it again, to a new name), but taking space for ever.

:class:`RunMarker` tells a restart after a crash from one after a clean stop: the running
bridge keeps ``<data_dir>/.running`` and touches it every minute, and removes it when it
stops cleanly. When it is there at start, :func:`sweep_orphans` walks the archive for files
written since shortly before the last touch and removes those no row names. It looks only at
folders changed in that window (a folder's modification time moves when a file is placed
in it) and at files written before this process started (its own are committed as they go).
One bridge per archive: a bridge sharing its archive folder with others that are running
must not sweep it (their newest files may not be committed yet).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.storage.durable import remove_file
from bridge.store.archive_models import Instance
from bridge.store.db import read_session
from bridge.store.models import table_of

log = logging.getLogger("bridge.archive")
I = table_of(Instance)  # noqa: E741

#: How often the running bridge touches its marker.
HEARTBEAT_SECONDS = 60.0
#: Files written this long before the marker's last touch are looked at too.
MARGIN_SECONDS = 600.0
_BATCH = 500


@dataclass
class RunMarker:
    path: Path

    @classmethod
    def in_folder(cls, data_dir: Path) -> RunMarker:
        return cls(data_dir / ".running")

    def begin(self) -> float | None:
        """Mark this run; the previous run's last touch when it did not stop cleanly."""
        previous = self.path.stat().st_mtime if self.path.exists() else None
        self.touch()
        return previous

    def touch(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def end(self) -> None:
        """A clean stop: the next start need not sweep."""
        self.path.unlink(missing_ok=True)


def sweep_orphans(root: Path, sessions: sessionmaker[Session], *, written_after: float,
                  written_before: float) -> int:
    """Remove the ``*.dcm`` files under ``root`` (hidden folders aside) written in the window
    that no instance row names; how many were removed."""
    removed = 0
    batch: list[tuple[str, Path]] = []
    for relative, path in _recent_files(root, written_after, written_before):
        batch.append((relative, path))
        if len(batch) >= _BATCH:
            removed += _remove_unnamed(sessions, batch)
            batch = []
    if batch:
        removed += _remove_unnamed(sessions, batch)
    log.warning("after an unclean stop: %d file(s) in the archive that no index row names "
                "removed (never acknowledged)", removed)
    return removed


def _recent_files(root: Path, after: float, before: float) -> Iterator[tuple[str, Path]]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        try:
            if os.stat(folder).st_mtime < after:
                continue  # nothing was placed here since: its files are older
        except OSError:
            continue
        for name in files:
            if not name.endswith(".dcm"):
                continue
            path = Path(folder) / name
            try:
                written = path.stat().st_mtime
            except OSError:
                continue
            if after <= written < before:
                yield path.relative_to(root).as_posix(), path


def _remove_unnamed(sessions: sessionmaker[Session], batch: list[tuple[str, Path]]) -> int:
    # The file's name starts with its SOP Instance UID (``<uid>.<6 hex>.dcm`` as the store
    # names it, ``<uid>.dcm`` otherwise); the UID is indexed, the path is not.
    uids = sorted({uid for relative, _path in batch for uid in _uids_of(relative)})
    with read_session(sessions) as session:
        named = set(session.execute(
            select(I.c.path).where(I.c.sop_instance_uid.in_(uids))).scalars())
    removed = 0
    for relative, path in batch:
        if relative not in named:
            remove_file(path)
            removed += 1
    return removed


def _uids_of(relative: str) -> tuple[str, str]:
    stem = Path(relative).name.removesuffix(".dcm")
    return stem, stem.rsplit(".", 1)[0]
