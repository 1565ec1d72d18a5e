"""Audit records as FHIR AuditEvent, in the shape of IHE Basic Audit Log Patterns (BALP),
and as RFC 5424 syslog lines for an audit repository (IHE ATNA transport). Pure.

The event type follows DICOM's audit vocabulary (DCM 110110 Patient Record, 110112 Query,
110114 User Authentication, 110100 Application Activity), the subtype the RESTful
interaction; agents and entities carry identifiers only (Practitioner/N, a token's name,
Patient/N, a study UID), never names.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from bridge.mapping.audit.chain import AuditFields

DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
REST: Final = "http://hl7.org/fhir/restful-interaction"
#: action → (event type code, display, FHIR action code, RESTful interaction)
EVENTS: Final[dict[str, tuple[str, str, str, str]]] = {
    "read": ("110110", "Patient Record", "R", "read"),
    "retrieve": ("110106", "Export", "R", "read"),
    "search": ("110112", "Query", "E", "search-type"),
    "login": ("110114", "User Authentication", "E", "login"),
    "logout": ("110114", "User Authentication", "E", "logout"),
    "share": ("110110", "Patient Record", "C", "create"),
    "share_revoke": ("110110", "Patient Record", "U", "update"),
    "report_create": ("110110", "Patient Record", "C", "create"),
    "delete": ("110110", "Patient Record", "D", "delete"),
}
DEFAULT_EVENT: Final = ("110100", "Application Activity", "U", "update")


def _instant(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _who(actor: str) -> dict[str, Any]:
    if actor.startswith("Practitioner/"):
        return {"reference": actor}
    return {"identifier": {"system": "urn:bridge:actor", "value": actor}}


def audit_event(view: AuditFields, version: str) -> dict[str, Any]:
    code, display, action, interaction = EVENTS.get(view.action, DEFAULT_EVENT)
    failed = view.outcome != "success"
    agent: dict[str, Any] = {"who": _who(view.actor), "requestor": True}
    source = str(view.details.get("source") or "")
    if source and version == "R5":
        agent["networkString"] = source
    elif source:
        agent["network"] = {"address": source, "type": "2"}  # an IP address
    entities: list[dict[str, Any]] = [{"what": {"identifier": {
        "system": f"urn:bridge:{view.entity}", "value": view.entity_id}}}]
    if view.patient_ref:
        patient: dict[str, Any] = {"what": {"reference": view.patient_ref}}
        role = {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                "display": "Patient"}
        if version == "R5":
            patient["role"] = {"coding": [role]}
        else:
            patient["type"] = {"system": "http://terminology.hl7.org/CodeSystem/"
                                         "audit-entity-type", "code": "1", "display": "Person"}
            patient["role"] = role
        entities.insert(0, patient)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "id": str(view.seq), "action": action,
        "recorded": _instant(view.at), "agent": [agent], "entity": entities,
    }
    if version == "R5":
        event["category"] = [{"coding": [{"system": DCM, "code": code, "display": display}]}]
        event["code"] = {"coding": [{"system": REST, "code": interaction}],
                         "text": view.action}
        event["outcome"] = {"code": {"system": "http://terminology.hl7.org/CodeSystem/"
                                               "audit-event-outcome",
                                     "code": "4" if failed else "0"}}
        event["source"] = {"observer": {"display": "bridge"}}
        if view.patient_ref:
            event["patient"] = {"reference": view.patient_ref}
    else:
        event["type"] = {"system": DCM, "code": code, "display": display}
        event["subtype"] = [{"system": REST, "code": interaction, "display": view.action}]
        event["outcome"] = "4" if failed else "0"
        event["source"] = {"observer": {"display": "bridge"},
                           "type": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "security-source-type", "code": "4"}]}
    return event


def syslog_line(view: AuditFields, hostname: str, version: str) -> bytes:
    """One RFC 5424 message: facility authpriv (10), severity notice (5) or warning (4) for
    failures; the AuditEvent as JSON for the message, its seq as MSGID's structured data."""
    severity = 5 if view.outcome == "success" else 4
    pri = 10 * 8 + severity
    body = json.dumps(audit_event(view, version), separators=(",", ":"), ensure_ascii=False)
    header = (f"<{pri}>1 {_instant(view.at)} {hostname or '-'} bridge - AUDIT "
              f'[bridge@32473 seq="{view.seq}"] ')
    return header.encode("utf-8") + b"\xef\xbb\xbf" + body.encode("utf-8")
