"""The FHIR API under ``/fhir`` (R4 by default, R5 by ``BRIDGE_FHIR_VERSION``).

- ``GET /fhir/metadata``: the CapabilityStatement (open, as FHIR clients expect; it holds no
  patient data).
- Patient and ServiceRequest: read, search (``GET`` and ``POST .../_search``), create
  (``If-None-Exist`` for a conditional create), update (``If-Match``), conditional update
  (``PUT [type]?[query]``). Writes are the worklist: see
  :mod:`bridge.services.fhir.resources`.
- ImagingStudy and Endpoint: read and search (:mod:`bridge.services.fhir.imaging`).
- ``POST /fhir``: transaction and batch Bundles (:mod:`bridge.services.fhir.transactions`).

Tokens: the integration role reads, searches and writes (the resources carry patient data,
as the HL7 message contents do). Clinicians (a login) read ImagingStudy here, filtered to the
studies they may see; their referrals, results and the directory are in :mod:`.workflow`.
Every read and search of patient data is an audit record. Every error is an OperationOutcome
(:class:`~.fhir_http.FhirRoute`). Reads run in read-only sessions (on SQLite they take no
write lock); a write commits once, after the whole interaction (or Bundle) succeeded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session

from bridge import __version__ as bridge_version
from bridge.adapters.http.access import audit_read, patient_data_reader, viewer_of
from bridge.adapters.http.deps import (
    AppContext,
    ContextDep,
    IntegrationToken,
    SessionDep,
)
from bridge.adapters.http.fhir.audit import audit_resources
from bridge.adapters.http.fhir.responses import (
    FhirRoute,
    check_format,
    fhir_base,
    fhir_response,
    parse_body,
    prefer,
    raw_body,
    resource_headers,
)
from bridge.adapters.http.fhir.workflow import workflow_resources
from bridge.errors import Forbidden, NotFound, Rejected
from bridge.mapping.fhir.bundle import parse_qsl
from bridge.mapping.fhir.capability import (
    ResourceCapability,
    capability_statement,
    domain_resources,
)
from bridge.mapping.fhir.outcome import NotAllowed, information
from bridge.services.auth.principal import Principal
from bridge.services.fhir.context import DOMAIN_TYPES, FhirContext
from bridge.services.fhir.lookup import build_resources
from bridge.services.fhir.queries import (
    ENDPOINT,
    IMAGING_INCLUDES,
    IMAGING_SEARCH_PARAMS,
    IMAGING_STUDY,
    SERVED_TYPES,
    read_any,
    search_bundle,
)
from bridge.services.fhir.resources import Written, conditional_update, create, update
from bridge.services.fhir.transactions import process_bundle
from bridge.store.db import read_session

router = APIRouter(prefix="/fhir", tags=["fhir"], route_class=FhirRoute)
Reader = Annotated[Principal, Depends(patient_data_reader("integration"))]
#: What a clinician reads through these generic routes (filtered to their studies).
CLINICIAN_TYPES = frozenset({IMAGING_STUDY, ENDPOINT})
RawBody = Annotated[bytes, Depends(raw_body)]
_STARTED = datetime.now(UTC)


def _fhir(context: AppContext) -> FhirContext:
    return FhirContext.from_settings(context.settings)


def _served(resource_type: str) -> str:
    if resource_type not in SERVED_TYPES:
        raise NotFound(f"resource type {resource_type} is not supported here",
                       location="type")
    return resource_type


@router.get("/metadata")
def metadata(request: Request, context: ContextDep) -> Response:
    """What this server does: interactions, search parameters, the FHIR version."""
    check_format(request)
    imaging = [ResourceCapability(type=kind, interactions=("read", "search-type"),
                                  search_params=IMAGING_SEARCH_PARAMS[kind],
                                  search_include=tuple(sorted(IMAGING_INCLUDES[kind])))
               for kind in (IMAGING_STUDY, ENDPOINT)]
    statement = capability_statement(
        context.settings.fhir_version, fhir_base(request, context.settings), bridge_version,
        [*domain_resources(), *imaging, *workflow_resources(), *audit_resources()], _STARTED)
    return fhir_response(statement)


@router.post("")
@router.post("/", include_in_schema=False)
def bundle(request: Request, context: ContextDep, session: SessionDep,
           _token: IntegrationToken, body: RawBody) -> Response:
    """A transaction (all or nothing) or batch (entry by entry) Bundle."""
    check_format(request)
    parsed = parse_body(body, request.headers.get("content-type"))
    answer = process_bundle(session, _fhir(context), parsed,
                            base=fhir_base(request, context.settings),
                            representation=prefer(request, "return") == "representation")
    session.commit()
    return fhir_response(answer)


@router.get("/{resource_type}")
def search(resource_type: str, request: Request, context: ContextDep,
           principal: Reader) -> Response:
    check_format(request)
    return _search(resource_type, list(request.query_params.multi_items()), request, context)


@router.post("/{resource_type}/_search")
def search_by_post(resource_type: str, request: Request, context: ContextDep,
                   principal: Reader, body: RawBody) -> Response:
    """Search with the parameters in a form body (and the URL)."""
    check_format(request)
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if body.strip() and media != "application/x-www-form-urlencoded":
        raise Rejected("_search takes application/x-www-form-urlencoded", location="body")
    params = list(request.query_params.multi_items()) + parse_qsl(body.decode("utf-8",
                                                                              "replace"))
    return _search(resource_type, params, request, context)


def _search(resource_type: str, params: list[tuple[str, str]], request: Request,
            context: AppContext) -> Response:
    kind = _served_to(resource_type, request)
    with read_session(context.session_factory) as session:
        answer = search_bundle(session, _fhir(context), kind, params,
                               base=fhir_base(request, context.settings),
                               strict=prefer(request, "handling") == "strict",
                               viewer=viewer_of(request))
    audit_read(context, request, action="search", entity=kind.lower()[:32], entity_id="*",
               details={"matches": len(answer.get("entry", []))})
    return fhir_response(answer)


def _served_to(resource_type: str, request: Request) -> str:
    """The type, when the caller may read it: a clinician reads imaging only here (their
    referrals and results are served by :mod:`.workflow`)."""
    kind = _served(resource_type)
    if viewer_of(request) is not None and kind not in CLINICIAN_TYPES:
        raise Forbidden(f"{kind} is read by systems; clinicians read ImagingStudy, Task, "
                        "DiagnosticReport and the directory", location="type")
    return kind


@router.get("/{resource_type}/{resource_id}")
def read(resource_type: str, resource_id: str, request: Request, context: ContextDep,
         principal: Reader) -> Response:
    check_format(request)
    kind = _served_to(resource_type, request)
    with read_session(context.session_factory) as session:
        resource = read_any(session, _fhir(context), kind, resource_id,
                            viewer=viewer_of(request))
    subject = resource.get("subject")
    audit_read(context, request, action="read", entity=kind.lower()[:32],
               entity_id=resource_id,
               patient_ref=subject.get("reference") if isinstance(subject, dict) else None)
    headers = resource_headers(resource, fhir_base(request, context.settings))
    headers.pop("Location", None)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and "ETag" in headers and if_none_match.strip() == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return fhir_response(resource, headers=headers)


@router.post("/{resource_type}")
def create_resource(resource_type: str, request: Request, context: ContextDep,
                    session: SessionDep, _token: IntegrationToken, body: RawBody) -> Response:
    """Create; with ``If-None-Exist`` a conditional create (200 and no change on a match)."""
    kind = _writable(resource_type, request)
    parsed = parse_body(body, request.headers.get("content-type"))
    written = create(session, _fhir(context), kind, parsed,
                     if_none_exist=request.headers.get("if-none-exist"))
    return _written(written, request, context, session)


@router.put("/{resource_type}/{resource_id}")
def update_resource(resource_type: str, resource_id: str, request: Request,
                    context: ContextDep, session: SessionDep, _token: IntegrationToken,
                    body: RawBody) -> Response:
    kind = _writable(resource_type, request)
    parsed = parse_body(body, request.headers.get("content-type"))
    written = update(session, _fhir(context), kind, resource_id, parsed,
                     if_match=request.headers.get("if-match"))
    return _written(written, request, context, session)


@router.put("/{resource_type}")
def conditional_update_resource(resource_type: str, request: Request, context: ContextDep,
                                session: SessionDep, _token: IntegrationToken,
                                body: RawBody) -> Response:
    kind = _writable(resource_type, request)
    params = [(k, v) for k, v in request.query_params.multi_items()
              if k not in ("_format", "_pretty")]
    if not params:
        raise Rejected("a conditional update needs search parameters", location="url")
    parsed = parse_body(body, request.headers.get("content-type"))
    written = conditional_update(session, _fhir(context), kind, params, parsed,
                                 if_match=request.headers.get("if-match"))
    return _written(written, request, context, session)


def _writable(resource_type: str, request: Request) -> str:
    check_format(request)
    kind = _served(resource_type)
    if kind not in DOMAIN_TYPES:
        raise NotAllowed(f"{kind} is read-only here", location="type")
    return kind


def _written(written: Written, request: Request, context: AppContext,
             session: Session) -> Response:
    """The answer to a write (built before the commit, in the same transaction)."""
    resource = build_resources(session, _fhir(context), written.resource_type,
                               [written.id])[written.id]
    session.commit()
    headers = resource_headers(resource, fhir_base(request, context.settings))
    status = 201 if written.created else 200
    if not written.created:
        headers.pop("Location", None)
        headers["Content-Location"] = (f"{fhir_base(request, context.settings)}/"
                                       f"{written.resource_type}/{written.id}")
    wanted = prefer(request, "return")
    body: Any = resource
    if wanted == "minimal":
        body = None
    elif wanted == "operationoutcome":
        body = information(f"{written.resource_type}/{written.id} "
                           + ("created" if written.created else
                              "updated" if written.changed else "unchanged"))
    return fhir_response(body, status=status, headers=headers)


@router.api_route("", methods=["GET", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/", methods=["GET", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def base_interactions() -> Response:
    raise NotAllowed("only transaction and batch Bundles (POST) are taken at the base; "
                     "search a resource type", location="url")


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"],
                  include_in_schema=False)
def unsupported(path: str) -> Response:
    """Anything else: 405 for a served type (history, delete, patch...), 404 otherwise."""
    kind = path.split("/", 1)[0]
    if kind in SERVED_TYPES:
        raise NotAllowed(f"this interaction on {kind} is not supported", location="url")
    raise NotFound(f"{path.split('/', 1)[0] or 'the base'} is not served here",
                   location="url")
