"""ServiceRequest ↔ order mapping (pure): what a ServiceRequest asks of the domain, the
ServiceRequest the domain shows, versions, and the validity of both in R4 and R5."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.config.settings import PROJECT_ROOT
from bridge.domain import StepStatus
from bridge.errors import Conflict, MappingFailed
from bridge.mapping.fhir.outcome import InvalidCode
from bridge.mapping.fhir.service_request import (
    OrderView,
    SourceRecord,
    StepView,
    check_transition,
    read_service_request,
    service_request_resource,
)
from bridge.mapping.fhir.tables import FhirTables, load_fhir_tables
from bridge.mapping.fhir.version import check_resource

KYIV = ZoneInfo("Europe/Kyiv")
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UPDATED = datetime(2031, 5, 1, 7, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def tables() -> FhirTables:
    return load_fhir_tables(PROJECT_ROOT / "mappings")


def service_request(version: str = "R4", **changes: Any) -> dict[str, Any]:
    code = {"coding": [{"system": "http://loinc.org", "code": "24627-2",
                        "display": "CT Chest"}], "text": "CT of the chest"}
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [
            {"type": {"coding": [{"system": V2, "code": "PLAC"}]}, "system": "urn:oid:1.2.3",
             "value": "P-1"},
            {"type": {"coding": [{"system": V2, "code": "ACSN"}]}, "value": "ACC1"},
            {"system": "urn:example:other", "value": "kept-as-sent"},
        ],
        "status": "active",
        "intent": "order",
        "priority": "stat",
        "code": {"concept": code} if version == "R5" else code,
        "subject": {"reference": "Patient/7"},
        "occurrenceDateTime": "2031-05-02T06:30:00Z",
        "authoredOn": "2031-04-30T12:00:00+03:00",
        "requester": {"reference": "Practitioner/3", "display": "Dr Ivan Franko"},
        "note": [{"text": "first"}, {"text": "second"}],
        "performer": [{"type": "Device", "identifier": {"system": "urn:dicom:ae-title",
                                                        "value": "CT_ROOM_7"}}],
    }
    if version == "R5":
        resource["reason"] = [{"concept": {"text": "cough"}}]
        resource["orderDetail"] = [{"parameter": [{
            "code": {"coding": [{"system": DCM, "code": "121139"}]},
            "valueCodeableConcept": {"coding": [{"system": DCM, "code": "CT"}]}}]}]
    else:
        resource["reasonCode"] = [{"text": "cough"}]
        resource["orderDetail"] = [{"coding": [{"system": DCM, "code": "CT"}]}]
    resource.update(changes)
    return resource


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_a_service_request_becomes_an_order_and_one_step(tables: FhirTables,
                                                         version: str) -> None:
    request = read_service_request(service_request(version), tables, version, KYIV)
    order, step = request.order, request.step
    assert (order.placer_number, order.placer_issuer) == ("P-1", "urn:oid:1.2.3")
    assert order.accession == "ACC1" and order.filler_number is None
    assert order.procedure_code is not None
    assert (order.procedure_code.code, order.procedure_code.scheme) == ("24627-2", "LN")
    assert order.procedure_description == "CT of the chest"
    assert order.priority == "STAT"
    assert order.reason == "cough"
    assert order.requesting_physician == "Dr Ivan Franko"
    assert request.step_status is StepStatus.SCHEDULED
    # 06:30 UTC is 09:30 in Kyiv in May (UTC+3): the worklist holds local times.
    assert (step.start_date, step.start_time) == ("20310502", "093000")
    assert (request.issue_date, request.issue_time) == ("20310430", "120000")
    assert step.modality == "CT"
    assert step.station_ae == "CT_ROOM_7"
    assert request.comments == "first\nsecond"
    assert order.steps == [step]


def test_modality_from_a_code_table_and_station_by_modality(tables: FhirTables) -> None:
    resource = service_request(
        code={"coding": [{"system": "http://snomed.info/sct", "code": "113091000"}]},
        performer=None)
    del resource["orderDetail"], resource["performer"]
    step = read_service_request(resource, tables, "R4", KYIV).step
    assert step.modality == "MR"
    assert step.station_ae == "MR_SCANNER_1"  # mappings/fhir/performers.yaml by_modality


def test_a_date_without_time_and_a_period(tables: FhirTables) -> None:
    dated = read_service_request(service_request(occurrenceDateTime="2031-05-02"),
                                 tables, "R4", KYIV)
    assert (dated.step.start_date, dated.step.start_time) == ("20310502", None)
    resource = service_request()
    del resource["occurrenceDateTime"]
    resource["occurrencePeriod"] = {"start": "2031-01-10T08:00:00+00:00"}
    winter = read_service_request(resource, tables, "R4", KYIV)
    assert (winter.step.start_date, winter.step.start_time) == ("20310110", "100000")


@pytest.mark.parametrize(("changes", "location"), [
    ({"status": "finished"}, "ServiceRequest.status"),
    ({"intent": "proposal"}, "ServiceRequest.intent"),
    ({"priority": "whenever"}, "ServiceRequest.priority"),
])
def test_codes_without_a_mapping_are_422_naming_the_element(
        tables: FhirTables, changes: dict[str, Any], location: str) -> None:
    with pytest.raises(InvalidCode) as caught:
        read_service_request(service_request(**changes), tables, "R4", KYIV)
    assert caught.value.location == location


def test_missing_required_elements_and_values_that_do_not_fit(tables: FhirTables) -> None:
    for missing in ("status", "intent", "subject"):
        resource = service_request()
        del resource[missing]
        with pytest.raises(MappingFailed) as caught:
            read_service_request(resource, tables, "R4", KYIV)
        assert caught.value.location == f"ServiceRequest.{missing}"
    long_accession = service_request()
    long_accession["identifier"][1]["value"] = "A" * 17
    with pytest.raises(MappingFailed) as caught:
        read_service_request(long_accession, tables, "R4", KYIV)
    assert caught.value.location == "ServiceRequest.identifier[1].value"
    with pytest.raises(MappingFailed):
        read_service_request(service_request(doNotPerform=True), tables, "R4", KYIV)


def test_status_lifecycle_and_the_registry_word_for_revoked(tables: FhirTables) -> None:
    expected = {"active": StepStatus.SCHEDULED, "on-hold": StepStatus.SUSPENDED,
                "revoked": StepStatus.CANCELED, "entered-in-error": StepStatus.CANCELED,
                "completed": StepStatus.COMPLETED, "recalled": StepStatus.CANCELED,
                "draft": StepStatus.CANCELED}
    for status, step_status in expected.items():
        request = read_service_request(service_request(status=status), tables, "R4", KYIV)
        assert request.step_status is step_status, status


def test_transitions_an_order_cannot_take(tables: FhirTables) -> None:
    check_transition(None, "draft", tables)
    check_transition("SCHEDULED", "on-hold", tables)
    check_transition("COMPLETED", "completed", tables)
    with pytest.raises(Conflict):
        check_transition("COMPLETED", "active", tables)
    with pytest.raises(Conflict):
        check_transition("DISCONTINUED", "revoked", tables)
    with pytest.raises(Conflict):
        check_transition("SCHEDULED", "draft", tables)


# -- domain → ServiceRequest ------------------------------------------------------------

def hl7_order(**changes: Any) -> OrderView:
    values: dict[str, Any] = dict(
        id=34, patient_id=12, status="SCHEDULED", updated_at=UPDATED,
        placer_number="P-1", placer_issuer="HIS", filler_number="F-9",
        accession="ACC1", procedure_code="24627-2", procedure_scheme="LN",
        procedure_meaning="CT Chest", procedure_description="CT Chest", priority="HIGH",
        reason="cough", requesting_physician="Franko^Ivan", admission_id="V77",
        steps=(StepView(sps_id="ACC1", status="SCHEDULED", station_ae="CT_SCANNER_1",
                        modality="CT", start_date="20310502", start_time="093000"),))
    values.update(changes)
    return OrderView(**values)


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_an_order_from_hl7_reads_as_a_valid_service_request(tables: FhirTables,
                                                             version: str) -> None:
    resource = service_request_resource(hl7_order(), tables, version, KYIV)
    check_resource(version, resource, expected_type="ServiceRequest")
    assert resource["id"] == "34"
    assert resource["status"] == "active" and resource["intent"] == "order"
    assert resource["subject"] == {"reference": "Patient/12"}
    assert resource["priority"] == "urgent"
    assert resource["occurrenceDateTime"] == "2031-05-02T09:30:00+03:00"
    assert resource["meta"]["lastUpdated"] == "2031-05-01T07:00:00.000Z"
    types = {i["type"]["coding"][0]["code"]: i for i in resource["identifier"]}
    assert types["PLAC"]["value"] == "P-1"
    assert types["PLAC"]["assigner"] == {"display": "HIS"}  # not a URI: no system
    assert types["ACSN"]["system"] == tables.accession_system
    assert types["FILL"]["value"] == "F-9"
    assert resource["performer"][0]["identifier"]["value"] == "CT_SCANNER_1"
    assert resource["requester"] == {"display": "Ivan Franko"}
    code = resource["code"]["concept"] if version == "R5" else resource["code"]
    assert code["coding"][0] == {"system": "http://loinc.org", "code": "24627-2",
                                 "display": "CT Chest"}


def _as_received(resource: dict[str, Any], tables: FhirTables, version: str) -> OrderView:
    """The order the bridge would hold after receiving ``resource`` (as the service maps it)."""
    request = read_service_request(resource, tables, version, KYIV)
    order, step = request.order, request.step
    code = order.procedure_code
    return OrderView(
        id=34, patient_id=7, status=request.step_status.value, updated_at=UPDATED,
        placer_number=order.placer_number, placer_issuer=order.placer_issuer,
        accession=order.accession, procedure_code=code.code if code else None,
        procedure_scheme=code.scheme if code else None,
        procedure_meaning=code.meaning if code else None,
        procedure_description=order.procedure_description, priority=order.priority,
        reason=order.reason, requesting_physician=order.requesting_physician,
        comments=request.comments, issue_date=request.issue_date,
        issue_time=request.issue_time,
        steps=(StepView(sps_id="ACC1", status=request.step_status.value,
                        station_ae=step.station_ae, modality=step.modality,
                        start_date=step.start_date, start_time=step.start_time),),
        source=SourceRecord(resource=resource, counter=1, status=request.status))


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_what_was_sent_is_returned_while_the_domain_agrees(tables: FhirTables,
                                                           version: str) -> None:
    sent = service_request(version, status="entered-in-error")
    resource = service_request_resource(_as_received(sent, tables, version), tables,
                                        version, KYIV)
    check_resource(version, resource, expected_type="ServiceRequest")
    for key in ("identifier", "status", "priority", "code", "occurrenceDateTime",
                "authoredOn", "requester", "note", "performer", "orderDetail"):
        assert resource[key] == sent[key], key
    assert resource["subject"] == {"reference": "Patient/7"}


def test_elements_the_domain_changed_since_are_rewritten(tables: FhirTables) -> None:
    sent = service_request()
    view = _as_received(sent, tables, "R4")
    changed = OrderView(**{**{f: getattr(view, f) for f in view.__dataclass_fields__},
                           "status": "SUSPENDED", "priority": "ROUTINE",
                           "steps": (StepView(sps_id="ACC1", status="SUSPENDED",
                                              station_ae="CT_ROOM_7", modality="CT",
                                              start_date="20310503",
                                              start_time="101500"),)})
    resource = service_request_resource(changed, tables, "R4", KYIV)
    check_resource("R4", resource, expected_type="ServiceRequest")
    assert resource["status"] == "on-hold"
    assert resource["priority"] == "routine"
    assert resource["occurrenceDateTime"] == "2031-05-03T10:15:00+03:00"
    assert resource["performer"] == sent["performer"]  # unchanged: as sent
    assert resource["note"] == sent["note"]
    assert changed.version_id != view.version_id


def test_the_version_counts_fhir_writes_and_follows_the_domain(tables: FhirTables) -> None:
    first = hl7_order()
    assert first.version_id.startswith("0.")
    assert hl7_order().version_id == first.version_id
    assert hl7_order(priority="STAT").version_id != first.version_id
    written = hl7_order(source=SourceRecord(resource={}, counter=3))
    assert written.version_id.startswith("3.")


def test_a_contained_subject_is_not_left_dangling(tables: FhirTables) -> None:
    sent = service_request(contained=[{"resourceType": "Patient", "id": "subject",
                                       "identifier": [{"value": "MRN1"}]}],
                           subject={"reference": "#subject"})
    resource = service_request_resource(_as_received(sent, tables, "R4"), tables, "R4",
                                        KYIV)
    assert resource["subject"] == {"reference": "Patient/7"}
    assert "contained" not in resource
    check_resource("R4", resource, expected_type="ServiceRequest")


def test_a_stored_resource_is_not_changed_by_building(tables: FhirTables) -> None:
    sent = service_request()
    kept = copy.deepcopy(sent)
    view = _as_received(sent, tables, "R4")
    service_request_resource(hl7_order(source=view.source), tables, "R4", KYIV)
    assert sent == kept
