"""Indexes a new HL7 row need not enter: columns it leaves empty are indexed only where
they hold a value, the message log's status index holds only messages not processed, and the
look-ups still seek by them."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from bridge.services.hl7.message_log import list_messages
from bridge.store.migrate import alembic_config, upgrade

pytestmark = pytest.mark.integration

LOOKUPS = {
    "ix_patients_merged_into_id": "SELECT id FROM patients WHERE merged_into_id = 7",
    "ix_orders_filler": "SELECT id FROM orders WHERE filler_number = 'F1'",
}
PREDICATES = {"ix_patients_merged_into_id": "IS NOT NULL", "ix_orders_filler": "IS NOT NULL",
              "ix_hl7_messages_status_received": "PROCESSED"}


def definition(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
        else:
            sql = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
        return str(conn.execute(text(sql), {"name": name}).scalar_one())


def plan(engine: Engine, query: str, parameters: Any = ()) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters).all()
            return "\n".join(str(row[-1]) for row in rows)
        # Empty tables: make the planner show whether it *can* use the index.
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql(f"EXPLAIN {query}", parameters or None).all()
        return "\n".join(row[0] for row in rows)


def index_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
        else:
            sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        return set(conn.execute(text(sql)).scalars())


def test_partial_indexes_are_created_and_used(engine: Engine) -> None:
    for name, predicate in PREDICATES.items():
        assert predicate in definition(engine, name).upper(), name
    for name, query in LOOKUPS.items():
        assert name in plan(engine, query), plan(engine, query)
    assert "ix_procedure_steps_order_id" not in index_names(engine)


def test_browsing_failed_messages_uses_the_status_index(
        engine: Engine, session_factory: sessionmaker[Session]) -> None:
    """The browse query as the API sends it (list_messages), on an empty log."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with session_factory() as session:
            list_messages(session, status="error")
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    [(query, parameters)] = [(q, p) for q, p in captured if "hl7_messages" in q]
    shown = plan(engine, query, parameters)
    assert "ix_hl7_messages_status_received" in shown, shown


def test_the_migration_goes_down_to_full_indexes_and_back(engine: Engine) -> None:
    command.downgrade(alembic_config(engine), "0007")
    for name in PREDICATES:
        assert "WHERE" not in definition(engine, name).upper(), name
    assert "ix_procedure_steps_order_id" in index_names(engine)
    upgrade(engine)
    for name, predicate in PREDICATES.items():
        assert predicate in definition(engine, name).upper(), name
    assert "ix_procedure_steps_order_id" not in index_names(engine)
