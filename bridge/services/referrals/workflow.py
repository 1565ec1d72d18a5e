"""Creating referrals, moving their Tasks, and recording their results.

Every change happens in the caller's transaction together with its ``referral_events`` row,
its audit record and its notification job, so a notification is never sent for a change that
did not commit, and a committed change is never left without one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.domain import (
    CodedValue,
    Identifier,
    OrderAction,
    OrderCommand,
    OrderData,
    PatientData,
    StepData,
    StepStatus,
)
from bridge.errors import Conflict, Forbidden, MappingFailed, NotFound, Rejected
from bridge.jobs import queue
from bridge.mapping.fhir.outcome import PreconditionFailed
from bridge.mapping.referrals import workflow as wf
from bridge.mapping.referrals.fhir import instant
from bridge.services.auth.principal import Principal
from bridge.services.auth.users import active_user
from bridge.services.patients.mpi import resolve_patient
from bridge.services.worklist.orders import OrderPolicy, apply_order_command
from bridge.store.archive_models import Study
from bridge.store.audit import append_audit
from bridge.store.models import Order, Patient, utcnow
from bridge.store.people_models import Organization, User
from bridge.store.referral_models import (
    DiagnosticReport,
    Referral,
    ReferralDocument,
    ReferralEvent,
    ReferralStudy,
)

#: The outbox queue the notifier (FHIR Subscriptions) drains.
NOTIFY_QUEUE = "referral_notify"
#: The outbox queue that tells the registry what became of a referral it sent.
REGISTRY_QUEUE = "registry_referral"
REGISTRY_TOLD = frozenset({"accepted", "rejected", "completed", "cancelled", "failed"})
PLACER_ISSUER = "BRIDGE-REFERRAL"
#: Organization kinds that may perform each referral kind.
PERFORMER_ORG_KINDS = {"diagnostics": {"diagnostics", "hospital"},
                       "consultant": {"consultants", "hospital"}}
DOCUMENT_TYPES = frozenset({"DocumentReference", "Bundle"})
REPORT_STATUSES = frozenset({"registered", "partial", "preliminary", "final", "amended",
                             "corrected"})


@dataclass(frozen=True, slots=True)
class NewReferral:
    """What a referral asks for, as the API, FHIR, HL7 or the registry said it."""

    patient: Identifier
    performer_kind: str
    performer_org: str | None = None
    owner: str | None = None  # a username, or "Practitioner/N"
    requester: str | None = None  # for systems: who refers (a username or Practitioner/N)
    code: str = ""
    code_system: str = ""
    code_display: str = ""
    modality: str | None = None
    reason: str = ""
    priority: str = "routine"
    study_uids: Sequence[str] = ()
    documents: Sequence[Mapping[str, Any]] = ()
    source: str = "api"
    external_id: str | None = None


def side_of(principal: Principal, referral: Referral) -> str | None:
    """How the caller stands to a referral: requester, performer, system, or None."""
    if not principal.is_clinician:
        return "system"
    if principal.id == referral.requester_id:
        return "requester"
    if principal.id == referral.owner_id:
        return "performer"
    if (referral.owner_id is None and principal.role == wf.PERFORMER_ROLE[referral.performer_kind]
            and referral.performer_org_id in (None, principal.organization_id)):
        return "performer"
    return None


def create_referral(session: Session, principal: Principal, new: NewReferral) -> Referral:
    """Check everything, then write the referral in the caller's transaction."""
    requester = _requester(session, principal, new)
    if new.performer_kind not in wf.PERFORMER_ROLE:
        raise MappingFailed("performer_kind is diagnostics or consultant",
                            location="performer_kind")
    patient_id = resolve_patient(session, new.patient)
    if patient_id is None:
        raise NotFound("the patient is not known to the bridge", location="patient")
    org_id = _performer_org(session, new)
    owner_id = None
    if new.owner:
        owner = active_user(session, new.owner, location="owner")
        if owner.role != wf.PERFORMER_ROLE[new.performer_kind]:
            raise MappingFailed(f"a {owner.role} cannot perform a {new.performer_kind} "
                                "referral", location="owner")
        owner_id = owner.id
    if new.performer_kind == "consultant" and owner_id is None and org_id is None:
        raise MappingFailed("a consultant referral names its consultant or department",
                            location="owner")
    if new.performer_kind == "diagnostics" and not (new.modality or new.code):
        raise MappingFailed("a diagnostics referral names the exam (modality or code)",
                            location="code")
    studies = _studies_of_patient(session, new.study_uids, patient_id)
    for document in new.documents:
        if document.get("resourceType") not in DOCUMENT_TYPES or (
                document.get("resourceType") == "Bundle" and document.get("type") != "document"):
            raise Rejected("a record extract is a DocumentReference or a document Bundle",
                           location="documents")
    now = utcnow()
    referral = Referral(
        patient_id=patient_id, requester_id=requester.id, performer_kind=new.performer_kind,
        performer_org_id=org_id, owner_id=owner_id, code=new.code, code_system=new.code_system,
        code_display=new.code_display, modality=new.modality, reason=new.reason,
        priority=new.priority or "routine", status=wf.REQUESTED, business_status="",
        status_reason="", source=new.source, external_id=new.external_id, version=1,
        created_at=now, updated_at=now)
    session.add(referral)
    session.flush()
    session.add_all(ReferralStudy(referral_id=referral.id, study_id=sid) for sid in studies)
    session.add_all(ReferralDocument(referral_id=referral.id,
                                     resource_type=str(d["resourceType"]), content=dict(d))
                    for d in new.documents)
    record_move(session, referral, "", wf.REQUESTED, principal.actor, "")
    return referral


def _requester(session: Session, principal: Principal, new: NewReferral) -> User:
    if principal.is_clinician:
        if principal.role not in wf.REQUESTER_ROLES:
            raise Forbidden(f"a {principal.role} does not refer patients", location="requester")
        return active_user(session, f"Practitioner/{principal.id}", location="requester")
    if not new.requester:
        raise MappingFailed("a system names the referring practitioner", location="requester")
    user = active_user(session, new.requester, location="requester")
    if user.role not in wf.REQUESTER_ROLES:
        raise MappingFailed(f"a {user.role} does not refer patients", location="requester")
    return user


def _performer_org(session: Session, new: NewReferral) -> int | None:
    if not new.performer_org:
        return None
    org = session.execute(select(Organization).where(
        Organization.identifier == new.performer_org)).scalar_one_or_none()
    if org is None or not org.active:
        raise NotFound(f"no organization {new.performer_org!r} in the directory",
                       location="performer_org")
    if org.kind not in PERFORMER_ORG_KINDS[new.performer_kind]:
        raise MappingFailed(f"a {org.kind} organization cannot perform a "
                            f"{new.performer_kind} referral", location="performer_org")
    return org.id


def _studies_of_patient(session: Session, uids: Sequence[str], patient_id: int) -> list[int]:
    ids = []
    for uid in dict.fromkeys(uids):
        row = session.execute(select(Study.id, Study.patient_id).where(
            Study.study_instance_uid == uid)).first()
        if row is None:
            raise NotFound(f"study {uid} is not in the archive", location="studies")
        if row.patient_id != patient_id:
            raise MappingFailed(f"study {uid} does not belong to the referral's patient",
                                location="studies")
        ids.append(int(row.id))
    return ids


def load_referral(session: Session, referral_id: int, *, for_update: bool = False) -> Referral:
    query = select(Referral).where(Referral.id == referral_id)
    if for_update:
        query = query.with_for_update()
    referral = session.execute(query).scalar_one_or_none()
    if referral is None:
        raise NotFound(f"no referral {referral_id}", location="id")
    return referral


def move(session: Session, principal: Principal, referral_id: int, wanted: str, *,
         reason: str = "", business_status: str | None = None,
         order_policy: OrderPolicy | None = None, expected_version: int | None = None,
         ) -> Referral:
    """Move a referral's Task to ``wanted``: 409 (nothing changes) when the state machine
    does not allow it, 403 when the caller's side may not, 404 when they may not see it."""
    referral = load_referral(session, referral_id, for_update=True)
    side = side_of(principal, referral)
    if side is None:
        raise NotFound(f"no referral {referral_id}", location="id")
    if expected_version is not None and expected_version != referral.version:
        raise PreconditionFailed(f"the Task is at version {referral.version}")
    wf.check_move(referral.status, wanted)
    if not wf.side_may(side, wanted):
        raise Forbidden(f"the {side} of a referral cannot make it {wanted}",
                        location="Task.status")
    if principal.is_clinician and side == "performer" and referral.owner_id is None:
        referral.owner_id = principal.id
    apply_move(session, referral, wanted, principal.actor, reason, business_status, order_policy)
    return referral


def apply_move(session: Session, referral: Referral, wanted: str, actor: str, reason: str,
               business_status: str | None, order_policy: OrderPolicy | None) -> None:
    """Make a move already checked: the order it creates or cancels, the new status, and
    :func:`record_move`. For callers that checked (:func:`move`, the registry follower)."""
    before = referral.status
    if (wanted == wf.ACCEPTED and referral.performer_kind == "diagnostics"
            and referral.order_id is None):
        referral.order_id = _order_for(session, referral, order_policy or OrderPolicy())
    if wanted in (wf.CANCELLED, wf.FAILED) and referral.order_id is not None:
        _cancel_order(session, referral.order_id, order_policy or OrderPolicy())
    referral.status = wanted
    referral.status_reason = reason
    if business_status is not None:
        referral.business_status = business_status
    referral.version += 1
    referral.updated_at = utcnow()
    session.flush()
    record_move(session, referral, before, wanted, actor, reason)


def record_move(session: Session, referral: Referral, before: str, after: str, actor: str,
                reason: str) -> None:
    """The move's event row, audit record and notification (and the registry's news)."""
    session.add(ReferralEvent(referral_id=referral.id, from_status=before or "-",
                              to_status=after, actor=actor[:128], reason=reason))
    session.flush()
    append_audit(session, actor=actor, action="referral_" + (after.replace("-", "_")),
                 entity="referral", entity_id=str(referral.id),
                 patient_ref=f"Patient/{referral.patient_id}",
                 details={"from": before or None, "to": after})
    queue.enqueue(session, queue=NOTIFY_QUEUE,
                  payload={"referral_id": referral.id, "status": after,
                           "version": referral.version, "reason": reason,
                           "business_status": referral.business_status,
                           "owner_id": referral.owner_id,
                           "updated_at": instant(referral.updated_at)},
                  dedup_key=f"{referral.id}:{referral.version}")
    if referral.source == "registry" and after in REGISTRY_TOLD:
        # The registry hears of what the facility did with its referral (the outbox).
        queue.enqueue(session, queue=REGISTRY_QUEUE,
                      payload={"referral_id": referral.id, "status": after},
                      dedup_key=f"{referral.id}:{after}")


def _order_for(session: Session, referral: Referral, policy: OrderPolicy) -> int:
    """The worklist order a diagnostics referral becomes (the ordinary order path)."""
    patient = session.get(Patient, referral.patient_id)
    assert patient is not None  # a foreign key
    identifiers = [Identifier(i.value, i.issuer, i.id_type) for i in patient.identifiers[:1]]
    code = (CodedValue(referral.code, referral.code_system, referral.code_display)
            if referral.code else None)
    command = OrderCommand(
        action=OrderAction.NEW, patient=PatientData(identifiers=identifiers),
        order=OrderData(placer_number=f"ref-{referral.id}", placer_issuer=PLACER_ISSUER,
                        procedure_code=code,
                        procedure_description=referral.code_display or None,
                        priority=referral.priority.upper()[:16] or None,
                        reason=referral.reason[:64] or None,
                        steps=[StepData(modality=referral.modality,
                                        description=referral.code_display or None)]),
        step_status=StepStatus.SCHEDULED, source="referral")
    return apply_order_command(session, command, policy=policy)


def _cancel_order(session: Session, order_id: int, policy: OrderPolicy) -> None:
    order = session.get(Order, order_id)
    if order is None:
        return
    command = OrderCommand(
        action=OrderAction.CANCEL, patient=PatientData(identifiers=[]),
        order=OrderData(placer_number=order.placer_number, placer_issuer=order.placer_issuer,
                        accession=order.accession),
        step_status=StepStatus.CANCELED, source="referral")
    apply_order_command(session, command, policy=policy)


def add_report(session: Session, principal: Principal, referral_id: int, *,
               conclusion: str, status: str = "final", code: str = "",
               code_display: str = "", study_uid: str | None = None,
               presented_form: Sequence[Mapping[str, Any]] = (), source: str = "api",
               order_policy: OrderPolicy | None = None) -> DiagnosticReport:
    """Record a referral's result; a final one completes the Task (and notifies)."""
    referral = load_referral(session, referral_id, for_update=True)
    side = side_of(principal, referral)
    if side is None:
        raise NotFound(f"no referral {referral_id}", location="id")
    if side == "requester":
        raise Forbidden("the requester of a referral does not report its result",
                        location="DiagnosticReport")
    if status not in REPORT_STATUSES:
        raise MappingFailed(f"unknown DiagnosticReport status {status!r}",
                            location="DiagnosticReport.status")
    if referral.status not in (wf.ACCEPTED, wf.IN_PROGRESS):
        raise Conflict(f"the Task is {referral.status}; a result needs it accepted or "
                       "in-progress", location="Task.status")
    study_id = None
    if study_uid:
        study_id = _studies_of_patient(session, [study_uid], referral.patient_id)[0]
    elif referral.order_id is not None:
        study_id = session.execute(select(Study.id).where(
            Study.order_id == referral.order_id).limit(1)).scalar_one_or_none()
    report = DiagnosticReport(
        referral_id=referral.id, patient_id=referral.patient_id, study_id=study_id,
        status=status, code=code, code_display=code_display, conclusion=conclusion,
        author_id=principal.user_id, presented_form=[dict(f) for f in presented_form],
        source=source, issued_at=utcnow())
    session.add(report)
    session.flush()
    append_audit(session, actor=principal.actor, action="report_create",
                 entity="diagnostic_report", entity_id=str(report.id),
                 patient_ref=f"Patient/{referral.patient_id}",
                 details={"referral": referral.id, "status": status})
    if status in ("final", "amended", "corrected"):
        if principal.is_clinician and referral.owner_id is None:
            referral.owner_id = principal.id
        apply_move(session, referral, wf.COMPLETED, principal.actor, "", "result available",
               order_policy)
    return report


def start_for_order(session: Session, order_id: int, actor: str) -> int | None:
    """A study or an MPPS arrived for a referral's order: its accepted Task becomes
    in-progress. Returns the referral id moved, if any."""
    referral = session.execute(select(Referral).where(
        Referral.order_id == order_id, Referral.status == wf.ACCEPTED)
        .with_for_update()).scalar_one_or_none()
    if referral is None:
        return None
    apply_move(session, referral, wf.IN_PROGRESS, actor, "", "exam performed", None)
    return int(referral.id)
