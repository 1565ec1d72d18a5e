"""Engine and session factory. Built by the composition root, never at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

#: With checkpoints in the background, a connection still checkpoints itself past this many
#: WAL pages (~40 MB): the safety net if the background checkpointer stops.
BACKGROUND_AUTOCHECKPOINT_PAGES = 10_000


def make_engine(url: str, *, background_checkpoint: bool = False, **kwargs: Any) -> Engine:
    """An engine tuned for the bridge's write pattern (short transactions, group commit).

    SQLite: WAL with ``synchronous=FULL`` so a committed message survives power loss, and
    ``BEGIN IMMEDIATE`` so writers queue on the lock instead of failing on upgrade. With
    ``background_checkpoint`` the caller runs :func:`checkpoint_wal` every second or so:
    SQLite's own checkpoint runs inside whichever commit crosses 1000 WAL pages, and that
    commit (an HL7 ACK, an audited read) then waits ~150 ms for the database file's fsync.
    """
    parsed = make_url(url)
    # Errors of the database layer reach the logs (tracebacks): they must not quote the
    # statement's values, which are patient names, identifiers and birth dates.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine, autocheckpoint=BACKGROUND_AUTOCHECKPOINT_PAGES
                          if background_checkpoint else None)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "postgresql":
        _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # psycopg prepares a statement after five executions, and PostgreSQL may then keep
        # a generic plan chosen while a table was still small (a sequential scan of the
        # message log, repeated as it grows). Custom plans follow the real table sizes.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_connection.commit()


def _configure_sqlite(engine: Engine, *, autocheckpoint: int | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (savepoints need it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if autocheckpoint is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers (worklist queries) take no write lock: in WAL mode they see the last
        # commit and never wait for, or hold up, the HL7 writer.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION)
        # On the DB-API connection: exec_driver_sql's execution machinery cost more than
        # SQLite takes to begin (the HL7 writer begins a transaction per batch).
        connection.connection.dbapi_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")


READ_ONLY_OPTION = "bridge_read_only"


def checkpoint_wal(engine: Engine) -> None:
    """Copy committed WAL pages into an SQLite database file, off the request paths. PASSIVE:
    it waits for no reader or writer (what a reader still needs stays in the WAL)."""
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute(  # type: ignore[union-attr]
            "PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        raw.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def read_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reading only: on SQLite its transaction takes no write lock."""
    with factory() as session:
        session.connection(execution_options={READ_ONLY_OPTION: True})
        yield session


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
