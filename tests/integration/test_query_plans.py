"""The typical worklist queries use the indexes, on SQLite and on PostgreSQL.

A full scan of ``procedure_steps`` is what makes file-based worklist servers slow; these
plans are the guard. PostgreSQL plans are read as JSON after ANALYZE on a few thousand rows
(with so few rows and no statistics the planner would rightly prefer a scan).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import Connection, Engine, insert, text

from bridge.mapping.worklist.query import WorklistQuery, parse_worklist_query
from bridge.services.activity import counts as activity
from bridge.services.activity.buckets import Window
from bridge.services.worklist.query import worklist_statement
from bridge.store.archive_models import MATCHED, QUEUED, Instance, Job, Series, Study
from bridge.store.models import HL7Message, table_of
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


# ------------------------------------------------------------- the dashboard (/api/activity)

#: Each of the dashboard's queries and the indexes its plan must use (all of them).
ACTIVITY_INDEXES = {
    "hl7 per minute": {"ix_hl7_messages_received"},
    "dicom per minute": {"ix_studies_state_received", "ix_instances_study_id"},
    "queue names": {"ix_jobs_queue_status_due"},
    "queue depths": {"ix_jobs_queue_status_due"},
    "reconciliation queued": {"ix_studies_reconciliation"},
}
#: None of these may be scanned whole (``j`` is jobs in the queue-name query).
ACTIVITY_TABLES = {"hl7_messages", "instances", "studies", "jobs", "j"}
ACTIVITY_QUEUES = ("forward", "fhir_publish", "compress", "deid_export", "referral_notify",
                   "longterm-delete")


@pytest.fixture
def activity_loaded(engine: Engine) -> Iterator[tuple[Engine, datetime]]:
    """A month of traffic: a message every 7 minutes, a 3-object study every 20 minutes,
    thousands of done jobs beside a few open ones; the dashboard asks for the last hour."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        _bulk_activity(conn, now)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    yield engine, now


def _bulk_activity(conn: Connection, now: datetime) -> None:
    conn.execute(insert(table_of(HL7Message)), [
        {"received_at": now - n * timedelta(minutes=7), "raw": b"MSH", "status": "processed",
         "ack_code": ("AA", "AE", "AR")[n % 3], "sending_application": "MIS",
         "sending_facility": "HOSP", "control_id": f"C{n}", "attempts": 1}
        for n in range(6000)])
    studies: list[dict[str, Any]] = [
        {"study_instance_uid": f"1.2.826.0.1.3680043.10.1137.99.{n}",
         "last_received_at": now - n * timedelta(minutes=20),
         "state": "receiving" if n < 3 else "stable",
         "reconciliation": QUEUED if n % 50 == 0 else MATCHED} for n in range(2000)]
    study_pks = conn.execute(insert(table_of(Study)).returning(
        table_of(Study).c.id, sort_by_parameter_order=True), studies).scalars().all()
    series_pks = conn.execute(insert(table_of(Series)).returning(
        table_of(Series).c.id, sort_by_parameter_order=True), [
        {"study_id": pk, "series_instance_uid": f"{study['study_instance_uid']}.1"}
        for pk, study in zip(study_pks, studies, strict=True)]).scalars().all()
    conn.execute(insert(table_of(Instance)), [
        {"series_id": series_pks[n], "study_id": study_pks[n],
         "sop_instance_uid": f"{study['study_instance_uid']}.1.{k}", "sop_class_uid": "1.2",
         "transfer_syntax_uid": "1.2.840.10008.1.2.1", "path": "p", "size": 1000,
         "sha256": "0" * 64, "received_at": study["last_received_at"] - timedelta(seconds=k)}
        for n, study in enumerate(studies) for k in range(3)])
    conn.execute(insert(table_of(Job)), [
        {"queue": ACTIVITY_QUEUES[n % len(ACTIVITY_QUEUES)], "payload": {}, "attempts": 1,
         "status": "done" if n >= 60 else ("pending", "running", "failed")[n % 3],
         "next_attempt_at": now} for n in range(6000)])


def activity_sql(engine: Engine, name: str, now: datetime) -> str:
    window, dialect = Window.ending_at(now, 60), engine.dialect.name
    if name == "queue names":
        return str(activity._QUEUE_NAMES.text)
    statement = {
        "hl7 per minute": lambda: activity.hl7_statement(window, dialect),
        "dicom per minute": lambda: activity.dicom_statement(window, dialect),
        "queue depths": lambda: activity.depth_statement(ACTIVITY_QUEUES),
        "reconciliation queued": activity.reconciliation_statement,
    }[name]()
    return str(statement.compile(engine, compile_kwargs={"literal_binds": True}))


@pytest.mark.parametrize("name", sorted(ACTIVITY_INDEXES))
def test_the_dashboard_counts_use_indexes(activity_loaded: tuple[Engine, datetime],
                                          name: str) -> None:
    engine, now = activity_loaded
    statement = activity_sql(engine, name, now)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            details = [row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + statement))]
            scanned = {d.split()[1] for d in details if d.startswith("SCAN ")}
            assert not scanned & ACTIVITY_TABLES, details
            used = " ".join(details)
        else:
            scans, used = _postgres_plan(conn, statement)
            assert not {(table, "Seq Scan") for table in ACTIVITY_TABLES} & scans, scans
    assert all(index in used for index in ACTIVITY_INDEXES[name]), used
