"""Referrals under ``/fhir``: Task (read, search, update = a status move), ServiceRequest
``ref-N`` (read), DiagnosticReport (read, search, create = a referral's result), and the
directory (Practitioner, PractitionerRole, Organization: read, search).

Clinicians see what :mod:`bridge.services.referrals.views` lets them; systems need the
integration role. An illegal Task move answers 409 with an OperationOutcome naming both
statuses, and nothing changes. Included before :mod:`.routes`, whose generic routes would
otherwise take these paths.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response

from bridge.adapters.http.access import audit_read, patient_data_reader
from bridge.adapters.http.deps import ContextDep, SessionDep, require_role
from bridge.adapters.http.fhir.responses import (
    FhirRoute,
    check_format,
    fhir_base,
    fhir_response,
    parse_body,
    raw_body,
    resource_headers,
)
from bridge.errors import MappingFailed
from bridge.mapping.fhir.bundle import searchset
from bridge.mapping.fhir.capability import ResourceCapability
from bridge.mapping.fhir.consent import read_consent
from bridge.mapping.fhir.outcome import information
from bridge.mapping.fhir.version import check_resource
from bridge.mapping.referrals import fhir as rf
from bridge.services.access import shares
from bridge.services.auth.principal import Principal
from bridge.services.referrals import notify, views
from bridge.services.referrals.workflow import add_report, move
from bridge.store.db import read_session

router = APIRouter(prefix="/fhir", tags=["fhir"], route_class=FhirRoute)
Reader = Annotated[Principal, Depends(patient_data_reader("integration"))]
RawBody = Annotated[bytes, Depends(raw_body)]


def _read(kind: str, resource_id: str, request: Request, context: ContextDep,
          principal: Principal) -> Response:
    check_format(request)
    with read_session(context.session_factory) as session:
        resource = views.read(session, principal, context.settings.fhir_version, kind,
                              resource_id)
    audit_read(context, request, action="read", entity=kind.lower()[:32],
               entity_id=resource_id, patient_ref=_patient_ref(resource))
    headers = resource_headers(resource, fhir_base(request, context.settings))
    headers.pop("Location", None)
    return fhir_response(resource, headers=headers)


def _search(kind: str, request: Request, context: ContextDep, principal: Principal
            ) -> Response:
    check_format(request)
    params = list(request.query_params.multi_items())
    with read_session(context.session_factory) as session:
        total, matches, included = views.search(
            session, principal, context.settings.fhir_version, kind, params,
            ZoneInfo(context.settings.local_timezone))
    audit_read(context, request, action="search", entity=kind.lower()[:32], entity_id="*",
               details={"matches": len(matches)})
    base = fhir_base(request, context.settings)
    entries = [(f"{base}/{r['resourceType']}/{r['id']}", r, "match") for r in matches]
    entries += [(f"{base}/{r['resourceType']}/{r['id']}", r, "include") for r in included]
    self_url = f"{base}/{kind}?{urlencode(params)}" if params else f"{base}/{kind}"
    return fhir_response(searchset(entries, total=total, links=[("self", self_url)]))


def _patient_ref(resource: dict[str, Any]) -> str | None:
    subject = resource.get("subject") or resource.get("for")
    if isinstance(subject, dict) and str(subject.get("reference", "")).startswith("Patient/"):
        return str(subject["reference"])
    return None


def _add_type(kind: str) -> None:
    def search(request: Request, context: ContextDep, principal: Reader) -> Response:
        return _search(kind, request, context, principal)

    def read(resource_id: str, request: Request, context: ContextDep,
             principal: Reader) -> Response:
        return _read(kind, resource_id, request, context, principal)

    router.add_api_route(f"/{kind}", search, methods=["GET"], name=f"fhir_search_{kind}",
                         summary=f"Search {kind}")
    router.add_api_route(f"/{kind}/{{resource_id}}", read, methods=["GET"],
                         name=f"fhir_read_{kind}", summary=f"Read {kind}")


for _kind in views.WORKFLOW_TYPES:
    _add_type(_kind)


@router.get("/ServiceRequest/ref-{referral_id}", summary="Read a referral's ServiceRequest")
def read_referral_request(referral_id: str, request: Request, context: ContextDep,
                          principal: Reader) -> Response:
    return _read(views.SERVICE_REQUEST, referral_id, request, context, principal)


@router.put("/Task/{task_id}", summary="Move a referral's Task (status, reason, business "
            "status)")
def update_task(task_id: str, request: Request, context: ContextDep, session: SessionDep,
                principal: Reader, body: RawBody) -> Response:
    check_format(request)
    task = parse_body(body, request.headers.get("content-type"))
    if not isinstance(task, dict) or task.get("resourceType") != "Task":
        raise MappingFailed("the body is a Task", location="resourceType")
    if str(task.get("id", task_id)) != task_id:
        raise MappingFailed("the Task's id is not the one in the URL", location="Task.id")
    check_resource(context.settings.fhir_version, task, expected_type="Task")
    wanted = str(task.get("status", ""))
    reason = _text(task.get("statusReason"))
    business = _text(task.get("businessStatus")) or None
    if_match = request.headers.get("if-match")
    tag = (if_match or "").removeprefix("W/").strip('"')
    expected = int(tag) if tag.isdigit() else None
    referral_id = int(task_id) if task_id.isdigit() and len(task_id) < 18 else -1
    version = context.settings.fhir_version
    current = views.visible_referral(session, principal, referral_id)
    if wanted != current.status:
        move(session, principal, referral_id, wanted, reason=reason, business_status=business,
             order_policy=context.order_policy, expected_version=expected)
    resource = rf.task_resource(views.referral_view(session, current), version)
    session.commit()
    headers = resource_headers(resource, fhir_base(request, context.settings))
    headers.pop("Location", None)
    return fhir_response(resource, headers=headers)


def _text(value: Any) -> str:
    if isinstance(value, dict):
        concept = value.get("concept", value)
        if isinstance(concept, dict):
            return str(concept.get("text") or next(
                (c.get("display") or c.get("code") for c in concept.get("coding", [])), "")
                or "")
    return ""


@router.post("/DiagnosticReport", summary="A referral's result (basedOn ServiceRequest/ref-N)")
def create_report(request: Request, context: ContextDep, session: SessionDep,
                  principal: Reader, body: RawBody) -> Response:
    check_format(request)
    report = parse_body(body, request.headers.get("content-type"))
    if not isinstance(report, dict) or report.get("resourceType") != "DiagnosticReport":
        raise MappingFailed("the body is a DiagnosticReport", location="resourceType")
    check_resource(context.settings.fhir_version, report,
                   expected_type="DiagnosticReport")
    based_on = [str(b.get("reference", "")) for b in report.get("basedOn", [])
                if isinstance(b, dict)]
    referral_ids = [int(r[19:]) for r in based_on
                    if r.startswith("ServiceRequest/ref-") and r[19:].isdigit()]
    if len(referral_ids) != 1:
        raise MappingFailed("a result is basedOn exactly one referral "
                            "(ServiceRequest/ref-N)", location="DiagnosticReport.basedOn")
    studies = report.get("study") or report.get("imagingStudy") or []
    study_uid = None
    for ref in studies:
        identifier = (ref.get("identifier") or {}) if isinstance(ref, dict) else {}
        if str(identifier.get("value", "")).startswith("urn:oid:"):
            study_uid = str(identifier["value"])[8:]
    code = report.get("code") or {}
    coding = (code.get("coding") or [{}])[0] if isinstance(code, dict) else {}
    saved = add_report(
        session, principal, referral_ids[0], conclusion=str(report.get("conclusion", "")),
        status=str(report.get("status", "final")), code=str(coding.get("code", "")),
        code_display=str(coding.get("display") or code.get("text") or ""),
        study_uid=study_uid, presented_form=report.get("presentedForm") or [],
        source="fhir", order_policy=context.order_policy)
    resource = rf.report_resource(views.report_view(saved),
                                        context.settings.fhir_version)
    session.commit()
    headers = resource_headers(resource, fhir_base(request, context.settings))
    return fhir_response(resource, status=201, headers=headers)


def workflow_resources() -> list[ResourceCapability]:
    """The CapabilityStatement's entries for the types served here."""
    interactions = {views.TASK: ("read", "search-type", "update"),
                    views.REPORT: ("read", "search-type", "create")}
    return [ResourceCapability(type=kind, interactions=interactions.get(kind, ("read",
                                                                              "search-type")),
                               search_params=views.SEARCH_PARAMS[kind],
                               search_include=tuple(sorted(views.INCLUDES[kind])),
                               versioning="versioned" if kind == views.TASK else "no-version")
            for kind in views.WORKFLOW_TYPES] + [
        ResourceCapability(type="Subscription", interactions=("read", "create")),
        ResourceCapability(type="Consent", interactions=("create",))]


System = Annotated[Principal, Depends(require_role("integration"))]


@router.post("/Subscription", summary="Subscribe a system to referral (Task) changes")
def create_subscription(request: Request, context: ContextDep, session: SessionDep,
                        principal: System, body: RawBody) -> Response:
    check_format(request)
    resource = parse_body(body, request.headers.get("content-type"))
    version = context.settings.fhir_version
    check_resource(version, resource, expected_type="Subscription")
    subscription = notify.create_subscription(session, principal, resource, version)
    answer = notify.subscription_fhir(subscription, version)
    session.commit()
    headers = {"Location": f"{fhir_base(request, context.settings)}/Subscription/"
                           f"{subscription.id}"}
    return fhir_response(answer, status=201, headers=headers)


@router.get("/Subscription/{subscription_id}", summary="Read a Subscription")
def read_subscription(subscription_id: str, request: Request, context: ContextDep,
                      _principal: System) -> Response:
    check_format(request)
    with read_session(context.session_factory) as session:
        subscription = notify.load_subscription(session, subscription_id)
        answer = notify.subscription_fhir(subscription, context.settings.fhir_version)
    return fhir_response(answer)


@router.post("/Consent", summary="Record a patient's consent to share their studies")
def create_consent(request: Request, context: ContextDep, session: SessionDep,
                   principal: System, body: RawBody) -> Response:
    """Every study of the patient is shared with each practitioner the Consent names, until
    its period ends; the answer lists the shares as an OperationOutcome."""
    check_format(request)
    resource = parse_body(body, request.headers.get("content-type"))
    version = context.settings.fhir_version
    check_resource(version, resource, expected_type="Consent")
    grant = read_consent(resource, version)
    grants = shares.record_consent(session, principal, grant.patient_id, grant.practitioners,
                                   grant.expires_at)
    session.commit()
    return fhir_response(information(
        f"shared with {len(grants)} practitioner(s): access grants "
        + ", ".join(str(g.id) for g in grants)), status=201)
