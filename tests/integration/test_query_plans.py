"""The typical worklist queries use the indexes, on SQLite and on PostgreSQL.

A full scan of ``procedure_steps`` is what makes file-based worklist servers slow; these
plans are the guard. PostgreSQL plans are read as JSON after ANALYZE on a few thousand rows
(with so few rows and no statistics the planner would rightly prefer a scan).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import Engine, text

from bridge.mapping.worklist.query import WorklistQuery, parse_worklist_query
from bridge.services.worklist.query import worklist_statement
from tests.worklist_factories import BulkPlan, bulk_patient_id, bulk_schedule, bulk_station

pytestmark = pytest.mark.integration


def mwl(sps: dict[str, str] | None = None, **top: str) -> WorklistQuery:
    ds = Dataset()
    ds.PatientName = ""
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    item = Dataset()
    item.ScheduledStationAETitle = ""
    for keyword, value in (sps or {}).items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return parse_worklist_query(ds)


TYPICAL = {
    "station+date": mwl({"ScheduledStationAETitle": bulk_station(3),
                         "ScheduledProcedureStepStartDate": "20260310-20260311"}),
    "modality+date": mwl({"Modality": "CT", "ScheduledProcedureStepStartDate": "20260310"}),
    "patient id": mwl(PatientID=bulk_patient_id(42)),
    "patient id+issuer": mwl(PatientID=bulk_patient_id(42), IssuerOfPatientID="HOSP"),
    "accession": mwl(AccessionNumber="A42"),
    "date only": mwl({"ScheduledProcedureStepStartDate": "20260310"}),
}
INDEXES = {"ix_steps_station_date", "ix_steps_modality_date", "ix_steps_date",
           "uq_patient_identifier", "ix_orders_accession",
           # Steps of an order: the unique (order_id, sps_id) key, named by each database.
           "uq_step_order_sps", "sqlite_autoindex_procedure_steps_1"}


@pytest.fixture
def loaded(engine: Engine) -> Iterator[Engine]:
    with engine.begin() as conn:
        bulk_schedule(conn, BulkPlan(steps=3000))
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    yield engine


def sql(engine: Engine, query: WorklistQuery) -> str:
    stmt = worklist_statement(query, binary_collation=engine.dialect.name == "sqlite")
    return str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))


@pytest.mark.parametrize("name", sorted(TYPICAL))
def test_typical_queries_use_an_index(loaded: Engine, name: str) -> None:
    statement = sql(loaded, TYPICAL[name])
    with loaded.connect() as conn:
        if loaded.dialect.name == "sqlite":
            details = [row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + statement))]
            assert not any(d.startswith("SCAN procedure_steps") for d in details), details
            assert not any(d.startswith(("SCAN orders", "SCAN patients")) for d in details), details
            used = " ".join(details)
        else:
            scans, used = _postgres_plan(conn, statement)
            assert ("procedure_steps", "Seq Scan") not in scans, scans
    assert any(index in used for index in INDEXES), used


def test_selective_name_prefix_uses_the_name_index(loaded: Engine) -> None:
    statement = sql(loaded, mwl(PatientName="patient123*"))
    with loaded.connect() as conn:
        if loaded.dialect.name == "sqlite":
            details = [row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + statement))]
            assert any("ix_patients_name_search" in d for d in details), details
            return
        scans, used = _postgres_plan(conn, statement)
    assert ("patients", "Seq Scan") not in scans, scans
    assert "ix_patients_name_search" in used, used


def _postgres_plan(conn: Any, statement: str) -> tuple[set[tuple[Any, Any]], str]:
    """(relation, node type) of every plan node, and the index names the plan uses."""
    plan = conn.execute(text("EXPLAIN (FORMAT JSON) " + statement)).scalar_one()
    nodes = list(_nodes(plan[0]["Plan"] if isinstance(plan, list)
                        else json.loads(plan)[0]["Plan"]))
    scans = {(n.get("Relation Name"), n["Node Type"]) for n in nodes}
    return scans, " ".join(str(n.get("Index Name", "")) for n in nodes)


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)
