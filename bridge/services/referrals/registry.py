"""Referrals pulled from the registry, and the registry told what became of them.

A ServiceRequest the registry sync imports as an order (:mod:`bridge.services.fhir.
registry_sync`) is also a referral here (source ``registry``, its registry id kept): the
facility takes it at once (Task accepted, "used"), and tells the registry through the
``registry_referral`` outbox: the Task at the registry is PUT under a fixed id, the result is
a conditional create, so a retry after the registry was down sends nothing twice. A referral
the registry recalls (revoked, entered-in-error) is cancelled here with its order and step.
What is registry-specific is in ``mappings/fhir/registry_referrals.yaml``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.fhir import FhirClient
from bridge.config.settings import Settings
from bridge.domain import PatientData
from bridge.errors import Rejected
from bridge.jobs.queue import ClaimedJob, RetryPolicy
from bridge.mapping.referrals import workflow as wf
from bridge.mapping.tables import read_table
from bridge.services.auth.directory_sync import registry_user
from bridge.services.auth.principal import token_principal
from bridge.services.referrals.workflow import REGISTRY_QUEUE, apply_move, record_move
from bridge.store.db import read_session
from bridge.store.models import Order, utcnow
from bridge.store.people_models import Organization
from bridge.store.referral_models import DiagnosticReport, Referral

log = logging.getLogger("bridge.referrals")
__all__ = ["REGISTRY_QUEUE", "RETRY_POLICY", "RegistryTell", "referral_aware"]
REGISTRY_PRINCIPAL = token_principal(0, "registry", "integration")
RETRY_POLICY: Final = RetryPolicy(max_attempts=20, base_seconds=2.0, max_seconds=600.0)
Apply = Callable[..., tuple[int, bool]]


@dataclass(frozen=True, slots=True)
class RegistryRules:
    task_id_prefix: str = "bridge-ref-"
    used_business_status: str = "used"
    ended_statuses: frozenset[str] = frozenset({"revoked", "entered-in-error"})
    report_identifier_system: str = "urn:bridge:diagnostic-report"
    registry_practitioner_role: str = "family_doctor"

    @classmethod
    def load(cls, mappings_dir: Path) -> RegistryRules:
        path = mappings_dir / "fhir" / "registry_referrals.yaml"
        if not path.exists():
            return cls()
        table = read_table(path)
        default = cls()
        return cls(task_id_prefix=str(table.get("task_id_prefix", default.task_id_prefix)),
                   used_business_status=str(table.get("used_business_status", "used")),
                   ended_statuses=frozenset(str(s) for s in table.get(
                       "ended_statuses", ["revoked", "entered-in-error"])),
                   report_identifier_system=str(table.get(
                       "report_identifier_system", default.report_identifier_system)),
                   registry_practitioner_role=str(table.get(
                       "registry_practitioner_role", "family_doctor")))


def referral_aware(apply: Apply, settings: Settings) -> Apply:
    """``apply`` (the registry sync's import of a ServiceRequest as an order), followed by
    the referral it is: taken (accepted) when new, cancelled when the registry ended it."""
    rules = RegistryRules.load(settings.mappings_dir)

    def apply_and_follow(session: Session, resource: Mapping[str, Any], settings: Settings,
                         *, subject: PatientData | None = None) -> tuple[int, bool]:
        order_id, created = apply(session, resource, settings, subject=subject)
        follow_referral(session, order_id, resource, settings, rules)
        return order_id, created

    return apply_and_follow


def _requester(session: Session, resource: Mapping[str, Any], rules: RegistryRules) -> int:
    requester = resource.get("requester") or {}
    return int(registry_user(session, str(requester.get("reference") or ""),
                             role=rules.registry_practitioner_role,
                             display=str(requester.get("display", ""))).id)


def follow_referral(session: Session, order_id: int, resource: Mapping[str, Any],
                    settings: Settings, rules: RegistryRules) -> None:
    external = str(resource.get("id") or "")
    if not external:
        return
    referral = session.execute(select(Referral).where(
        Referral.source == "registry", Referral.external_id == external)).scalar_one_or_none()
    status = str(resource.get("status") or "")
    if referral is None:
        if status in rules.ended_statuses or status != "active":
            return
        order = session.get(Order, order_id)
        assert order is not None
        org = _facility(session, settings)
        code = ((resource.get("code") or {}).get("coding") or [{}])[0]
        now = utcnow()
        referral = Referral(
            patient_id=order.patient_id, requester_id=_requester(session, resource, rules),
            performer_kind="diagnostics", performer_org_id=org, owner_id=None,
            code=str(code.get("code", "")), code_system=str(code.get("system", "")),
            code_display=str(code.get("display") or (resource.get("code") or {}).get("text")
                             or ""), modality=None, reason="",
            priority=str(resource.get("priority") or "routine"), status=wf.REQUESTED,
            business_status="", status_reason="", order_id=order_id, source="registry",
            external_id=external, version=1, created_at=now, updated_at=now)
        session.add(referral)
        session.flush()
        record_move(session, referral, "", wf.REQUESTED, REGISTRY_PRINCIPAL.actor, "")
        apply_move(session, referral, wf.ACCEPTED, REGISTRY_PRINCIPAL.actor, "",
               rules.used_business_status, None)
        return
    if status in rules.ended_statuses and referral.status not in wf.ENDED:
        apply_move(session, referral, wf.CANCELLED, REGISTRY_PRINCIPAL.actor,
               f"{status} at the registry", None, None)


def _facility(session: Session, settings: Settings) -> int | None:
    value = settings.fhir_facility_identifier.split("|")[-1]
    if not value:
        return None
    found = session.execute(select(Organization.id).where(
        Organization.identifier == value)).scalar_one_or_none()
    return int(found) if found is not None else None


class RegistryTell:
    """The ``registry_referral`` queue: tell the registry a referral was taken, ended, or
    completed (with its result). Registry faults are :class:`Transient` (retried)."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 client: FhirClient | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.rules = RegistryRules.load(settings.mappings_dir)
        self.client = client or FhirClient(settings.fhir_registry_url,
                                           timeout=settings.fhir_timeout_seconds)

    def __call__(self, job: ClaimedJob, stopping: threading.Event) -> None:
        with read_session(self.sessions) as session:
            referral = session.get(Referral, int(job.payload["referral_id"]))
            if referral is None or referral.source != "registry" or not referral.external_id:
                raise Rejected(f"job {job.id}: no registry referral {job.payload}")
            report = session.execute(select(DiagnosticReport).where(
                DiagnosticReport.referral_id == referral.id).order_by(
                DiagnosticReport.id.desc()).limit(1)).scalar_one_or_none()
            status = str(job.payload.get("status") or referral.status)
            external, referral_id = referral.external_id, referral.id
            business = referral.business_status
            report_values = (report.id, report.status, report.conclusion, report.code,
                             report.code_display) if report is not None else None
        service_request = self.client.read(f"ServiceRequest/{external}")
        subject = service_request.get("subject")
        task: dict[str, Any] = {
            "resourceType": "Task", "id": f"{self.rules.task_id_prefix}{referral_id}",
            "identifier": [{"system": "urn:bridge:referral", "value": str(referral_id)}],
            "status": status, "intent": "order",
            "basedOn": [{"reference": f"ServiceRequest/{external}"}],
            "focus": {"reference": f"ServiceRequest/{external}"},
            "businessStatus": {"text": business or status},
        }
        if subject:
            task["for"] = subject
        performer = service_request.get("performer") or []
        if performer:
            task["owner"] = performer[0]
        if status == wf.COMPLETED and report_values is not None:
            task["output"] = [{"type": {"text": "result"}, "valueReference": {
                "reference": self._send_report(report_values, external, subject)}}]
        self.client.put(f"Task/{task['id']}", task)
        log.info("registry told: referral %s is %s", referral_id, status)

    def _send_report(self, values: tuple[int, str, str, str, str], external: str,
                     subject: Any) -> str:
        report_id, status, conclusion, code, display = values
        system = self.rules.report_identifier_system
        resource: dict[str, Any] = {
            "resourceType": "DiagnosticReport", "status": status,
            "identifier": [{"system": system, "value": str(report_id)}],
            "code": {"text": display or code or "Result"},
            "basedOn": [{"reference": f"ServiceRequest/{external}"}],
            "conclusion": conclusion}
        if subject:
            resource["subject"] = subject
        created = self.client.create("DiagnosticReport", resource,
                                     if_none_exist=f"identifier={system}|{report_id}")
        return f"DiagnosticReport/{created['id']}"
