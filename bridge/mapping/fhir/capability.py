"""The CapabilityStatement: what ``/fhir`` really does, built from the same tables the
routes use (:data:`bridge.mapping.fhir.search.SEARCH_PARAMS`), so it cannot drift. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bridge.mapping.fhir.datatypes import JSONDict, instant
from bridge.mapping.fhir.search import INCLUDES, SEARCH_PARAMS
from bridge.mapping.fhir.version import fhir_version_number

#: The definition of each standard search parameter the bridge takes.
_DEFINITIONS = {
    "_id": "http://hl7.org/fhir/SearchParameter/Resource-id",
    "_lastUpdated": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
    "Patient.identifier": "http://hl7.org/fhir/SearchParameter/Patient-identifier",
    "ServiceRequest.identifier": "http://hl7.org/fhir/SearchParameter/clinical-identifier",
    "ServiceRequest.subject": "http://hl7.org/fhir/SearchParameter/ServiceRequest-subject",
    "ServiceRequest.patient": "http://hl7.org/fhir/SearchParameter/clinical-patient",
    "ServiceRequest.status": "http://hl7.org/fhir/SearchParameter/ServiceRequest-status",
    "ImagingStudy.identifier": "http://hl7.org/fhir/SearchParameter/clinical-identifier",
    "ImagingStudy.patient": "http://hl7.org/fhir/SearchParameter/clinical-patient",
    "ImagingStudy.subject": "http://hl7.org/fhir/SearchParameter/ImagingStudy-subject",
    "ImagingStudy.status": "http://hl7.org/fhir/SearchParameter/ImagingStudy-status",
}


@dataclass(frozen=True, slots=True)
class ResourceCapability:
    type: str
    interactions: tuple[str, ...]
    #: name → (type, documentation)
    search_params: dict[str, tuple[str, str]] = field(default_factory=dict)
    search_include: tuple[str, ...] = ()
    conditional_create: bool = False
    conditional_update: bool = False
    versioning: str = "no-version"


def domain_resources() -> list[ResourceCapability]:
    """Patient and ServiceRequest: the resources written through to the domain."""
    writes = ("read", "search-type", "create", "update")
    return [
        ResourceCapability(type=kind, interactions=writes, search_params=SEARCH_PARAMS[kind],
                           search_include=tuple(sorted(INCLUDES[kind])),
                           conditional_create=True, conditional_update=True,
                           versioning="versioned-update")
        for kind in ("Patient", "ServiceRequest")
    ]


def capability_statement(version: str, base_url: str, software_version: str,
                         resources: list[ResourceCapability], published: datetime) -> JSONDict:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(published),
        "publisher": "bridge",
        "kind": "instance",
        "software": {"name": "bridge", "version": software_version},
        "implementation": {"description": "bridge: HL7 v2 / FHIR / DICOM integration engine",
                           "url": base_url},
        "fhirVersion": fhir_version_number(version),
        "format": ["json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Patient and ServiceRequest are the bridge's patients and orders "
                             "(the worklist); changes drive the DICOM Modality Worklist.",
            "security": {
                "cors": False,
                "description": "Bearer API token (Authorization: Bearer brg_...): the viewer "
                               "role reads and searches, the integration role writes. "
                               "/metadata is open.",
            },
            "resource": [_resource(r) for r in sorted(resources, key=lambda r: r.type)],
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    }


def _resource(capability: ResourceCapability) -> JSONDict:
    kind = capability.type
    entry: JSONDict = {
        "type": kind,
        "interaction": [{"code": code} for code in capability.interactions],
        "versioning": capability.versioning,
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": capability.conditional_create,
        "conditionalRead": "not-supported",
        "conditionalUpdate": capability.conditional_update,
        "conditionalDelete": "not-supported",
    }
    if capability.search_include:
        entry["searchInclude"] = list(capability.search_include)
    params = []
    for name, (param_type, documentation) in capability.search_params.items():
        param: JSONDict = {"name": name, "type": param_type, "documentation": documentation}
        definition = _DEFINITIONS.get(name) or _DEFINITIONS.get(f"{kind}.{name}")
        if definition:
            param["definition"] = definition
        params.append(param)
    if params:
        entry["searchParam"] = params
    return entry
