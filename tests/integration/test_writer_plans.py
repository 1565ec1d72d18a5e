"""The HL7 writer's look-ups seek by index from the first message on.

On PostgreSQL the writer's own connection runs generic plans (``force_generic_plan``: the
same dozen statements for ever, planned once instead of at every batch). A generic plan
made while the tables are empty is kept until an ANALYZE replaces it, so each look-up must
seek by index even then; these plans are the guard. On SQLite the same statements are
checked with ``EXPLAIN QUERY PLAN``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from bridge.config.settings import Settings
from bridge.services.hl7.ingest import Inbound
from bridge.store.fast_sql import driver
from tests.conftest import hl7_fixture
from tests.hl7_harness import make_ingest

pytestmark = pytest.mark.integration

def _is_select(query: str) -> bool:
    return query.lstrip().upper().startswith(("SELECT", "WITH"))


@contextmanager
def recorded_selects(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT the writer sends on its DB-API connection (it bypasses SQLAlchemy's
    events), with its parameters; on SQLite with the values written into the text."""
    seen: list[tuple[str, Any]] = []
    if engine.dialect.name == "postgresql":
        import psycopg

        original = psycopg.RawCursor.execute

        def execute(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            if _is_select(str(query)):
                seen.append((str(query), params))
            return original(self, query, params, **kw)

        psycopg.RawCursor.execute = execute  # type: ignore[method-assign]
        try:
            yield seen
        finally:
            psycopg.RawCursor.execute = original  # type: ignore[method-assign]
        return

    def trace(statement: str) -> None:
        if _is_select(statement):
            seen.append((statement, ()))

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(trace)

    engine.dispose()  # the writer's connection is a new one, traced
    event.listen(engine, "connect", on_connect)
    try:
        yield seen
    finally:
        event.remove(engine, "connect", on_connect)
        engine.dispose()


def generic_plan(engine: Engine, query: str, params: Any) -> str:
    from psycopg import sql

    with engine.connect() as conn:
        dbapi_conn = driver(conn)
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute(f"PREPARE writer_statement AS {query}")
            arguments = sql.SQL(", ").join(sql.Literal(value) for value in params)
            cursor.execute(sql.SQL("EXPLAIN EXECUTE writer_statement({})").format(arguments))
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("DEALLOCATE writer_statement")
        conn.rollback()
    return plan


def sqlite_plan(engine: Engine, query: str, params: Any) -> str:
    with engine.connect() as conn:
        cursor = driver(conn).cursor()
        rows = cursor.execute(f"EXPLAIN QUERY PLAN {query}", params).fetchall()
        cursor.close()
    return "\n".join(str(row[-1]) for row in rows)


def test_the_writer_seeks_by_index_on_an_empty_database(
        settings: Settings, engine: Engine, session_factory: sessionmaker[Session]) -> None:
    ingest = make_ingest(settings, session_factory)
    batch = [Inbound(hl7_fixture("orm_o01_nw.hl7")), Inbound(hl7_fixture("adt_a01_utf8.hl7"))]
    with recorded_selects(engine) as selects:
        outcomes = ingest.handle_batch(batch)
    ingest.close()
    assert [o.ack_code for o in outcomes] == ["AA", "AA"]
    texts = " ".join(query for query, _ in selects)
    for table in ("hl7_messages", "patient_identifiers", "orders"):
        assert table in texts, f"the writer's look-up of {table} was not seen"
    for query, params in selects:
        if engine.dialect.name == "postgresql":
            plan = generic_plan(engine, query, params)
            scans = [line for line in plan.splitlines() if "Seq Scan" in line]
        else:
            plan = sqlite_plan(engine, query, params)
            scans = [line for line in plan.splitlines()
                     if line.startswith("SCAN") and line != "SCAN CONSTANT ROW"]
        assert not scans, f"{query}\n{plan}"
