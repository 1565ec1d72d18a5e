"""A patient's consent to share their studies (FHIR Consent, R4 and R5), read as what the
bridge acts on: whose studies, with whom, until when. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.errors import MappingFailed


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    patient_id: int
    practitioners: tuple[int, ...]
    expires_at: datetime | None


def _local_id(reference: Any, kind: str, location: str) -> int:
    value = str((reference or {}).get("reference") or "")
    tail = value.removeprefix(f"{kind}/")
    if value == tail or not tail.isdigit() or len(tail) > 18:
        raise MappingFailed(f"{location} is a reference to a {kind} of this bridge "
                            f"({kind}/N)", location=location)
    return int(tail)


def read_consent(resource: dict[str, Any], version: str) -> ConsentGrant:
    if resource.get("status") != "active":
        raise MappingFailed("only an active Consent shares studies", location="Consent.status")
    if version == "R5":
        patient = _local_id(resource.get("subject"), "Patient", "Consent.subject")
        provisions = resource.get("provision") or []
        period = resource.get("period") or {}
    else:
        patient = _local_id(resource.get("patient"), "Patient", "Consent.patient")
        provision = resource.get("provision") or {}
        if provision.get("type", "permit") != "permit":
            raise MappingFailed("the bridge records permits only", location="Consent.provision")
        provisions = [provision]
        period = provision.get("period") or {}
    actors = tuple(_local_id(actor.get("reference"), "Practitioner",
                             "Consent.provision.actor.reference")
                   for provision in provisions for actor in provision.get("actor") or [])
    if not actors:
        raise MappingFailed("the Consent names the practitioner it shares with",
                            location="Consent.provision.actor")
    end = period.get("end")
    try:
        expires = datetime.fromisoformat(str(end).replace("Z", "+00:00")) if end else None
    except ValueError:
        raise MappingFailed("the Consent's period end is not a dateTime",
                            location="Consent.provision.period.end") from None
    return ConsentGrant(patient, actors, expires)
