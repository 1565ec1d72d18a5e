"""DICOM study index → FHIR ImagingStudy and the WADO-RS Endpoint, for R4 and R5 (pure).

The records here are plain values read from the archive index (:mod:`bridge.services.
fhir_imaging` loads them); what the study is about (the patient and the order) comes as
references already resolved by the caller: ``Patient/<patients.id>`` on the bridge's own
API, the target server's ids when publishing.

The mapping follows the DICOM ↔ FHIR table of the ImagingStudy resource (R4, and the R5
changes), and avoids the known quirks of other converters:

- identifier: StudyInstanceUID as system ``urn:dicom:uid``, value ``urn:oid:<uid>``; R4 also
  carries the AccessionNumber as an identifier of type ACSN (v2-0203), R5 only in
  ``basedOn.identifier`` (where R5 moved it);
- modality: system ``http://dicom.nema.org/resources/ontology/DCM`` (the URI, not "DCM"):
  a Coding in R4, a CodeableConcept in R5, per study (ModalitiesInStudy) and per series;
- started: StudyDate + StudyTime in the configured local zone **with its offset** for that
  date (summer or winter time); the index keeps no TimezoneOffsetFromUTC, and a time is never
  written as if it were UTC. A date without a time stays a plain date;
- numberOfSeries / numberOfInstances: the index counters (never left out);
- series bodySite: BodyPartExamined through DICOM CID 4031 (PS3.16) to SNOMED CT; a value
  without a code keeps its text as the Coding's display (R4) or concept text (R5);
- instance sopClass: system ``urn:ietf:rfc:3986``, code ``urn:oid:<uid>``;
- description: StudyDescription in ``description`` (not in ``note``);
- endpoint: the bridge's WADO-RS base as an Endpoint (connection type ``dicom-wado-rs``).

Status: ``available`` as soon as the study has an instance (FHIR: "at least one instance has
been associated"), also while more are arriving: the instances received are retrievable
through the endpoint. ``registered`` only for a study without instances. Publishing waits
for stability anyway (one publication per change); ``entered-in-error`` marks a study
withdrawn from the archive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from pydicom.uid import UID

from bridge.errors import MappingFailed

FhirVersion = Literal["R4", "R5"]

DICOM_UID_SYSTEM: Final = "urn:dicom:uid"
DCM_SYSTEM: Final = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED_SYSTEM: Final = "http://snomed.info/sct"
URI_SYSTEM: Final = "urn:ietf:rfc:3986"
V2_0203_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONNECTION_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
WADO_RS: Final = "dicom-wado-rs"
#: The id of the bridge's own Endpoint resource (``Endpoint/wado-rs`` on its FHIR API).
ENDPOINT_ID: Final = "wado-rs"
ENDPOINT_MIME_TYPES: Final = ("application/dicom", "application/dicom+json")
#: A viewer URL is an IHE Invoke Image Display endpoint (the code IHE's imaging profiles use
#: for "open this study in a viewer"), contained in the ImagingStudy it opens.
IID: Final = "ihe-iid"
VIEWER_ENDPOINT_ID: Final = "viewer"

AVAILABLE, REGISTERED, ENTERED_IN_ERROR = "available", "registered", "entered-in-error"

#: DICOM coding scheme designators (PS3.16 Section 8) → FHIR code system URIs.
CODING_SCHEMES: Final[Mapping[str, str]] = {
    "DCM": DCM_SYSTEM,
    "SCT": SNOMED_SYSTEM,
    "SRT": SNOMED_SYSTEM,
    "LN": "http://loinc.org",
    "RADLEX": "http://radlex.org",
    "RDLX": "http://radlex.org",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "UCUM": "http://unitsofmeasure.org",
}

#: BodyPartExamined (0018,0015) defined terms → SNOMED CT (code, meaning), from DICOM CID
#: 4031 "Common Anatomic Regions" (PS3.16 Annex L). ``tests/unit/test_fhir_imaging_study.py``
#: checks every entry against pydicom's copy of CID 4031.
BODY_PARTS: Final[Mapping[str, tuple[str, str]]] = {
    "ABDOMEN": ("818981001", "Abdomen"),
    "ABDOMENPELVIS": ("818982008", "Abdomen and Pelvis"),
    "ANKLE": ("70258002", "Ankle joint"),
    "BREAST": ("76752008", "Breast"),
    "CHEST": ("816094009", "Chest"),
    "CHESTABDOMEN": ("416550000", "Chest and Abdomen"),
    "CHESTABDPELVIS": ("416775004", "Chest, Abdomen and Pelvis"),
    "CLAVICLE": ("51299004", "Clavicle"),
    "COCCYX": ("64688005", "Coccyx"),
    "COLON": ("71854001", "Colon"),
    "CSPINE": ("122494005", "Cervical spine"),
    "CTSPINE": ("1217257000", "Cervico-thoracic spine"),
    "ELBOW": ("16953009", "Elbow joint"),
    "EXTREMITY": ("66019005", "Extremity"),
    "EYE": ("81745001", "Eye"),
    "FEMUR": ("71341001", "Femur"),
    "FOOT": ("56459004", "Foot"),
    "FOREARM": ("14975008", "Forearm"),
    "HAND": ("85562004", "Hand"),
    "HEAD": ("69536005", "Head"),
    "HEADNECK": ("774007", "Head and Neck"),
    "HEART": ("80891009", "Heart"),
    "HIP": ("24136001", "Hip joint"),
    "HUMERUS": ("85050009", "Humerus"),
    "JAW": ("661005", "Jaw region"),
    "KNEE": ("72696002", "Knee"),
    "LARYNX": ("4596009", "Larynx"),
    "LEG": ("30021000", "Lower leg"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "LSSPINE": ("1217253001", "Lumbo-sacral spine"),
    "MEDIASTINUM": ("72410000", "Mediastinum"),
    "NECK": ("45048000", "Neck"),
    "PANCREAS": ("15776009", "Pancreas"),
    "PELVIS": ("816092008", "Pelvis"),
    "PROSTATE": ("41216001", "Prostate"),
    "SACRUM": ("54735007", "Sacrum"),
    "SHOULDER": ("16982005", "Shoulder"),
    "SKULL": ("89546000", "Skull"),
    "SPINE": ("421060004", "Spine"),
    "SSPINE": ("1217254007", "Sacro-coccygeal Spine"),
    "STERNUM": ("56873002", "Sternum"),
    "STOMACH": ("69695003", "Stomach"),
    "THIGH": ("68367000", "Thigh"),
    "TLSPINE": ("1217256009", "Thoraco-lumbar spine"),
    "TMJ": ("53620006", "Temporomandibular joint"),
    "TSPINE": ("122495006", "Thoracic spine"),
    "WHOLEBODY": ("38266002", "Entire body"),
    "WRIST": ("74670003", "Wrist joint"),
    "ZYGOMA": ("13881006", "Zygoma"),
}

_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    sop_instance_uid: str
    sop_class_uid: str
    number: int | None = None


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    series_instance_uid: str
    modality: str
    number: int | None = None
    description: str = ""
    body_part: str = ""
    num_instances: int = 0
    instances: tuple[InstanceRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class StudyRecord:
    """One study as the index has it (``studies`` row with its series and instances)."""

    study_instance_uid: str
    study_date: str = ""
    study_time: str = ""
    description: str = ""
    #: ReferringPhysicianName (DICOM PN) from the file; the order's wins when known.
    referring_physician: str = ""
    #: ModalitiesInStudy, in index order.
    modalities: tuple[str, ...] = ()
    num_series: int = 0
    num_instances: int = 0
    #: AccessionNumber as the modality sent it; the order's wins when known.
    accession: str = ""
    #: When the index row last changed (meta.lastUpdated), UTC.
    updated_at: datetime | None = None
    series: tuple[SeriesRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class CodeValue:
    """A coded procedure as the order keeps it (DICOM scheme designator or a URI)."""

    code: str
    scheme: str = ""
    meaning: str = ""


@dataclass(frozen=True, slots=True)
class IdentifierValue:
    value: str
    system: str | None = None


@dataclass(frozen=True, slots=True)
class FhirNaming:
    """How DICOM/HL7 namespaces are written in FHIR, as the site's tables say
    (``mappings/fhir/identifiers.yaml`` and ``coding_systems.yaml``; see
    :mod:`bridge.mapping.fhir.tables`): issuer → Identifier.system, the system of accession
    numbers, and coding scheme designator → Coding.system (over :data:`CODING_SCHEMES`)."""

    issuer_systems: Mapping[str, str] = field(default_factory=dict)
    accession_system: str | None = None
    coding_systems: Mapping[str, str] = field(default_factory=dict)

    def system_for(self, issuer: str) -> str | None:
        return identifier_system(issuer, self.issuer_systems)

    def coding_system_for(self, scheme: str) -> str | None:
        return code_system(scheme, self.coding_systems)


@dataclass(frozen=True, slots=True)
class SubjectLink:
    """ImagingStudy.subject: a literal reference (``Patient/12``) and, where its system is
    known, the patient's primary identifier (PatientID + issuer)."""

    reference: str
    identifier: IdentifierValue | None = None


@dataclass(frozen=True, slots=True)
class OrderLink:
    """The order the study was made for (the MIS values: ``egress.load_subjects``).

    ``reference`` is ``ServiceRequest/<id>`` where the ServiceRequest is known (the bridge's
    own ``orders.id``, or the target's id); None gives a logical reference by accession.
    ``ordered`` is False for a study with no MIS order (an unscheduled exam linked to its
    patient): no ``basedOn`` at all, whatever accession the modality typed."""

    reference: str | None = None
    ordered: bool = True
    accession: str | None = None
    procedure: CodeValue | None = None
    procedure_description: str | None = None
    referring_physician: str | None = None


# ----------------------------------------------------------------------------- helpers


def study_identifier_value(study_instance_uid: str) -> str:
    return f"urn:oid:{study_instance_uid}"


def study_identifier_token(study_instance_uid: str) -> str:
    """The search token of a study on any FHIR server: ``urn:dicom:uid|urn:oid:<uid>``."""
    return f"{DICOM_UID_SYSTEM}|{study_identifier_value(study_instance_uid)}"


def identifier_system(issuer: str, table: Mapping[str, str] | None = None) -> str | None:
    """The FHIR identifier system of an HL7/DICOM assigning authority (issuer).

    ``table`` (issuer → system) wins; an issuer that is a URI already (``urn:oid:...``,
    ``http://...``: what the FHIR intake keeps as the issuer of a system it has no entry for)
    is kept. A local namespace (``HOSP``) has no known system: None, and the caller matches by
    value alone. The same rule as :meth:`bridge.mapping.fhir.tables.FhirTables.system_for`.
    """
    issuer = issuer.strip()
    if not issuer:
        return None
    if table and issuer in table:
        return table[issuer]
    return issuer if _URI_SCHEME.match(issuer) else None


def code_system(scheme: str, table: Mapping[str, str] | None = None) -> str | None:
    """FHIR system of a DICOM coding scheme designator: ``table`` first, then
    :data:`CODING_SCHEMES`, and a scheme that is a URI already is kept."""
    scheme = scheme.strip()
    if not scheme:
        return None
    if table and scheme in table:
        return table[scheme]
    if scheme.upper() in CODING_SCHEMES:
        return CODING_SCHEMES[scheme.upper()]
    return scheme if _URI_SCHEME.match(scheme) else None


def started(study_date: str, study_time: str, zone: str) -> str | None:
    """StudyDate + StudyTime as a FHIR dateTime in ``zone`` with its UTC offset on that date.

    Keeps the precision given (``HH``, ``HHMM``, seconds, fractions up to microseconds); a date
    alone stays a date (FHIR needs no zone for it); an unreadable date gives None (the element
    is left out rather than guessed). A wall time that does not exist or is ambiguous at a
    daylight-saving change takes the offset before the change (``fold=0``)."""
    day = _parse_da(study_date)
    if day is None:
        return None
    parsed = _parse_tm(study_time)
    if parsed is None:
        return day.isoformat()
    moment, precision = parsed
    return datetime.combine(day, moment, tzinfo=ZoneInfo(zone)).isoformat(timespec=precision)


def _parse_da(value: str) -> date | None:
    match = _DA.match(value.strip())
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def _parse_tm(value: str) -> tuple[time, str] | None:
    """DICOM TM → (time, isoformat timespec). FHIR dateTime with a time needs seconds, so
    ``HH`` and ``HHMM`` become ``HH:00:00`` and ``HH:MM:00``."""
    match = _TM.match(value.strip().replace(":", ""))
    if match is None:
        return None
    hour, minute, second = int(match[1]), int(match[2] or 0), int(match[3] or 0)
    fraction = match[4] or ""
    if second == 60:  # a leap second (TM allows it); Python's time does not
        second = 59
    try:
        moment = time(hour, minute, second, int(fraction.ljust(6, "0")) if fraction else 0)
    except ValueError:
        return None
    if not fraction:
        return moment, "seconds"
    return moment, "milliseconds" if len(fraction) <= 3 else "microseconds"


def person_display(pn: str) -> str | None:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``, first group) as display text, in
    the order the components are written (family name first, as the MIS sent it)."""
    first_group = pn.split("=", 1)[0]
    parts = [part.strip() for part in first_group.split("^") if part.strip()]
    return " ".join(parts) or None


def _modality_coding(modality: str) -> dict[str, Any]:
    return {"system": DCM_SYSTEM, "code": modality}


def _modality(modality: str, version: FhirVersion) -> dict[str, Any]:
    coding = _modality_coding(modality)
    return coding if version == "R4" else {"coding": [coding]}


def _body_site(body_part: str, version: FhirVersion) -> dict[str, Any] | None:
    term = body_part.strip().upper()
    if not term:
        return None
    known = BODY_PARTS.get(term)
    coding: dict[str, Any] = (
        {"system": SNOMED_SYSTEM, "code": known[0], "display": known[1]} if known
        else {"display": body_part.strip()}
    )
    if version == "R4":
        return coding
    concept: dict[str, Any] = {"coding": [coding]} if known else {"text": body_part.strip()}
    return {"concept": concept}


def _sop_class(uid: str) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": URI_SYSTEM, "code": f"urn:oid:{uid}"}
    name = UID(uid).name
    if name and name != uid:
        coding["display"] = name
    return coding


def _procedure(order: OrderLink, naming: FhirNaming) -> dict[str, Any] | None:
    text = (order.procedure_description or "").strip()
    concept: dict[str, Any] = {}
    if order.procedure and order.procedure.code.strip():
        coding: dict[str, Any] = {"code": order.procedure.code.strip()}
        system = naming.coding_system_for(order.procedure.scheme)
        if system:
            coding["system"] = system
        if order.procedure.meaning.strip():
            coding["display"] = order.procedure.meaning.strip()
        concept["coding"] = [coding]
    if text:
        concept["text"] = text
    return concept or None


def _acsn(accession: str, system: str | None) -> dict[str, Any]:
    identifier: dict[str, Any] = {"type": {"coding": [{"system": V2_0203_SYSTEM,
                                                       "code": "ACSN"}]}}
    if system:
        identifier["system"] = system
    identifier["value"] = accession
    return identifier


def _unsigned(value: int | None) -> int | None:
    return value if value is not None and value >= 0 else None


def _instant(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------- resources


def imaging_study(
    study: StudyRecord,
    *,
    subject: SubjectLink,
    order: OrderLink | None,
    version: FhirVersion,
    timezone: str,
    endpoint_reference: str,
    resource_id: str | None = None,
    status: str | None = None,
    meta_source: str | None = None,
    naming: FhirNaming | None = None,
    viewer_url: str | None = None,
) -> dict[str, Any]:
    """The ImagingStudy of ``study`` as FHIR JSON (``version`` R4 or R5).

    ``endpoint_reference`` is the reference to the WADO-RS Endpoint (``Endpoint/wado-rs``);
    ``viewer_url``, when given, is a second endpoint: a contained IHE IID Endpoint (``#viewer``);
    ``resource_id`` is left out for a resource to be created or conditionally updated;
    ``meta_source`` marks who wrote it (the bridge, on a target server); ``naming`` gives the
    accession's system and the procedure code's system.
    """
    order = order or OrderLink()
    naming = naming or FhirNaming()
    accession = (order.accession or study.accession or "").strip()
    resource: dict[str, Any] = {"resourceType": "ImagingStudy"}
    if resource_id is not None:
        resource["id"] = resource_id
    meta: dict[str, Any] = {}
    if study.updated_at is not None and resource_id is not None:
        meta["lastUpdated"] = _instant(study.updated_at)
    if meta_source:
        meta["source"] = meta_source
    if meta:
        resource["meta"] = meta
    if viewer_url:
        resource["contained"] = [viewer_endpoint(viewer_url, version=version)]
    identifiers: list[dict[str, Any]] = [{"use": "official", "system": DICOM_UID_SYSTEM,
                                          "value": study_identifier_value(
                                              study.study_instance_uid)}]
    if version == "R4" and accession:
        identifiers.append(_acsn(accession, naming.accession_system))
    resource["identifier"] = identifiers
    resource["status"] = status or (AVAILABLE if study.num_instances > 0 else REGISTERED)
    modalities = [m for m in dict.fromkeys(m.strip() for m in study.modalities) if m]
    if modalities:
        resource["modality"] = [_modality(m, version) for m in modalities]
    reference: dict[str, Any] = {"reference": subject.reference, "type": "Patient"}
    if subject.identifier is not None and subject.identifier.system:
        reference["identifier"] = {"system": subject.identifier.system,
                                   "value": subject.identifier.value}
    resource["subject"] = reference
    when = started(study.study_date, study.study_time, timezone)
    if when:
        resource["started"] = when
    if order.ordered and (order.reference or accession):
        based_on: dict[str, Any] = {"type": "ServiceRequest"}
        if order.reference:
            based_on["reference"] = order.reference
        if accession:
            based_on["identifier"] = _acsn(accession, naming.accession_system)
        resource["basedOn"] = [based_on]
    referrer = person_display(order.referring_physician or study.referring_physician)
    if referrer:
        resource["referrer"] = {"display": referrer}
    resource["endpoint"] = [{"reference": endpoint_reference}, *(
        [{"reference": f"#{VIEWER_ENDPOINT_ID}"}] if viewer_url else [])]
    resource["numberOfSeries"] = study.num_series
    resource["numberOfInstances"] = study.num_instances
    procedure = _procedure(order, naming)
    if procedure is not None:
        if version == "R4":
            resource["procedureCode"] = [procedure]
        else:
            resource["procedure"] = [{"concept": procedure}]
    if study.description.strip():
        resource["description"] = study.description.strip()
    if study.series:
        resource["series"] = [_series(series, version) for series in study.series]
    return resource


def _series(series: SeriesRecord, version: FhirVersion) -> dict[str, Any]:
    item: dict[str, Any] = {"uid": series.series_instance_uid}
    number = _unsigned(series.number)
    if number is not None:
        item["number"] = number
    # Modality is required on a series; an object without one is still an image of the study.
    item["modality"] = _modality(series.modality.strip() or "OT", version)
    if series.description.strip():
        item["description"] = series.description.strip()
    item["numberOfInstances"] = series.num_instances
    body_site = _body_site(series.body_part, version)
    if body_site is not None:
        item["bodySite"] = body_site
    if series.instances:
        item["instance"] = [_instance(instance) for instance in series.instances]
    return item


def _instance(instance: InstanceRecord) -> dict[str, Any]:
    item: dict[str, Any] = {"uid": instance.sop_instance_uid,
                            "sopClass": _sop_class(instance.sop_class_uid)}
    number = _unsigned(instance.number)
    if number is not None:
        item["number"] = number
    return item


def endpoint(address: str, *, version: FhirVersion, name: str,
             resource_id: str | None = ENDPOINT_ID) -> dict[str, Any]:
    """The Endpoint of a DICOMweb WADO-RS base ``address`` (no trailing slash)."""
    address = address.rstrip("/")
    resource: dict[str, Any] = {"resourceType": "Endpoint"}
    if resource_id is not None:
        resource["id"] = resource_id
    resource["identifier"] = [{"system": URI_SYSTEM, "value": address}]
    resource["status"] = "active"
    connection = {"system": CONNECTION_TYPE_SYSTEM, "code": WADO_RS}
    payload_type = {"text": "DICOM WADO-RS"}
    if version == "R4":
        resource["connectionType"] = connection
        resource["name"] = name
        resource["payloadType"] = [payload_type]
        resource["payloadMimeType"] = list(ENDPOINT_MIME_TYPES)
    else:
        resource["connectionType"] = [{"coding": [connection]}]
        resource["name"] = name
        resource["payload"] = [{"type": [payload_type], "mimeType": list(ENDPOINT_MIME_TYPES)}]
    resource["address"] = address
    return resource


def viewer_endpoint(url: str, *, version: FhirVersion) -> dict[str, Any]:
    """The contained Endpoint of a viewer link (an HTML page: IHE Invoke Image Display)."""
    connection = {"system": CONNECTION_TYPE_SYSTEM, "code": IID}
    payload_type = {"text": "DICOM IID"}
    resource: dict[str, Any] = {"resourceType": "Endpoint", "id": VIEWER_ENDPOINT_ID,
                                "status": "active", "name": "Open the study in the viewer"}
    if version == "R4":
        resource["connectionType"] = connection
        resource["payloadType"] = [payload_type]
        resource["payloadMimeType"] = ["text/html"]
    else:
        resource["connectionType"] = [{"coding": [connection]}]
        resource["payload"] = [{"type": [payload_type], "mimeType": ["text/html"]}]
    resource["address"] = url
    return resource


def endpoint_identifier_token(address: str) -> str:
    return f"{URI_SYSTEM}|{address.rstrip('/')}"


# ----------------------------------------------------------------------------- validation


def validate(resource: Mapping[str, Any], version: FhirVersion) -> None:
    """Check ``resource`` with fhir.resources (R4B models for R4); raise
    :class:`~bridge.errors.MappingFailed` naming the first problems."""
    model = _model(str(resource.get("resourceType", "")), version)
    try:
        model.model_validate(dict(resource))
    except Exception as exc:  # pydantic's ValidationError, or a model's own check
        errors = getattr(exc, "errors", None)
        detail = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
            for err in (errors() if callable(errors) else [])[:3]
        ) or str(exc)[:300]
        raise MappingFailed(f"{resource.get('resourceType')} is not valid FHIR {version}: "
                            f"{detail}") from None


def _model(resource_type: str, version: FhirVersion) -> Any:
    import importlib

    if not resource_type.isalpha():
        raise MappingFailed(f"unknown resource type {resource_type!r}")
    package = "fhir.resources.R4B" if version == "R4" else "fhir.resources"
    module = importlib.import_module(f"{package}.{resource_type.lower()}")
    return getattr(module, resource_type)
