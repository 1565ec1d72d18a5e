"""A sekmet-fhir server dressed as this facility's referral registry (ESOZ-style): the
facility's Organization, another facility's, and helpers that write referrals as the
registry's users would."""

from __future__ import annotations

import itertools
from typing import Any

from tests.fhir_peer import SekmetPeer

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
FACILITY_SYSTEM = "urn:oid:1.2.804.2.1.1"
PATIENT_SYSTEM = "urn:oid:1.2.804.2.1.7"

_numbers = itertools.count(1)


# ----------------------------------------------------------------------------- the registry


class Registry:
    """The sekmet server as this facility's referral registry: one Organization (this
    facility), another facility, and helpers to write referrals."""

    def __init__(self, peer: SekmetPeer) -> None:
        self.peer = peer
        self.facility = f"FAC-{next(_numbers)}"
        self.org = peer.create({"resourceType": "Organization", "name": "Radiology",
                                "identifier": [{"system": FACILITY_SYSTEM,
                                                "value": self.facility}]})
        self.other_org = peer.create({"resourceType": "Organization", "name": "Elsewhere",
                                      "identifier": [{"system": FACILITY_SYSTEM,
                                                      "value": f"{self.facility}-OTHER"}]})

    def patient(self, mrn: str, family: str = "Шевченко", given: str = "Тарас",
                birth_date: str = "1984-03-09", gender: str = "male") -> dict[str, Any]:
        return self.peer.create({
            "resourceType": "Patient",
            "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                            "system": PATIENT_SYSTEM, "value": mrn}],
            "name": [{"family": family, "given": [given]}],
            "birthDate": birth_date, "gender": gender})

    def referral(self, patient: dict[str, Any], accession: str, *, status: str = "active",
                 intent: str = "order", here: bool = True) -> dict[str, Any]:
        org = self.org if here else self.other_org
        return self.peer.create({
            "resourceType": "ServiceRequest", "status": status, "intent": intent,
            "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                            "system": "urn:oid:1.2.804.2.1.9", "value": accession}],
            "category": [{"coding": [{"system": DCM, "code": "CT"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2",
                                 "display": "CT Chest"}], "text": "CT chest"},
            "subject": {"reference": f"Patient/{patient['id']}"},
            "occurrenceDateTime": "2026-12-01T09:30:00+02:00",
            "performer": [{"reference": f"Organization/{org['id']}"}]})

    def update(self, resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
        body = {**resource, **changes}
        response = self.peer.request("PUT", f"{resource['resourceType']}/{resource['id']}",
                                     json=body, headers={"Prefer": "return=representation"})
        response.raise_for_status()
        updated: dict[str, Any] = response.json()
        return updated

    def delete(self, resource: dict[str, Any]) -> None:
        self.peer.request("DELETE", f"{resource['resourceType']}/{resource['id']}"
                          ).raise_for_status()
