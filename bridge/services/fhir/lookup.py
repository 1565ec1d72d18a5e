"""Reading Patient and ServiceRequest: by id, in pages for searches, and by a condition
(``If-None-Exist``, a conditional update's query). Resources are built from the domain
views (:mod:`bridge.services.fhir.views`) in a few queries per page, never one per row.

``status`` is searched as the resource shows it (:func:`effective_status`): the status last
received over FHIR while it agrees with the order, else the order's status mapped back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select
from sqlalchemy.orm import Session

from bridge.errors import NotFound, Rejected
from bridge.mapping.fhir.patient import PatientView, patient_resource
from bridge.mapping.fhir.search import SearchQuery, Token, parse_search
from bridge.mapping.fhir.service_request import OrderView, service_request_resource
from bridge.mapping.fhir.tables import FHIR_REQUEST_STATUSES, FhirTables
from bridge.services.fhir.context import DOMAIN_TYPES, PATIENT, SR, FhirContext
from bridge.services.fhir.views import FS, PI, O, P, order_views, patient_views

# -- reading ------------------------------------------------------------------------------

def read_resource(session: Session, ctx: FhirContext, resource_type: str,
                  resource_id: str) -> dict[str, Any]:
    """One Patient or ServiceRequest by logical id; :class:`NotFound` when there is none."""
    row_id = row_id_of(resource_type, resource_id)
    built = build_resources(session, ctx, resource_type, [row_id])
    if row_id not in built:
        raise NotFound(f"{resource_type}/{resource_id} is not known", location="id")
    return built[row_id]


def build_resources(session: Session, ctx: FhirContext, resource_type: str,
                    ids: list[int]) -> dict[int, dict[str, Any]]:
    """The resources of these rows (missing ones left out), a few queries for all of them."""
    conn = session.connection()
    if resource_type == SR:
        return {i: service_request_resource(v, ctx.tables, ctx.version, ctx.zone)
                for i, v in order_views(conn, ids).items()}
    return {i: patient_resource(v, ctx.tables) for i, v in patient_views(conn, ids).items()}


def versions(session: Session, resource_type: str,
             ids: list[int]) -> dict[int, tuple[str, datetime]]:
    """``meta.versionId`` and ``meta.lastUpdated`` of these rows, without building them."""
    conn = session.connection()
    views: Mapping[int, OrderView | PatientView] = (
        order_views(conn, ids, sources=False) if resource_type == SR
        else patient_views(conn, ids, sources=False))
    return {i: (v.version_id, v.updated_at) for i, v in views.items()}


def current_version(session: Session, resource_type: str, row_id: int) -> str | None:
    """``meta.versionId`` of a row now, None when the row does not exist."""
    conn = session.connection()
    if resource_type == SR:
        view = order_views(conn, [row_id]).get(row_id)
        return view.version_id if view else None
    patient = patient_views(conn, [row_id]).get(row_id)
    return patient.version_id if patient else None


def row_id_of(resource_type: str, resource_id: str) -> int:
    if resource_type not in DOMAIN_TYPES:
        raise NotFound(f"resource type {resource_type} is not supported", location="type")
    if not resource_id.isdigit() or resource_id.startswith("0") or len(resource_id) > 18:
        raise NotFound(f"{resource_type}/{resource_id} is not known", location="id")
    return int(resource_id)


# -- searching ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Page:
    """One page of a search: ids in order, the total, and the ids it includes."""

    query: SearchQuery
    total: int
    ids: list[int]


def search_page(session: Session, ctx: FhirContext, resource_type: str,
                params: list[tuple[str, str]], *, strict: bool = False) -> Page:
    query = parse_search(resource_type, params, ctx.zone, strict=strict)
    statement = _search_statement(ctx, query)
    conn = session.connection()
    total = int(conn.execute(select(func.count()).select_from(statement.subquery()))
                .scalar_one())
    ids: list[int] = []
    if query.count and query.offset < total:
        ids = list(conn.execute(statement.order_by(_id_column(resource_type))
                                .limit(query.count).offset(query.offset)).scalars())
    return Page(query, total, ids)


def match_ids(session: Session, ctx: FhirContext, resource_type: str,
              params: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> list[int]:
    """The rows a condition (``If-None-Exist``, a conditional update's query) names: at
    most two (more than one is an error either way). Unknown parameters are refused."""
    query = parse_search(resource_type, list(params), ctx.zone, strict=True)
    if not query.used:
        raise Rejected("the condition names no search parameter", location="condition")
    if (len(query.used) == 1 and len(query.identifiers) == 1
            and len(query.identifiers[0]) == 1 and query.identifiers[0][0].system is not None):
        token = query.identifiers[0][0]  # the usual condition, with statements built once
        issuer = ctx.tables.issuer_for(token.system)
        found = session.connection().execute(_BY_IDENTIFIER[resource_type],
                                             {"value": token.value, "issuer": issuer})
        return sorted(set(found.scalars()))[:2]
    statement = _search_statement(ctx, query).order_by(_id_column(resource_type)).limit(2)
    return list(session.connection().execute(statement).scalars())


#: ``identifier=system|value`` conditions (the issuer from the system by the tables).
_BY_IDENTIFIER = {
    PATIENT: select(PI.c.patient_id).where(PI.c.value == bindparam("value"),
                                           PI.c.issuer == bindparam("issuer")).limit(2),
    SR: select(O.c.id).where(or_(
        and_(O.c.placer_number == bindparam("value"), O.c.placer_issuer == bindparam("issuer")),
        and_(O.c.filler_number == bindparam("value"), O.c.filler_issuer == bindparam("issuer")),
        O.c.accession == bindparam("value"))).limit(3),
}


def _id_column(resource_type: str) -> Any:
    return O.c.id if resource_type == SR else P.c.id


def _search_statement(ctx: FhirContext, query: SearchQuery) -> Any:
    if query.resource_type == SR:
        return _service_request_statement(ctx, query)
    return _patient_statement(ctx, query)


def _int_ids(values: list[str]) -> list[int]:
    return [int(v) for v in values if v.isdigit() and len(v) <= 18]


def _service_request_statement(ctx: FhirContext, query: SearchQuery) -> Any:
    statement = select(O.c.id)
    for group in query.ids:
        statement = statement.where(O.c.id.in_(_int_ids(group)))
    for tokens in query.identifiers:
        statement = statement.where(or_(*[_order_token(ctx, t) for t in tokens]))
    for subjects in query.subjects:
        statement = statement.where(O.c.patient_id.in_(_int_ids(subjects)))
    if query.statuses:
        statement = statement.outerjoin(FS, and_(FS.c.resource_type == SR,
                                                 FS.c.row_id == O.c.id))
        status = effective_status(ctx.tables)
        for statuses in query.statuses:
            statement = statement.where(status.in_(statuses))
    for bound in query.last_updated:
        statement = statement.where(O.c.updated_at >= bound.moment if bound.op == "ge"
                                    else O.c.updated_at < bound.moment)
    return statement


def effective_status(tables: FhirTables) -> Any:
    """ServiceRequest.status in SQL, as :func:`service_request_resource` shows it: the status
    last sent while it maps to the order's status, else the order's status mapped back."""
    kept = [(and_(FS.c.status == sent, O.c.status == step.value), sent)
            for sent, step in tables.status_to_steps.items() if sent in FHIR_REQUEST_STATUSES]
    mapped = [(O.c.status == step, status) for step, status in tables.status_from_steps.items()]
    return case(*kept, *mapped, else_="unknown")


def _order_token(ctx: FhirContext, token: Token) -> Any:
    value = token.value
    if token.system is None:
        return or_(O.c.placer_number == value, O.c.filler_number == value,
                   O.c.accession == value)
    issuer = ctx.tables.issuer_for(token.system)
    # The accession has no issuer column: its value matches under any system.
    return or_(and_(O.c.placer_number == value, O.c.placer_issuer == issuer),
               and_(O.c.filler_number == value, O.c.filler_issuer == issuer),
               O.c.accession == value)


def _patient_statement(ctx: FhirContext, query: SearchQuery) -> Any:
    statement = select(P.c.id)
    for group in query.ids:
        statement = statement.where(P.c.id.in_(_int_ids(group)))
    for tokens in query.identifiers:
        holders = select(PI.c.patient_id).where(or_(*[
            PI.c.value == t.value if t.system is None
            else and_(PI.c.value == t.value, PI.c.issuer == ctx.tables.issuer_for(t.system))
            for t in tokens]))
        statement = statement.where(P.c.id.in_(holders))
    for bound in query.last_updated:
        statement = statement.where(P.c.updated_at >= bound.moment if bound.op == "ge"
                                    else P.c.updated_at < bound.moment)
    return statement
