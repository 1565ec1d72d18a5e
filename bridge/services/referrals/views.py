"""What ``/fhir`` and ``/api`` show of referrals, results and the directory, to whom.

A clinician sees the referrals they requested, perform, or may take as performer (their
role and organization); systems, operators and admins see all. Searches filter in SQL.
Resources: Task (``N``), ServiceRequest (``ref-N``), DiagnosticReport, Practitioner,
PractitionerRole (one per user, same id) and Organization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from bridge.errors import MappingFailed, NotFound
from bridge.mapping.fhir.search import date_bounds
from bridge.mapping.referrals import fhir as rf
from bridge.mapping.referrals import workflow as wf
from bridge.services.auth.principal import Principal
from bridge.store.archive_models import Study
from bridge.store.people_models import Organization, User
from bridge.store.referral_models import (
    DiagnosticReport,
    Referral,
    ReferralDocument,
    ReferralStudy,
)

TASK, SERVICE_REQUEST, REPORT = "Task", "ServiceRequest", "DiagnosticReport"
PRACTITIONER, ROLE, ORGANIZATION = "Practitioner", "PractitionerRole", "Organization"
WORKFLOW_TYPES: Final = (TASK, REPORT, PRACTITIONER, ROLE, ORGANIZATION)
#: Search parameters per type (the CapabilityStatement lists these).
SEARCH_PARAMS: Final[dict[str, dict[str, tuple[str, str]]]] = {
    TASK: {"_id": ("token", "The referral id"), "patient": ("reference", "Patient/[id]"),
           "requester": ("reference", "Practitioner/[id]"),
           "owner": ("reference", "Practitioner/[id]"), "status": ("token", "Task status"),
           "authored-on": ("date", "When the referral was made (ge/lt)")},
    REPORT: {"_id": ("token", "Logical id"), "patient": ("reference", "Patient/[id]"),
             "based-on": ("reference", "ServiceRequest/ref-[id]"),
             "status": ("token", "registered | ... | final")},
    PRACTITIONER: {"_id": ("token", "Logical id"), "identifier": ("token", "HR/registry id")},
    ROLE: {"_id": ("token", "Logical id"), "practitioner": ("reference", "Practitioner/[id]"),
           "organization": ("reference", "Organization/[id]"),
           "role": ("token", "family_doctor | diagnostics | consultant | ...")},
    ORGANIZATION: {"_id": ("token", "Logical id"), "identifier": ("token", "Identifier"),
                   "type": ("token", "practice | diagnostics | consultants | hospital")},
}
INCLUDES: Final = {TASK: frozenset({"Task:focus", "Task:owner", "Task:requester"}),
                   REPORT: frozenset({"DiagnosticReport:based-on"}),
                   PRACTITIONER: frozenset(), ROLE: frozenset({"PractitionerRole:organization",
                                                              "PractitionerRole:practitioner"}),
                   ORGANIZATION: frozenset()}
MAX_COUNT: Final = 200
UTC_ZONE: Final = ZoneInfo("UTC")


def referral_visible(principal: Principal) -> ColumnElement[bool] | None:
    """The condition on ``referrals`` for what a clinician may see (None: everything)."""
    if not principal.is_clinician:
        return None
    may_perform = and_(
        Referral.owner_id.is_(None),
        Referral.performer_kind == {"diagnostics": "diagnostics",
                                    "consultant": "consultant"}.get(principal.role, "-"),
        or_(Referral.performer_org_id.is_(None),
            Referral.performer_org_id == principal.organization_id))
    return or_(Referral.requester_id == principal.id, Referral.owner_id == principal.id,
               may_perform)


def referral_view(session: Session, referral: Referral) -> rf.ReferralView:
    return referral_views(session, [referral])[0]


def referral_views(session: Session, referrals: Sequence[Referral]) -> list[rf.ReferralView]:
    """The views of a page of referrals: their studies, reports and documents in three
    queries for the whole page, not three per referral."""
    ids = [r.id for r in referrals]
    children: dict[str, dict[int, list[int]]] = {"studies": {}, "reports": {}, "docs": {}}
    columns: tuple[tuple[str, Any, Any], ...] = (
        ("studies", ReferralStudy.referral_id, ReferralStudy.study_id),
        ("reports", DiagnosticReport.referral_id, DiagnosticReport.id),
        ("docs", ReferralDocument.referral_id, ReferralDocument.id))
    for name, owner, child in columns if ids else ():
        for referral_id, child_id in session.execute(
                select(owner, child).where(owner.in_(ids)).order_by(child)):
            children[name].setdefault(int(referral_id), []).append(int(child_id))
    return [rf.ReferralView(
        id=r.id, patient_id=r.patient_id, requester_id=r.requester_id,
        performer_kind=r.performer_kind, performer_org_id=r.performer_org_id,
        owner_id=r.owner_id, code=r.code, code_system=r.code_system,
        code_display=r.code_display, modality=r.modality, reason=r.reason,
        priority=r.priority, status=r.status, business_status=r.business_status,
        status_reason=r.status_reason, external_id=r.external_id, source=r.source,
        version=r.version, created_at=r.created_at, updated_at=r.updated_at,
        study_ids=tuple(children["studies"].get(r.id, ())),
        report_ids=tuple(children["reports"].get(r.id, ())),
        document_ids=tuple(children["docs"].get(r.id, ()))) for r in referrals]


def study_uids(session: Session, views: Sequence[rf.ReferralView]) -> dict[int, str]:
    """The StudyInstanceUIDs of the studies the referrals carry (study id → UID), in one
    query: what the console opens in its viewer."""
    ids = sorted({sid for view in views for sid in view.study_ids})
    if not ids:
        return {}
    return {int(pk): uid for pk, uid in session.execute(
        select(Study.id, Study.study_instance_uid).where(Study.id.in_(ids)))}


def report_view(report: DiagnosticReport) -> rf.ReportView:
    return rf.ReportView(
        id=report.id, referral_id=report.referral_id, patient_id=report.patient_id,
        study_id=report.study_id, status=report.status, code=report.code,
        code_display=report.code_display, conclusion=report.conclusion,
        author_id=report.author_id, presented_form=tuple(report.presented_form or ()),
        issued_at=report.issued_at)


def visible_referral(session: Session, principal: Principal, referral_id: int) -> Referral:
    """The referral, or 404 when it does not exist or the caller may not see it."""
    query = select(Referral).where(Referral.id == referral_id)
    condition = referral_visible(principal)
    if condition is not None:
        query = query.where(condition)
    referral = session.execute(query).scalar_one_or_none()
    if referral is None:
        raise NotFound(f"no referral {referral_id}", location="id")
    return referral


def _int_id(value: str, kind: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise NotFound(f"{kind}/{value} is not known", location="id")
    return int(value)


def read(session: Session, principal: Principal, version: str, kind: str,
         resource_id: str) -> dict[str, Any]:
    if kind == SERVICE_REQUEST:
        ref_id = _int_id(resource_id.removeprefix(rf.SR_PREFIX), kind)
        return rf.service_request_resource(
            referral_view(session, visible_referral(session, principal, ref_id)), version)
    if kind == TASK:
        return rf.task_resource(referral_view(
            session, visible_referral(session, principal, _int_id(resource_id, kind))), version)
    if kind == REPORT:
        found = _reports(session, principal, [("_id", resource_id)], version, 1, 0)[1]
        if not found:
            raise NotFound(f"DiagnosticReport/{resource_id} is not known", location="id")
        return found[0]
    found = _directory(session, kind, [("_id", resource_id)], 1, 0)[1]
    if not found:
        raise NotFound(f"{kind}/{resource_id} is not known", location="id")
    return found[0]


def search(session: Session, principal: Principal, version: str, kind: str,
           params: Sequence[tuple[str, str]], zone: ZoneInfo = UTC_ZONE,
           ) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """(total, matches, included resources) for one page; dates without an offset are in
    ``zone`` (the site's local time, as for the other FHIR searches)."""
    count, offset, includes, criteria = _paging(kind, params)
    if kind == TASK:
        total, matches = _tasks(session, principal, criteria, version, count, offset, zone)
    elif kind == REPORT:
        total, matches = _reports(session, principal, criteria, version, count, offset)
    else:
        total, matches = _directory(session, kind, criteria, count, offset)
    return total, matches, _included(session, principal, version, matches, includes)


def _paging(kind: str, params: Sequence[tuple[str, str]]
            ) -> tuple[int, int, set[str], list[tuple[str, str]]]:
    count, offset, includes, criteria = 50, 0, set(), []
    for name, value in params:
        if name == "_count":
            count = _number(value, name)
        elif name == "_offset":
            offset = _number(value, name)
        elif name == "_include":
            if value not in INCLUDES[kind]:
                raise MappingFailed(f"_include={value} is not supported for {kind}",
                                    location="_include")
            includes.add(value)
        elif name in ("_format", "_total"):
            continue
        elif name.split(":", 1)[0] in SEARCH_PARAMS[kind]:
            criteria.append((name, value))
        else:
            raise MappingFailed(f"{kind} cannot be searched by {name}", location=name)
    return min(count, MAX_COUNT), offset, includes, criteria


def _number(value: str, name: str) -> int:
    if not value.isdigit():
        raise MappingFailed(f"{name} is a number", location=name)
    return int(value)


def _ref_id(value: str, kind: str) -> int:
    tail = value.split("/", 1)[1] if value.startswith(f"{kind}/") else value
    tail = tail.removeprefix(rf.SR_PREFIX)
    return int(tail) if tail.isdigit() and len(tail) < 18 else -1


def _tasks(session: Session, principal: Principal, criteria: list[tuple[str, str]],
           version: str, count: int, offset: int, zone: ZoneInfo,
           ) -> tuple[int, list[dict[str, Any]]]:
    query: Select[Any] = select(Referral)
    condition = referral_visible(principal)
    if condition is not None:
        query = query.where(condition)
    columns = {"patient": (Referral.patient_id, "Patient"),
               "requester": (Referral.requester_id, "Practitioner"),
               "owner": (Referral.owner_id, "Practitioner")}
    for name, value in criteria:
        if name == "_id":
            query = query.where(Referral.id.in_([_ref_id(v, "Task") for v in value.split(",")]))
        elif name in columns:
            column, kind = columns[name]
            query = query.where(column.in_([_ref_id(v, kind) for v in value.split(",")]))
        elif name == "status":
            query = query.where(Referral.status.in_(value.split(",")))
        elif name == "authored-on":
            for bound in date_bounds(name, value, zone):
                query = query.where(Referral.created_at >= bound.moment if bound.op == "ge"
                                    else Referral.created_at < bound.moment)
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(Referral.id).limit(count).offset(offset)
                           ).scalars().all()
    return int(total), [rf.task_resource(view, version)
                        for view in referral_views(session, rows)]


def _reports(session: Session, principal: Principal, criteria: list[tuple[str, str]],
             version: str, count: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    query: Select[Any] = select(DiagnosticReport)
    condition = referral_visible(principal)
    if condition is not None:
        query = query.where(DiagnosticReport.referral_id.in_(
            select(Referral.id).where(condition)))
    for name, value in criteria:
        values = value.split(",")
        if name == "_id":
            query = query.where(DiagnosticReport.id.in_(
                [int(v) if v.isdigit() and len(v) < 18 else -1 for v in values]))
        elif name == "patient":
            query = query.where(DiagnosticReport.patient_id.in_(
                [_ref_id(v, "Patient") for v in values]))
        elif name == "based-on":
            query = query.where(DiagnosticReport.referral_id.in_(
                [_ref_id(v, "ServiceRequest") for v in values]))
        elif name == "status":
            query = query.where(DiagnosticReport.status.in_(values))
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(DiagnosticReport.id).limit(count).offset(offset)
                           ).scalars()
    return int(total), [rf.report_resource(report_view(r), version) for r in rows]


def _directory(session: Session, kind: str, criteria: list[tuple[str, str]], count: int,
               offset: int) -> tuple[int, list[dict[str, Any]]]:
    model: Any = Organization if kind == ORGANIZATION else User
    query: Select[Any] = select(model)
    for name, value in criteria:
        values = value.split(",")
        if name == "_id":
            query = query.where(model.id.in_(
                [int(v) if v.isdigit() and len(v) < 18 else -1 for v in values]))
        elif name == "identifier":
            query = query.where(model.identifier.in_([v.split("|")[-1] for v in values]))
        elif name == "type":
            query = query.where(Organization.kind.in_([v.split("|")[-1] for v in values]))
        elif name == "practitioner":
            query = query.where(User.id.in_([_ref_id(v, "Practitioner") for v in values]))
        elif name == "organization":
            query = query.where(User.organization_id.in_(
                [_ref_id(v, "Organization") for v in values]))
        elif name == "role":
            query = query.where(User.role.in_([v.split("|")[-1] for v in values]))
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(model.id).limit(count).offset(offset)).scalars()
    return int(total), [_directory_resource(kind, row) for row in rows]


def _directory_resource(kind: str, row: Any) -> dict[str, Any]:
    if kind == ORGANIZATION:
        return rf.organization_resource(row.id, row.identifier, row.name, row.kind, row.active)
    if kind == PRACTITIONER:
        return rf.practitioner_resource(row.id, row.display_name, row.identifier,
                                        not row.disabled)
    return rf.practitioner_role_resource(row.id, row.role, row.organization_id, row.specialty,
                                         not row.disabled)


def _included(session: Session, principal: Principal, version: str,
              matches: list[dict[str, Any]], includes: set[str]) -> list[dict[str, Any]]:
    """The resources ``_include`` asks for, once each, as far as the caller may see them."""
    wanted: dict[str, set[str]] = {}
    element = {"Task:focus": "focus", "Task:owner": "owner", "Task:requester": "requester",
               "PractitionerRole:organization": "organization",
               "PractitionerRole:practitioner": "practitioner"}
    for resource in matches:
        for include in includes:
            targets = (resource.get("basedOn", []) if include == "DiagnosticReport:based-on"
                       else [resource.get(element[include], {})])
            for target in targets:
                reference = str(target.get("reference", ""))
                if "/" in reference:
                    kind, rid = reference.split("/", 1)
                    wanted.setdefault(kind, set()).add(rid)
    found: list[dict[str, Any]] = []
    for kind, ids in wanted.items():
        for rid in sorted(ids):
            try:
                found.append(read(session, principal, version, kind, rid))
            except NotFound:
                continue
    return found


def referral_queue(session: Session, principal: Principal, *, status: Sequence[str] = (),
                   limit: int = 100) -> list[Referral]:
    """Referrals the caller may see, newest first, optionally by status (a department's
    inbox is ``status=requested,received``)."""
    query = select(Referral)
    condition = referral_visible(principal)
    if condition is not None:
        query = query.where(condition)
    if status:
        unknown = set(status) - set(wf.STATUSES)
        if unknown:
            raise MappingFailed(f"unknown status {sorted(unknown)[0]}", location="status")
        query = query.where(Referral.status.in_(list(status)))
    return list(session.execute(query.order_by(Referral.id.desc()).limit(limit)).scalars())
