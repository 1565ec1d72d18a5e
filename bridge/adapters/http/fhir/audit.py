"""``/fhir/AuditEvent``: the audit trail as IHE BALP-shaped AuditEvents, for auditors (the
admin role). Read by seq, search by patient, agent, date, action, outcome."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response

from bridge.adapters.http.deps import ContextDep, require_role
from bridge.adapters.http.fhir.responses import FhirRoute, check_format, fhir_base, fhir_response
from bridge.mapping.fhir.bundle import searchset
from bridge.mapping.fhir.capability import ResourceCapability
from bridge.services.audit import events
from bridge.services.auth.principal import Principal
from bridge.store.db import read_session

router = APIRouter(prefix="/fhir", tags=["fhir"], route_class=FhirRoute)
Auditor = Annotated[Principal, Depends(require_role("admin"))]


@router.get("/AuditEvent", summary="Search the audit trail")
def search_audit_events(request: Request, context: ContextDep, _auditor: Auditor) -> Response:
    check_format(request)
    params = list(request.query_params.multi_items())
    with read_session(context.session_factory) as session:
        total, found = events.search_events(session, params, context.settings.fhir_version,
                                            ZoneInfo(context.settings.local_timezone))
    base = fhir_base(request, context.settings)
    entries = [(f"{base}/AuditEvent/{e['id']}", e, "match") for e in found]
    self_url = f"{base}/AuditEvent?{urlencode(params)}" if params else f"{base}/AuditEvent"
    return fhir_response(searchset(entries, total=total, links=[("self", self_url)]))


@router.get("/AuditEvent/{event_id}", summary="Read one audit record")
def read_audit_event(event_id: str, request: Request, context: ContextDep,
                     _auditor: Auditor) -> Response:
    check_format(request)
    with read_session(context.session_factory) as session:
        event = events.read_event(session, event_id, context.settings.fhir_version)
    return fhir_response(event)


def audit_resources() -> list[ResourceCapability]:
    return [ResourceCapability(type="AuditEvent", interactions=("read", "search-type"),
                               search_params=events.SEARCH_PARAMS)]
