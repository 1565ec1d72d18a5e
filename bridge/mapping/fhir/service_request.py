"""ServiceRequest ↔ order, driven by ``mappings/fhir``. Pure: no I/O.

In: :func:`read_service_request` turns a (validated) ServiceRequest into what it asks of the
domain — the order's keys and fields, one procedure step, the status the steps take, the
subject reference to resolve, and the worklist values the order table keeps beside the HL7
ones (ImagingServiceRequestComments from ``note``, IssueDate/Time from ``authoredOn``).
Every code the bridge acts on is checked against the tables; a missing mapping is a 422
naming the element.

Out: :func:`service_request_resource` builds the ServiceRequest of an order. The domain is
the truth: the JSON last received over FHIR is returned as sent, except for the elements the
domain decides (status, identifiers, subject, code, priority, reason, requester, encounter,
authoredOn, note, occurrence, performer, modality), each of which is kept as sent only while
it still says what the domain holds, and otherwise rewritten from the domain. An order made
by HL7 has no such JSON and is described from the domain alone.

Versions: ``meta.versionId`` is ``<n>.<digest>``: ``n`` counts the FHIR writes of the
resource (0 for an order never written over FHIR), ``digest`` is a hash of the domain
values the resource shows, so a change made through HL7, MPPS or the API also gives a new
version (and a stale ``If-Match`` fails) without writing anything on read.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bridge.domain import CodedValue, OrderData, StepData, StepStatus
from bridge.errors import Conflict, MappingFailed
from bridge.mapping.fhir.datatypes import (
    JSONDict,
    checked,
    coded_value,
    coding,
    concept_text,
    contained,
    display_to_pn,
    drop_unreferenced_contained,
    fhir_datetime_to_local,
    first,
    human_name_to_pn,
    identifier_token,
    instant,
    local_to_fhir_datetime,
    make_identifier,
    pn_display,
    reference_parts,
    type_codes,
)
from bridge.mapping.fhir.outcome import InvalidCode
from bridge.mapping.fhir.tables import FHIR_REQUEST_STATUSES, FhirTables

SR = "ServiceRequest"
#: ImagingServiceRequestComments (0040,2400) is LT: 10240 characters.
MAX_COMMENTS = 10240
#: DCM code 121139 "Modality", the R5 orderDetail parameter naming the modality.
_MODALITY_PARAMETER = "121139"
_OCCURRENCE_KEYS = ("occurrenceDateTime", "occurrencePeriod", "occurrenceTiming")


@dataclass(slots=True)
class ServiceRequestInput:
    """What one ServiceRequest asks of the domain."""

    order: OrderData
    step: StepData
    #: ServiceRequest.status as sent, and the step status it maps to.
    status: str
    step_status: StepStatus
    #: ServiceRequest.subject as sent (resolved to a patient by the service).
    subject: Mapping[str, Any]
    comments: str | None = None
    issue_date: str | None = None
    issue_time: str | None = None

    @property
    def has_key(self) -> bool:
        data = self.order
        return bool(data.placer_number or data.accession or data.filler_number)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """The JSON last received over FHIR for a resource, and how many FHIR writes it had."""

    resource: Mapping[str, Any]
    counter: int
    status: str | None = None


@dataclass(frozen=True, slots=True)
class StepView:
    sps_id: str
    status: str
    station_ae: str | None = None
    modality: str | None = None
    start_date: str | None = None
    start_time: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as the database has it now (the current patient: merges followed)."""

    id: int
    patient_id: int
    status: str
    updated_at: datetime
    placer_number: str | None = None
    placer_issuer: str = ""
    filler_number: str | None = None
    filler_issuer: str = ""
    accession: str | None = None
    procedure_code: str | None = None
    procedure_scheme: str | None = None
    procedure_meaning: str | None = None
    procedure_description: str | None = None
    priority: str | None = None
    reason: str | None = None
    requesting_physician: str | None = None
    admission_id: str | None = None
    comments: str | None = None
    issue_date: str | None = None
    issue_time: str | None = None
    steps: tuple[StepView, ...] = ()
    source: SourceRecord | None = field(default=None, compare=False)

    def digest(self) -> str:
        """A short hash of every domain value the resource shows."""
        values = repr((self.patient_id, self.status, self.placer_number, self.placer_issuer,
                       self.filler_number, self.filler_issuer, self.accession,
                       self.procedure_code, self.procedure_scheme, self.procedure_meaning,
                       self.procedure_description, self.priority, self.reason,
                       self.requesting_physician, self.admission_id, self.comments,
                       self.issue_date, self.issue_time, self.steps))
        return hashlib.sha256(values.encode()).hexdigest()[:10]

    @property
    def version_id(self) -> str:
        return f"{self.source.counter if self.source else 0}.{self.digest()}"


# -- ServiceRequest → domain ------------------------------------------------------------

def read_service_request(resource: Mapping[str, Any], tables: FhirTables, version: str,
                         zone: ZoneInfo) -> ServiceRequestInput:
    """What ``resource`` (already checked by fhir.resources) asks of the domain."""
    status = resource.get("status")
    if not isinstance(status, str) or not status:
        raise MappingFailed("status missing", location=f"{SR}.status")
    step_status = tables.status_to_steps.get(status)
    if step_status is None:
        raise InvalidCode(f"status {status!r} has no mapping", location=f"{SR}.status")
    intent = resource.get("intent")
    if not isinstance(intent, str) or not intent:
        raise MappingFailed("intent missing", location=f"{SR}.intent")
    if intent not in tables.order_intents:
        raise InvalidCode(f"intent {intent!r} is not an order the bridge schedules",
                          location=f"{SR}.intent")
    if resource.get("doNotPerform") is True:
        raise MappingFailed("a ServiceRequest not to perform cannot be scheduled",
                            location=f"{SR}.doNotPerform")
    subject = resource.get("subject")
    if not isinstance(subject, Mapping) or not subject:
        raise MappingFailed("subject missing", location=f"{SR}.subject")

    order = OrderData()
    _read_identifiers(resource, tables, order)
    procedure = _procedure_code(resource, tables, version)
    if procedure is not None:
        checked(procedure.code, 64, f"{SR}.code.coding.code", "code")
        checked(procedure.meaning, 256, f"{SR}.code.coding.display", "display")
        order.procedure_code = procedure
    description = _procedure_text(resource, version)
    order.procedure_description = checked(description, 256, f"{SR}.code.text", "text")
    priority = resource.get("priority")
    if priority is not None:
        mapped = tables.priority_to_dicom.get(str(priority))
        if mapped is None:
            raise InvalidCode(f"priority {priority!r} has no mapping", location=f"{SR}.priority")
        order.priority = mapped
    order.reason = checked(_reason(resource, version), 1024, _reason_path(version), "reason")
    order.requesting_physician = checked(_requester(resource), 320, f"{SR}.requester",
                                         "requester")
    order.admission_id = checked(_admission(resource), 64, f"{SR}.encounter.identifier.value")

    step = StepData()
    step.modality = modality_of(resource, tables, version)
    step.start_date, step.start_time = occurrence_of(resource, zone)
    step.station_ae = station_of(resource, tables, step.modality)
    if procedure is not None:
        step.protocol_codes = [procedure]
    step.description = checked(procedure.meaning if procedure and procedure.meaning
                               else description, 256, f"{SR}.code")
    order.steps = [step]

    issue_date, issue_time = fhir_datetime_to_local(resource.get("authoredOn"), zone)
    return ServiceRequestInput(
        order=order, step=step, status=status, step_status=step_status, subject=subject,
        comments=checked(_notes(resource), MAX_COMMENTS, f"{SR}.note", "note"),
        issue_date=issue_date, issue_time=issue_time,
    )


def check_transition(current: str | None, new_status: str, tables: FhirTables) -> None:
    """Refuse a status change the order's life does not allow (409, nothing changes).

    An ended order (completed, discontinued) takes only its own status again (so a
    re-import is harmless); an initial-only status (draft) cannot return to an order that
    has been scheduled.
    """
    if current is None:
        return
    step_status = tables.status_to_steps[new_status]
    ended = {StepStatus.COMPLETED.value, StepStatus.DISCONTINUED.value}
    if current in ended and step_status.value != current:
        raise Conflict(f"the order has ended ({current.lower()}); it cannot become "
                       f"{new_status}", location=f"{SR}.status")
    if new_status in tables.initial_only and current != step_status.value:
        raise Conflict(f"an order that was scheduled cannot become {new_status} again",
                       location=f"{SR}.status")


def _read_identifiers(resource: Mapping[str, Any], tables: FhirTables, order: OrderData) -> None:
    seen: dict[str, str] = {}
    for n, identifier in enumerate(resource.get("identifier") or []):
        where = f"{SR}.identifier[{n}]"
        key = order_key(identifier, tables)
        token = identifier_token(identifier)
        if key is None or token is None:
            continue
        system, value = token
        if key in seen and seen[key] != value:
            raise MappingFailed(f"two different {key} identifiers", location=where)
        seen[key] = value
        if key == "accession":
            order.accession = checked(value, 16, f"{where}.value", "accession number")
        elif key == "placer":
            order.placer_number = checked(value, 64, f"{where}.value")
            order.placer_issuer = checked(tables.issuer_for(system), 64,
                                          f"{where}.system", "issuer") or ""
        else:
            order.filler_number = checked(value, 64, f"{where}.value")
            order.filler_issuer = checked(tables.issuer_for(system), 64,
                                          f"{where}.system", "issuer") or ""


def order_key(identifier: Any, tables: FhirTables) -> str | None:
    """``accession``, ``placer``, ``filler`` or None for an Identifier of a ServiceRequest."""
    if not isinstance(identifier, Mapping):
        return None
    for code in type_codes(identifier, tables.type_system):
        if code in tables.order_types:
            return tables.order_types[code]
    system = identifier.get("system")
    if isinstance(system, str):
        if system in tables.order_systems:
            return tables.order_systems[system]
        if system == tables.accession_system:
            return "accession"
    return None


def _code_concept(resource: Mapping[str, Any], version: str) -> Any:
    code = resource.get("code")
    if version == "R5":
        return code.get("concept") if isinstance(code, Mapping) else None
    return code


def _procedure_code(resource: Mapping[str, Any], tables: FhirTables,
                    version: str) -> CodedValue | None:
    return coded_value(_code_concept(resource, version), tables.system_to_scheme)


def _procedure_text(resource: Mapping[str, Any], version: str) -> str | None:
    return concept_text(_code_concept(resource, version))


def _reason(resource: Mapping[str, Any], version: str) -> str | None:
    if version == "R5":
        concepts = [r.get("concept") for r in resource.get("reason") or []
                    if isinstance(r, Mapping)]
        texts = [concept_text(c) or _display(r.get("reference"))
                 for r, c in zip(resource.get("reason") or [], concepts, strict=False)]
    else:
        texts = [concept_text(c) for c in resource.get("reasonCode") or []]
        texts += [_display(r) for r in resource.get("reasonReference") or []]
    found = [t for t in texts if t]
    return "; ".join(found) if found else None


def _reason_path(version: str) -> str:
    return f"{SR}.reason" if version == "R5" else f"{SR}.reasonCode"


def _display(reference: Any) -> str | None:
    if isinstance(reference, Mapping) and isinstance(reference.get("display"), str):
        return str(reference["display"]).strip() or None
    return None


def _requester(resource: Mapping[str, Any]) -> str | None:
    """A Practitioner (or PractitionerRole) requester as PN: a contained one's name, else the
    reference's display. An Organization requests no physician."""
    requester = resource.get("requester")
    if not isinstance(requester, Mapping):
        return None
    inner = contained(resource, requester.get("reference"))
    if inner is not None:
        if inner.get("resourceType") in ("Practitioner", "PractitionerRole"):
            return human_name_to_pn(inner.get("name")) or display_to_pn(requester.get("display"))
        return None
    kind = requester.get("type") or (reference_parts(requester.get("reference")) or ("",))[0]
    if kind in ("Organization", "Device", "Patient", "RelatedPerson"):
        return None
    return display_to_pn(requester.get("display"))


def _admission(resource: Mapping[str, Any]) -> str | None:
    encounter = resource.get("encounter")
    if isinstance(encounter, Mapping):
        token = identifier_token(encounter.get("identifier"))
        if token is not None:
            return token[1]
    return None


def _notes(resource: Mapping[str, Any]) -> str | None:
    texts = [str(n["text"]).strip() for n in resource.get("note") or []
             if isinstance(n, Mapping) and isinstance(n.get("text"), str) and n["text"].strip()]
    return "\n".join(texts) if texts else None


def occurrence_of(resource: Mapping[str, Any], zone: ZoneInfo) -> tuple[str | None, str | None]:
    """occurrence[x] → the step's scheduled start (local date and time)."""
    if "occurrenceDateTime" in resource:
        return fhir_datetime_to_local(resource["occurrenceDateTime"], zone)
    period = resource.get("occurrencePeriod")
    if isinstance(period, Mapping):
        return fhir_datetime_to_local(period.get("start"), zone)
    timing = resource.get("occurrenceTiming")
    if isinstance(timing, Mapping):
        return fhir_datetime_to_local(first(timing.get("event")), zone)
    return None, None


def _modality_concepts(resource: Mapping[str, Any], version: str) -> list[Any]:
    """Where a modality may be said: code, category, orderDetail (in that order)."""
    concepts: list[Any] = [_code_concept(resource, version)]
    concepts += list(resource.get("category") or [])
    for detail in resource.get("orderDetail") or []:
        if version == "R5" and isinstance(detail, Mapping):
            concepts += [p.get("valueCodeableConcept") for p in detail.get("parameter") or []
                         if isinstance(p, Mapping)]
        else:
            concepts.append(detail)
    return concepts


def modality_of(resource: Mapping[str, Any], tables: FhirTables, version: str) -> str | None:
    concepts = _modality_concepts(resource, version)
    for concept in concepts:
        for item in _codings(concept):
            code = str(item.get("code")).upper()
            if item.get("system") == tables.dicom_system and code in tables.modalities:
                return code
    for concept in concepts:
        for item in _codings(concept):
            found = tables.modality_codes.get((str(item.get("system") or ""),
                                               str(item.get("code"))))
            if found:
                return found
    return None


def _codings(concept: Any) -> list[Mapping[str, Any]]:
    if not isinstance(concept, Mapping):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, Mapping) and c.get("code")]


def station_of(resource: Mapping[str, Any], tables: FhirTables,
               modality: str | None) -> str | None:
    """The Scheduled Station AE: a Device performer with an AE-title identifier, else a
    performer listed in the station table, else the modality's default station."""
    for n, performer in enumerate(resource.get("performer") or []):
        if not isinstance(performer, Mapping):
            continue
        reference = performer.get("reference")
        inner = contained(resource, reference)
        identifiers = [performer.get("identifier")]
        kind = performer.get("type") or (reference_parts(reference) or ("",))[0]
        if inner is not None:
            identifiers += list(inner.get("identifier") or [])
            kind = inner.get("resourceType")
        for identifier in identifiers:
            token = identifier_token(identifier)
            if token is None:
                continue
            if kind == "Device" and token[0] in tables.device_ae_title_systems:
                return _ae_title(token[1], f"{SR}.performer[{n}].identifier.value")
            station = tables.station_for_performer(None, token)
            if station:
                return station
        station = tables.station_for_performer(reference if isinstance(reference, str)
                                               else None, None)
        if station:
            return station
    return tables.station_by_modality.get(modality or "")


def _ae_title(value: str, where: str) -> str:
    if len(value) > 16 or not value.isascii() or "\\" in value:
        raise MappingFailed("not a DICOM AE title (16 ASCII characters)", location=where)
    return value


# -- domain → ServiceRequest ------------------------------------------------------------

def service_request_resource(view: OrderView, tables: FhirTables, version: str,
                             zone: ZoneInfo) -> JSONDict:
    """The ServiceRequest of an order (see the module docstring for what comes from where)."""
    source = dict(view.source.resource) if view.source is not None else {}
    said = _said(source, tables, version, zone)
    resource: JSONDict = {"resourceType": SR, "id": str(view.id), "meta": {
        "versionId": view.version_id, "lastUpdated": instant(view.updated_at)}}
    for key, value in source.items():
        if key not in ("resourceType", "id", "meta"):
            resource[key] = copy.deepcopy(value)
    resource["status"] = _status(view, source, tables)
    resource.setdefault("intent", "order")
    _put(resource, "identifier", _identifiers(view, source.get("identifier"), tables))
    resource["subject"] = {"reference": f"Patient/{view.patient_id}"}

    if not (said is not None and _same_code(said, view)):
        _put(resource, "code", _code(view, tables, version))
    if not (said is not None and said.order.priority == view.priority):
        _put(resource, "priority", tables.priority_from_dicom.get(view.priority or ""))
    if not (said is not None and said.order.reason == view.reason):
        _put_reason(resource, view.reason, version)
    if not (said is not None and
            said.order.requesting_physician == view.requesting_physician):
        display = pn_display(view.requesting_physician)
        _put(resource, "requester", {"display": display} if display else None)
    if not (said is not None and said.order.admission_id == view.admission_id):
        _put(resource, "encounter", {"identifier": {"value": view.admission_id}}
             if view.admission_id else None)
    if not (said is not None and
            (said.issue_date, said.issue_time) == (view.issue_date, view.issue_time)):
        _put(resource, "authoredOn", local_to_fhir_datetime(view.issue_date, view.issue_time,
                                                            zone))
    if not (said is not None and said.comments == view.comments):
        _put(resource, "note", [{"text": view.comments}] if view.comments else None)

    step = view.steps[0] if view.steps else None
    if step is not None:
        if not (said is not None and
                (said.step.start_date, said.step.start_time) == (step.start_date,
                                                                 step.start_time)):
            for key in _OCCURRENCE_KEYS:
                resource.pop(key, None)
            _put(resource, "occurrenceDateTime",
                 local_to_fhir_datetime(step.start_date, step.start_time, zone))
        if not (said is not None and said.step.station_ae == step.station_ae):
            _put(resource, "performer", [_device(step.station_ae, tables)]
                 if step.station_ae else None)
        if not (said is not None and said.step.modality == step.modality):
            _put(resource, "orderDetail", _order_detail(step.modality, tables, version))
    drop_unreferenced_contained(resource)
    return _ordered(resource)


def _said(source: Mapping[str, Any], tables: FhirTables, version: str,
          zone: ZoneInfo) -> ServiceRequestInput | None:
    """What the stored JSON says in domain terms; None when there is none or the tables no
    longer map it (then every domain-owned element is rewritten)."""
    if not source:
        return None
    try:
        return read_service_request(source, tables, version, zone)
    except MappingFailed:
        return None


def _status(view: OrderView, source: Mapping[str, Any], tables: FhirTables) -> str:
    sent = source.get("status")
    if (isinstance(sent, str) and sent in FHIR_REQUEST_STATUSES
            and tables.status_to_steps.get(sent) == view.status):
        return sent
    return tables.status_from_steps.get(view.status, "unknown")


def _identifiers(view: OrderView, sent: Any, tables: FhirTables) -> list[JSONDict]:
    """The identifiers as sent where they agree with the order's keys; the order's keys
    the sender did not give (or that changed) appended from the domain."""
    domain = {"placer": (view.placer_number, view.placer_issuer),
              "filler": (view.filler_number, view.filler_issuer),
              "accession": (view.accession, "")}
    kept: list[JSONDict] = []
    covered: set[str] = set()
    for identifier in sent if isinstance(sent, list) else []:
        key = order_key(identifier, tables)
        if key is None:
            kept.append(copy.deepcopy(identifier))
            continue
        token = identifier_token(identifier)
        number, issuer = domain[key]
        if token is None or token[1] != number or (
                key != "accession" and tables.issuer_for(token[0]) != issuer):
            continue
        kept.append(copy.deepcopy(identifier))
        covered.add(key)
    for key, code in (("placer", "PLAC"), ("filler", "FILL"), ("accession", "ACSN")):
        number, issuer = domain[key]
        if number and key not in covered:
            system = tables.accession_system if key == "accession" else tables.system_for(issuer)
            kept.append(_typed_identifier(code, system, number, issuer, tables))
    return kept


def _typed_identifier(code: str, system: str | None, value: str, issuer: str,
                      tables: FhirTables) -> JSONDict:
    return make_identifier(value, system=system, issuer=issuer, type_code=code,
                      type_system=tables.type_system)


def _same_code(said: ServiceRequestInput, view: OrderView) -> bool:
    code = said.order.procedure_code
    return ((code.code if code else None) == view.procedure_code
            and (code.scheme or None if code else None) == (view.procedure_scheme or None))


def _code(view: OrderView, tables: FhirTables, version: str) -> JSONDict | None:
    text = view.procedure_description or view.procedure_meaning
    concept: JSONDict = {}
    if view.procedure_code:
        concept["coding"] = [coding(tables.coding_system_for(view.procedure_scheme),
                                    view.procedure_code, view.procedure_meaning)]
    if text:
        concept["text"] = text
    if not concept:
        return None
    return {"concept": concept} if version == "R5" else concept


def _put_reason(resource: JSONDict, reason: str | None, version: str) -> None:
    if version == "R5":
        _put(resource, "reason", [{"concept": {"text": reason}}] if reason else None)
    else:
        resource.pop("reasonReference", None)
        _put(resource, "reasonCode", [{"text": reason}] if reason else None)


def _device(station_ae: str, tables: FhirTables) -> JSONDict:
    performer: JSONDict = {"type": "Device", "display": station_ae}
    if tables.device_ae_title_systems:
        performer["identifier"] = {"system": tables.device_ae_title_systems[0],
                                   "value": station_ae}
    return performer


def _order_detail(modality: str | None, tables: FhirTables, version: str) -> Any:
    if not modality:
        return None
    concept = {"coding": [coding(tables.dicom_system, modality)]}
    if version == "R5":
        return [{"parameter": [{
            "code": {"coding": [coding(tables.dicom_system, _MODALITY_PARAMETER, "Modality")]},
            "valueCodeableConcept": concept}]}]
    return [concept]


def _put(resource: JSONDict, key: str, value: Any) -> None:
    if value is None or value == []:
        resource.pop(key, None)
    else:
        resource[key] = value


#: The order FHIR's JSON examples use, so answers read naturally (JSON has no order).
_ORDER = ("resourceType", "id", "meta", "text", "contained", "extension", "identifier",
          "basedOn", "replaces", "requisition", "status", "intent", "category", "priority",
          "doNotPerform", "code", "orderDetail", "subject", "encounter", *_OCCURRENCE_KEYS,
          "authoredOn", "requester", "performerType", "performer", "reasonCode",
          "reasonReference", "reason", "note")


def _ordered(resource: JSONDict) -> JSONDict:
    head = {k: resource[k] for k in _ORDER if k in resource}
    return head | {k: v for k, v in resource.items() if k not in head}
