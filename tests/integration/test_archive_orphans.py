"""The sweep after an unclean stop: files placed in the archive but never indexed go; files
the index names, files outside the window, hidden folders and other files stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.services.archive.orphans import RunMarker, sweep_orphans
from tests.archive_factories import archive_study


def _write(path: Path, written: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"DICM")
    os.utime(path, (written, written))
    return path


def test_unindexed_files_of_the_window_are_removed(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    root = settings.archive_root
    with session_factory.begin() as session:
        study = archive_study(session, root)
    kept = root / study.instances[0].path
    now = time.time()
    series = kept.parent
    orphan = _write(series / f"{study.instances[0].sop_instance_uid}.abcdef.dcm", now - 5)
    other_orphan = _write(root / "12" / "1.2.3.12" / "1.2.3.12.1" / "1.2.3.12.1.1.aaaaaa.dcm",
                          now - 5)
    too_old = _write(series / "1.2.3.4.bbbbbb.dcm", now - 7200)
    os.utime(series, (now - 5, now - 5))  # the folder changed when the orphan was placed
    too_new = _write(series / "1.2.3.5.cccccc.dcm", now + 60)
    hidden = _write(root / ".incoming" / "1.2.3.6.dddddd.dcm", now - 5)
    not_dicom = _write(series / "notes.txt", now - 5)
    os.utime(kept, (now - 5, now - 5))
    removed = sweep_orphans(root, session_factory, written_after=now - 3600,
                            written_before=now)
    assert removed == 2
    assert not orphan.exists() and not other_orphan.exists()
    assert all(p.exists() for p in (kept, too_old, too_new, hidden, not_dicom))


def test_the_marker_tells_a_crash_from_a_clean_stop(tmp_path: Path) -> None:
    marker = RunMarker.in_folder(tmp_path)
    assert marker.begin() is None  # the first start
    marker.end()
    assert marker.begin() is None  # after a clean stop
    last = marker.path.stat().st_mtime
    assert marker.begin() == last  # no end: the previous run was killed
