"""Audit records as FHIR AuditEvent: read by seq, search by patient, agent, date, action."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge.errors import MappingFailed, NotFound
from bridge.mapping.audit.fhir import audit_event
from bridge.mapping.fhir.search import date_bounds
from bridge.store.archive_models import AuditRecord
from bridge.store.audit import fields_of

SEARCH_PARAMS = {
    "_id": ("token", "The record's seq"), "patient": ("reference", "Patient/[id]"),
    "agent": ("reference", "Practitioner/[id], or a token's name"),
    "date": ("date", "When (ge/gt/le/lt)"), "action": ("token", "read, search, login, ..."),
    "outcome": ("token", "0 success, 4 failure"),
}
MAX_COUNT = 500


def read_event(session: Session, event_id: str, version: str) -> dict[str, Any]:
    row = (session.execute(select(AuditRecord).where(AuditRecord.seq == int(event_id)))
           .scalar_one_or_none() if event_id.isdigit() and len(event_id) < 18 else None)
    if row is None:
        raise NotFound(f"AuditEvent/{event_id} is not known", location="id")
    return audit_event(fields_of(row), version)


def search_events(session: Session, params: Sequence[tuple[str, str]], version: str,
                  zone: ZoneInfo = ZoneInfo("UTC")) -> tuple[int, list[dict[str, Any]]]:
    query = select(AuditRecord)
    count, offset = 100, 0
    for name, value in params:
        if name == "_count":
            count = min(int(value), MAX_COUNT) if value.isdigit() else 100
        elif name == "_offset":
            offset = int(value) if value.isdigit() else 0
        elif name == "_id":
            query = query.where(AuditRecord.seq.in_(
                [int(v) for v in value.split(",") if v.isdigit() and len(v) < 18]))
        elif name == "patient":
            query = query.where(AuditRecord.patient_ref.in_(
                [v if v.startswith("Patient/") else f"Patient/{v}" for v in value.split(",")]))
        elif name == "agent":
            query = query.where(AuditRecord.actor.in_(value.split(",")))
        elif name == "action":
            query = query.where(AuditRecord.action.in_(value.split(",")))
        elif name == "outcome":
            query = query.where(AuditRecord.outcome == ("success" if value == "0"
                                                        else "failure"))
        elif name == "date":
            for bound in date_bounds(name, value, zone):
                query = query.where(AuditRecord.at >= bound.moment if bound.op == "ge"
                                    else AuditRecord.at < bound.moment)
        elif name not in ("_format", "_sort"):
            raise MappingFailed(f"AuditEvent cannot be searched by {name}", location=name)
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(AuditRecord.seq.desc()).limit(count)
                           .offset(offset)).scalars()
    return int(total), [audit_event(fields_of(row), version) for row in rows]
