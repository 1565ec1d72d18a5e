"""Patient ↔ domain patient mapping (pure), valid in R4 and R5."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.config.settings import PROJECT_ROOT
from bridge.errors import MappingFailed
from bridge.mapping.fhir.outcome import InvalidCode
from bridge.mapping.fhir.patient import PatientView, patient_resource, read_patient
from bridge.mapping.fhir.service_request import SourceRecord
from bridge.mapping.fhir.tables import FhirTables, load_fhir_tables
from bridge.mapping.fhir.version import check_resource

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
UPDATED = datetime(2031, 5, 1, 7, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def tables() -> FhirTables:
    return load_fhir_tables(PROJECT_ROOT / "mappings")


def patient(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:1.2.804.1", "value": "NI-1",
             "type": {"coding": [{"system": V2, "code": "NI"}]}},
            {"system": "urn:oid:1.2.804.2", "value": "MRN-1",
             "type": {"coding": [{"system": V2, "code": "MR"}]}},
            {"value": "LOCAL-9", "assigner": {"display": "HOSP"}},
        ],
        "name": [{"use": "old", "family": "Old"},
                 {"use": "official", "family": "Ґалаґан", "given": ["Олена", "Петрівна"],
                  "prefix": ["Dr"]}],
        "gender": "female",
        "birthDate": "1980-05-01",
        "telecom": [{"system": "phone", "value": "+380000000"}],
    }
    resource.update(changes)
    return resource


def test_a_patient_in_domain_terms(tables: FhirTables) -> None:
    data = read_patient(patient(), tables)
    assert [(i.value, i.issuer, i.id_type) for i in data.identifiers] == [
        ("MRN-1", "urn:oid:1.2.804.2", "MR"),  # MR is preferred as the PatientID
        ("NI-1", "urn:oid:1.2.804.1", "NI"),
        ("LOCAL-9", "HOSP", ""),
    ]
    assert data.name == "Ґалаґан^Олена^Петрівна^Dr"
    assert (data.sex, data.birth_date) == ("F", "19800501")


def test_the_primary_authority_wins_as_in_hl7(tables: FhirTables) -> None:
    data = read_patient(patient(), tables, primary_authority="HOSP")
    assert data.primary.value == "LOCAL-9"


def test_unsaid_and_partial_values(tables: FhirTables) -> None:
    bare = read_patient({"resourceType": "Patient", "identifier": [{"value": "X"}],
                         "birthDate": "1980"}, tables)
    assert (bare.name, bare.sex, bare.birth_date) == (None, None, None)
    unknown = read_patient(patient(gender="unknown"), tables)
    assert unknown.sex == ""  # clears what is stored


def test_what_cannot_be_a_domain_patient(tables: FhirTables) -> None:
    with pytest.raises(MappingFailed) as caught:
        read_patient(patient(identifier=[{"system": "urn:x"}]), tables)
    assert caught.value.location == "Patient.identifier"
    with pytest.raises(InvalidCode) as caught:
        read_patient(patient(gender="robot"), tables)
    assert caught.value.location == "Patient.gender"
    with pytest.raises(MappingFailed) as caught:
        read_patient(patient(identifier=[{"value": "X" * 65}]), tables)
    assert caught.value.location == "Patient.identifier[0].value"


def view(**changes: Any) -> PatientView:
    values: dict[str, Any] = dict(
        id=12, updated_at=UPDATED, name="Ґалаґан^Олена^Петрівна^Dr", birth_date="19800501",
        sex="F", identifiers=(("MRN-1", "urn:oid:1.2.804.2", "MR"),
                              ("NI-1", "urn:oid:1.2.804.1", "NI"),
                              ("LOCAL-9", "HOSP", "")))
    values.update(changes)
    return PatientView(**values)


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_a_patient_from_hl7_reads_as_a_valid_patient(tables: FhirTables, version: str) -> None:
    resource = patient_resource(view(), tables)
    check_resource(version, resource, expected_type="Patient")
    assert resource["id"] == "12"
    assert [i["value"] for i in resource["identifier"]] == ["MRN-1", "NI-1", "LOCAL-9"]
    assert resource["identifier"][2]["assigner"] == {"display": "HOSP"}
    assert resource["name"] == [{"use": "official", "family": "Ґалаґан",
                                 "given": ["Олена", "Петрівна"], "prefix": ["Dr"]}]
    assert (resource["gender"], resource["birthDate"]) == ("female", "1980-05-01")


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_what_was_sent_comes_back_unless_the_domain_changed(tables: FhirTables,
                                                            version: str) -> None:
    sent = patient()
    same = patient_resource(view(source=SourceRecord(sent, counter=2)), tables)
    check_resource(version, same, expected_type="Patient")
    for key in ("name", "gender", "birthDate", "telecom"):
        assert same[key] == sent[key], key
    assert same["meta"]["versionId"].startswith("2.")
    renamed = patient_resource(view(name="Шевченко^Тарас", sex="M",
                                    source=SourceRecord(sent, counter=2)), tables)
    assert renamed["name"] == [{"use": "official", "family": "Шевченко", "given": ["Тарас"]}]
    assert renamed["gender"] == "male"
    assert renamed["telecom"] == sent["telecom"]
    assert renamed["meta"]["versionId"] != same["meta"]["versionId"]


def test_a_merged_patient_points_to_the_survivor(tables: FhirTables) -> None:
    resource = patient_resource(view(merged_into_id=15), tables)
    check_resource("R4", resource, expected_type="Patient")
    assert resource["active"] is False
    assert resource["link"] == [{"other": {"reference": "Patient/15"}, "type": "replaced-by"}]
