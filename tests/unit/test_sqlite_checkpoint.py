"""SQLite's WAL checkpointed in the background: commits no longer checkpoint themselves
(until the safety net), and :func:`checkpoint_wal` copies the WAL into the database file."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from bridge.store.db import BACKGROUND_AUTOCHECKPOINT_PAGES, checkpoint_wal, make_engine


def _wal_frames_not_checkpointed(engine_url: str) -> int:
    engine = make_engine(engine_url)
    try:
        raw = engine.raw_connection()
        try:  # PASSIVE with nothing to do reports (busy, WAL frames, checkpointed frames)
            _busy, log, done = raw.driver_connection.execute(  # type: ignore[union-attr]
                "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(log) - int(done)
        finally:
            raw.close()
    finally:
        engine.dispose()


def test_commits_leave_the_checkpoint_to_the_background(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    engine = make_engine(url, background_checkpoint=True)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"))
        with engine.connect() as conn:
            limit = conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one()
        assert limit == BACKGROUND_AUTOCHECKPOINT_PAGES
        for _ in range(1200):  # past SQLite's own 1000-page checkpoint
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t (v) VALUES (zeroblob(4000))"))
        wal = tmp_path / "bridge.db-wal"
        grown = wal.stat().st_size
        assert grown > 1000 * 4096  # nothing checkpointed it on the way
        checkpoint_wal(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1200
        # Every frame is in the database file now; the next writer starts the WAL over.
        assert _wal_frames_not_checkpointed(url) == 0
    finally:
        engine.dispose()


def test_the_default_engine_keeps_sqlites_own_checkpoints(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bridge.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one() == 1000
    finally:
        engine.dispose()
