"""Columns that new HL7 rows leave empty are indexed only where they hold a value, and the
look-ups that compare them with a value still seek by those indexes."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import Engine, text

from bridge.store.migrate import alembic_config, upgrade

pytestmark = pytest.mark.integration

LOOKUPS = {
    "ix_patients_merged_into_id": "SELECT id FROM patients WHERE merged_into_id = 7",
    "ix_orders_filler": "SELECT id FROM orders WHERE filler_number = 'F1'",
}


def definition(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
        else:
            sql = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
        return str(conn.execute(text(sql), {"name": name}).scalar_one())


def plan(engine: Engine, query: str) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}").all()
            return "\n".join(str(row[-1]) for row in rows)
        # Empty tables: make the planner show whether it *can* use the index.
        conn.exec_driver_sql("SET enable_seqscan = off")
        return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {query}").all())


def test_partial_indexes_are_created_and_used(engine: Engine) -> None:
    for name, query in LOOKUPS.items():
        assert "IS NOT NULL" in definition(engine, name).upper(), name
        assert name in plan(engine, query), plan(engine, query)


def test_the_migration_goes_down_to_full_indexes_and_back(engine: Engine) -> None:
    command.downgrade(alembic_config(engine), "0007")
    for name in LOOKUPS:
        assert "WHERE" not in definition(engine, name).upper(), name
    upgrade(engine)
    for name in LOOKUPS:
        assert "IS NOT NULL" in definition(engine, name).upper(), name
