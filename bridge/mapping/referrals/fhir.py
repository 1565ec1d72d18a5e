"""FHIR shapes of referrals (ServiceRequest ``ref-N`` + Task ``N``), their results
(DiagnosticReport) and the directory (Practitioner, PractitionerRole, Organization), for R4
and R5. Pure: the services hand in plain views and get resource dicts back.

R4 and R5 differ here in a few elements only: R5 has ``CodeableReference`` where R4 has a
CodeableConcept or a Reference (Task.statusReason, ServiceRequest.reason / supportingInfo,
Task.requestedPerformer for R4's performerType) and DiagnosticReport.study for R4's
imagingStudy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from bridge.mapping.referrals.workflow import CANCELLED, COMPLETED, ENDED, FAILED, REJECTED

REFERRAL_SYSTEM: Final = "urn:bridge:referral"
ROLE_SYSTEM: Final = "urn:bridge:role"
#: IHE 360X / FHIR: a Task that asks for a ServiceRequest to be fulfilled.
TASK_CODE: Final = {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}
SR_PREFIX: Final = "ref-"


@dataclass(frozen=True, slots=True)
class ReferralView:
    id: int
    patient_id: int
    requester_id: int
    performer_kind: str
    performer_org_id: int | None
    owner_id: int | None
    code: str
    code_system: str
    code_display: str
    modality: str | None
    reason: str
    priority: str
    status: str
    business_status: str
    status_reason: str
    external_id: str | None
    source: str
    version: int
    created_at: datetime
    updated_at: datetime
    study_ids: Sequence[int] = field(default_factory=tuple)
    report_ids: Sequence[int] = field(default_factory=tuple)
    document_ids: Sequence[int] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class ReportView:
    id: int
    referral_id: int | None
    patient_id: int
    study_id: int | None
    status: str
    code: str
    code_display: str
    conclusion: str
    author_id: int | None
    presented_form: Sequence[dict[str, Any]]
    issued_at: datetime


def instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ref(kind: str, rid: object) -> dict[str, str]:
    return {"reference": f"{kind}/{rid}"}


def _code(view: ReferralView) -> dict[str, Any]:
    coding = {"code": view.code} if view.code else {}
    if coding and view.code_system:
        coding["system"] = view.code_system
    if coding and view.code_display:
        coding["display"] = view.code_display
    concept: dict[str, Any] = {"coding": [coding]} if coding else {}
    if view.code_display or view.modality:
        concept["text"] = view.code_display or view.modality
    return concept or {"text": view.performer_kind}


def _performer_concept(view: ReferralView) -> dict[str, Any]:
    return {"coding": [{"system": ROLE_SYSTEM, "code": view.performer_kind}]}


def _performer_refs(view: ReferralView) -> list[dict[str, str]]:
    refs = []
    if view.owner_id is not None:
        refs.append(_ref("Practitioner", view.owner_id))
    if view.performer_org_id is not None:
        refs.append(_ref("Organization", view.performer_org_id))
    return refs


def _meta(view: ReferralView) -> dict[str, str]:
    return {"versionId": str(view.version), "lastUpdated": instant(view.updated_at)}


def _identifiers(view: ReferralView) -> list[dict[str, str]]:
    ids = [{"system": REFERRAL_SYSTEM, "value": str(view.id)}]
    if view.external_id:
        ids.append({"system": f"urn:bridge:source:{view.source}", "value": view.external_id})
    return ids


def service_request_status(task_status: str) -> str:
    """The referral's ServiceRequest status that goes with its Task's."""
    if task_status == COMPLETED:
        return "completed"
    if task_status in (CANCELLED, REJECTED, FAILED):
        return "revoked"
    return "active"


def task_resource(view: ReferralView, version: str) -> dict[str, Any]:
    sr = _ref("ServiceRequest", f"{SR_PREFIX}{view.id}")
    task: dict[str, Any] = {
        "resourceType": "Task", "id": str(view.id), "meta": _meta(view),
        "identifier": _identifiers(view), "basedOn": [sr], "status": view.status,
        "intent": "order", "priority": view.priority, "code": {"coding": [TASK_CODE]},
        "focus": sr, "for": _ref("Patient", view.patient_id),
        "authoredOn": instant(view.created_at), "lastModified": instant(view.updated_at),
        "requester": _ref("Practitioner", view.requester_id),
    }
    if view.status_reason:
        reason = {"text": view.status_reason}
        task["statusReason"] = {"concept": reason} if version == "R5" else reason
    if view.business_status:
        task["businessStatus"] = {"text": view.business_status}
    if version == "R5":
        task["requestedPerformer"] = [{"concept": _performer_concept(view)}]
    else:
        task["performerType"] = [_performer_concept(view)]
    owners = _performer_refs(view)
    if owners:
        task["owner"] = owners[0]
    inputs = [{"type": {"text": "study"}, "valueReference": _ref("ImagingStudy", sid)}
              for sid in view.study_ids]
    inputs += [{"type": {"text": "record extract"},
                "valueReference": _ref("DocumentReference", f"ref-doc-{did}")}
               for did in view.document_ids]
    if inputs:
        task["input"] = inputs
    if view.report_ids:
        task["output"] = [{"type": {"text": "result"},
                           "valueReference": _ref("DiagnosticReport", rid)}
                          for rid in view.report_ids]
    return task


def service_request_resource(view: ReferralView, version: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": f"{SR_PREFIX}{view.id}", "meta": _meta(view),
        "identifier": _identifiers(view), "status": service_request_status(view.status),
        "intent": "order", "priority": view.priority,
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                  "display": "Patient referral"}]}],
        "code": ({"concept": _code(view)} if version == "R5" else _code(view)),
        "subject": _ref("Patient", view.patient_id),
        "authoredOn": instant(view.created_at),
        "requester": _ref("Practitioner", view.requester_id),
    }
    performers = _performer_refs(view)
    if performers:
        resource["performer"] = performers
    resource["performerType"] = _performer_concept(view)
    if view.reason:
        if version == "R5":
            resource["reason"] = [{"concept": {"text": view.reason}}]
        else:
            resource["reasonCode"] = [{"text": view.reason}]
    studies = [_ref("ImagingStudy", sid) for sid in view.study_ids]
    docs = [_ref("DocumentReference", f"ref-doc-{did}") for did in view.document_ids]
    if studies or docs:
        resource["supportingInfo"] = ([{"reference": r} for r in studies + docs]
                                      if version == "R5" else studies + docs)
    return resource


def report_resource(view: ReportView, version: str) -> dict[str, Any]:
    code: dict[str, Any] = {"text": view.code_display or view.code or "Result"}
    if view.code:
        code["coding"] = [{"system": "http://loinc.org", "code": view.code,
                           **({"display": view.code_display} if view.code_display else {})}]
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": str(view.id),
        "meta": {"versionId": "1", "lastUpdated": instant(view.issued_at)},
        "status": view.status, "code": code, "subject": _ref("Patient", view.patient_id),
        "issued": instant(view.issued_at),
    }
    if view.referral_id is not None:
        resource["basedOn"] = [_ref("ServiceRequest", f"{SR_PREFIX}{view.referral_id}")]
    if view.author_id is not None:
        resource["performer"] = [_ref("Practitioner", view.author_id)]
    if view.study_id is not None:
        resource["study" if version == "R5" else "imagingStudy"] = [
            _ref("ImagingStudy", view.study_id)]
    if view.conclusion:
        resource["conclusion"] = view.conclusion
    if view.presented_form:
        resource["presentedForm"] = list(view.presented_form)
    return resource


def practitioner_resource(user_id: int, display_name: str, identifier: str | None,
                          active: bool) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Practitioner", "id": str(user_id),
                                "active": active}
    if display_name:
        resource["name"] = [{"text": display_name}]
    if identifier:
        resource["identifier"] = [{"value": identifier}]
    return resource


def practitioner_role_resource(user_id: int, role: str, organization_id: int | None,
                               specialty: str | None, active: bool) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "PractitionerRole", "id": str(user_id), "active": active,
        "practitioner": _ref("Practitioner", user_id),
        "code": [{"coding": [{"system": ROLE_SYSTEM, "code": role}]}],
    }
    if organization_id is not None:
        resource["organization"] = _ref("Organization", organization_id)
    if specialty:
        resource["specialty"] = [{"text": specialty}]
    return resource


def organization_resource(org_id: int, identifier: str, name: str, kind: str,
                          active: bool) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": str(org_id), "active": active,
            "identifier": [{"value": identifier}], "name": name,
            "type": [{"coding": [{"system": "urn:bridge:organization-kind", "code": kind}]}]}


def is_ended(status: str) -> bool:
    return status in ENDED
