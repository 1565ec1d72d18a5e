"""HL7 v2 referrals and results applied to the same workflow as the API and FHIR.

A REF comes from the MIS (a system): the referring practitioner is the PRD with role RP,
named by their directory identifier; the referred-to party (PRD RT) is a practitioner (the
owner) or a department (the performing organization). An ORU^R01 is the performer's result
for the referral whose order it names.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from bridge.domain import ReferralCommand, ResultCommand
from bridge.errors import MappingFailed, NotFound
from bridge.mapping.referrals import workflow as wf
from bridge.services.auth.principal import token_principal
from bridge.services.referrals.workflow import (
    PLACER_ISSUER,
    NewReferral,
    add_report,
    create_referral,
    move,
)
from bridge.services.worklist.orders import OrderPolicy
from bridge.store.models import Order
from bridge.store.people_models import Organization, User
from bridge.store.referral_models import Referral

#: Who an HL7 message acts as: the MIS, a system.
HL7_PRINCIPAL = token_principal(0, "hl7", "integration")


def _username_of(session: Session, identifier: str | None, location: str) -> str | None:
    if not identifier:
        return None
    username = session.execute(select(User.username).where(
        User.identifier == identifier)).scalar_one_or_none()
    if username is None:
        raise NotFound(f"practitioner {identifier} is not in the directory", location=location)
    return str(username)


def apply_referral(session: Session, command: ReferralCommand, policy: OrderPolicy) -> None:
    """Apply a REF; ``command.answer`` gets the referral's status and id for the RRI."""
    existing = session.execute(select(Referral).where(
        Referral.source == "hl7", Referral.external_id == command.external_id)
    ).scalar_one_or_none()
    if command.action == "new":
        if existing is not None:  # a resend of the same referral: answer its state
            command.answer = (existing.status, existing.id)
            return
        command.answer = _create(session, command)
        return
    if existing is None:
        raise NotFound(f"no referral {command.external_id} from this MIS", location="RF1-6")
    if command.action == "cancel" and existing.status != wf.CANCELLED:
        move(session, HL7_PRINCIPAL, existing.id, wf.CANCELLED, reason="cancelled by the MIS",
             order_policy=policy)
    elif command.action == "modify":
        if existing.status in wf.ENDED:
            raise MappingFailed(f"the referral is {existing.status}", location="RF1-1")
        existing.reason = command.reason or existing.reason
        existing.priority = command.priority or existing.priority
        existing.version += 1
        session.flush()
    command.answer = (existing.status, existing.id)


def _create(session: Session, command: ReferralCommand) -> tuple[str, int]:
    requester = _username_of(session, command.requester, "PRD-7")
    if requester is None:
        raise MappingFailed("the referring provider (PRD role RP) is missing", location="PRD-7")
    owner = org = None
    if command.performer:
        owner = session.execute(select(User.username).where(
            User.identifier == command.performer)).scalar_one_or_none()
        if owner is None:
            org = session.execute(select(Organization.identifier).where(
                Organization.identifier == command.performer)).scalar_one_or_none()
            if org is None:
                raise NotFound(f"referred-to provider {command.performer} is not in the "
                               "directory", location="PRD-7")
    patient = command.patient.primary
    referral = create_referral(session, HL7_PRINCIPAL, NewReferral(
        patient=patient, performer_kind=command.performer_kind, performer_org=org,
        owner=owner, requester=requester, code=command.code, code_system=command.code_system,
        code_display=command.code_display, modality=command.modality, reason=command.reason,
        priority=command.priority, source="hl7", external_id=command.external_id))
    return referral.status, referral.id


def apply_result(session: Session, command: ResultCommand, policy: OrderPolicy) -> None:
    """Record an ORU^R01 as the result of the referral whose order it names."""
    conditions: list[ColumnElement[bool]] = []
    if command.placer_number:
        conditions.append((Order.placer_number == command.placer_number)
                          & (Order.placer_issuer == PLACER_ISSUER))
    if command.accession:
        conditions.append(Order.accession == command.accession)
    if not conditions:
        raise MappingFailed("the result names no order (OBR-2 or OBR-18)", location="OBR-2")
    referral_id = session.execute(
        select(Referral.id).join(Order, Order.id == Referral.order_id)
        .where(or_(*conditions)).limit(1)).scalar_one_or_none()
    if referral_id is None:
        raise NotFound("no referral has the order this result names", location="OBR-2")
    add_report(session, HL7_PRINCIPAL, int(referral_id), conclusion=command.conclusion,
               status=command.status, code=command.code, code_display=command.code_display,
               source="hl7", order_policy=policy)
