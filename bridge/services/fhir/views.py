"""The database side of the FHIR resources: domain rows as views, the JSON last received.

Reads come in pages (a few queries per page of ids, never one per resource); the views are
the plain dataclasses of :mod:`bridge.mapping.fhir.service_request` and
:mod:`bridge.mapping.fhir.patient`, which build the resources.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Integer,
    String,
    Text,
    bindparam,
    column,
    func,
    insert,
    select,
    table,
    update,
)

from bridge.mapping.fhir.patient import PatientView
from bridge.mapping.fhir.service_request import OrderView, SourceRecord, StepView
from bridge.store.fhir_models import ORDER_WORKLIST_EXTRAS, FhirSource
from bridge.store.models import Order, Patient, PatientIdentifier, ProcedureStep, table_of, utcnow

O = table_of(Order)  # noqa: E741 - the table, as in SQL
S = table_of(ProcedureStep)
P = table_of(Patient)
PI = table_of(PatientIdentifier)
FS = table_of(FhirSource)
X = ORDER_WORKLIST_EXTRAS
#: Ids per query (well under every database's parameter limit).
_CHUNK = 500
#: A resource's id and meta are the bridge's, not part of what was sent.
_NOT_KEPT = ("id", "meta")
#: ``orders`` as a FHIR write touches it: the worklist extras and ``updated_at`` in one go.
_ORDER_TOUCH = table("orders", column("id", Integer), column("comments", Text),
                     column("issue_date", String(8)), column("issue_time", String(14)),
                     column("updated_at", DateTime(timezone=True)))

# Statements built once (this is the intake path).
_STORED_HASH = select(FS.c.resource_hash).where(FS.c.resource_type == bindparam("kind"),
                                                FS.c.row_id == bindparam("row_id"))
# (Bound names differ from column names: SQLAlchemy keeps those for the SET clause.)
_UPDATE_SOURCE = update(FS).where(
    FS.c.resource_type == bindparam("kind"), FS.c.row_id == bindparam("b_row_id"),
).values(resource=bindparam("text"), resource_hash=bindparam("digest"),
         status=bindparam("b_status"), version=FS.c.version + 1, updated_at=bindparam("now"))
_INSERT_SOURCE = insert(FS)
_TOUCH_ORDER = update(_ORDER_TOUCH).where(_ORDER_TOUCH.c.id == bindparam("order_id")).values(
    comments=bindparam("b_comments"), issue_date=bindparam("b_issue_date"),
    issue_time=bindparam("b_issue_time"), updated_at=bindparam("now"))
_TOUCH_PATIENT = update(P).where(P.c.id == bindparam("patient_id")).values(
    updated_at=bindparam("now"))


def order_views(conn: Connection, ids: Iterable[int], *,
                sources: bool = True) -> dict[int, OrderView]:
    """The orders with these ids (missing ones left out), current patient resolved.
    ``sources=False`` leaves out the JSON last received (enough for versions)."""
    wanted = sorted(set(ids))
    views: dict[int, OrderView] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        steps: dict[int, list[StepView]] = defaultdict(list)
        for row in conn.execute(select(
                S.c.order_id, S.c.sps_id, S.c.status, S.c.station_ae, S.c.modality,
                S.c.start_date, S.c.start_time, S.c.description,
        ).where(S.c.order_id.in_(chunk)).order_by(S.c.id)):
            steps[row.order_id].append(StepView(
                sps_id=row.sps_id, status=row.status, station_ae=row.station_ae,
                modality=row.modality, start_date=row.start_date, start_time=row.start_time,
                description=row.description))
        extras = {row.id: row for row in conn.execute(
            select(X.c.id, X.c.comments, X.c.issue_date, X.c.issue_time)
            .where(X.c.id.in_(chunk)))}
        kept = load_sources(conn, "ServiceRequest", chunk, resources=sources)
        for row in conn.execute(
                select(O, func.coalesce(P.c.merged_into_id, P.c.id).label("current_patient"))
                .join(P, P.c.id == O.c.patient_id).where(O.c.id.in_(chunk))):
            extra = extras.get(row.id)
            views[row.id] = OrderView(
                id=row.id, patient_id=row.current_patient, status=row.status,
                updated_at=row.updated_at, placer_number=row.placer_number,
                placer_issuer=row.placer_issuer or "", filler_number=row.filler_number,
                filler_issuer=row.filler_issuer or "", accession=row.accession,
                procedure_code=row.procedure_code, procedure_scheme=row.procedure_scheme,
                procedure_meaning=row.procedure_meaning,
                procedure_description=row.procedure_description, priority=row.priority,
                reason=row.reason, requesting_physician=row.requesting_physician,
                admission_id=row.admission_id,
                comments=extra.comments if extra else None,
                issue_date=extra.issue_date if extra else None,
                issue_time=extra.issue_time if extra else None,
                steps=tuple(steps.get(row.id, ())), source=kept.get(row.id))
    return views


def patient_views(conn: Connection, ids: Iterable[int], *,
                  sources: bool = True) -> dict[int, PatientView]:
    """The patient rows with these ids (merged-away ones too, as themselves)."""
    wanted = sorted(set(ids))
    views: dict[int, PatientView] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        identifiers: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
        for row in conn.execute(select(PI.c.patient_id, PI.c.value, PI.c.issuer, PI.c.id_type)
                                .where(PI.c.patient_id.in_(chunk))
                                .order_by(PI.c.patient_id, PI.c.position, PI.c.id)):
            identifiers[row.patient_id].append((row.value, row.issuer or "", row.id_type or ""))
        kept = load_sources(conn, "Patient", chunk, resources=sources)
        for row in conn.execute(select(P).where(P.c.id.in_(chunk))):
            views[row.id] = PatientView(
                id=row.id, updated_at=row.updated_at, name=row.name or "",
                birth_date=row.birth_date, sex=row.sex,
                identifiers=tuple(identifiers.get(row.id, ())),
                merged_into_id=row.merged_into_id, source=kept.get(row.id))
    return views


def load_sources(conn: Connection, resource_type: str, ids: Sequence[int], *,
                 resources: bool = True) -> dict[int, SourceRecord]:
    """The last received JSON of these rows (``resources=False``: only the write counts)."""
    columns = [FS.c.row_id, FS.c.version, FS.c.status]
    if resources:
        columns.append(FS.c.resource)
    return {
        row.row_id: SourceRecord(resource=json.loads(row.resource) if resources else {},
                                 counter=row.version, status=row.status)
        for row in conn.execute(select(*columns).where(FS.c.resource_type == resource_type,
                                                       FS.c.row_id.in_(ids)))
    }


def kept_part(resource: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of a received resource: all but its id and meta."""
    return {k: v for k, v in resource.items() if k not in _NOT_KEPT}


def resource_hash(kept: Mapping[str, Any]) -> str:
    canonical = json.dumps(kept, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def stored_hash(conn: Connection, resource_type: str, row_id: int) -> str | None:
    found: str | None = conn.execute(_STORED_HASH, {"kind": resource_type,
                                                    "row_id": row_id}).scalar_one_or_none()
    return found


def save_source(conn: Connection, resource_type: str, row_id: int, kept: Mapping[str, Any],
                digest: str, *, status: str | None = None, known: bool = True) -> None:
    """Keep ``kept`` as the resource's last received JSON and count the write.

    ``known=False`` says the row is new (no look-up needed).
    """
    now = utcnow()
    text = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
    if known:
        changed = conn.execute(_UPDATE_SOURCE, {
            "kind": resource_type, "b_row_id": row_id, "text": text, "digest": digest,
            "b_status": status, "now": now}).rowcount
        if changed:
            return
    conn.execute(_INSERT_SOURCE, {"resource_type": resource_type, "row_id": row_id,
                                  "resource": text, "resource_hash": digest, "version": 1,
                                  "status": status, "updated_at": now})


def touch_order(conn: Connection, order_id: int, *, comments: str | None,
                issue_date: str | None, issue_time: str | None) -> None:
    """Write the worklist values only FHIR brings, and mark the order changed (a FHIR
    write changes ``meta.lastUpdated`` even when no HL7 column changed)."""
    conn.execute(_TOUCH_ORDER, {"order_id": order_id, "b_comments": comments,
                                "b_issue_date": issue_date, "b_issue_time": issue_time,
                                "now": utcnow()})


def touch_patient(conn: Connection, patient_id: int) -> None:
    conn.execute(_TOUCH_PATIENT, {"patient_id": patient_id, "now": utcnow()})
