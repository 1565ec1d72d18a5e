"""Every error under /fhir is an OperationOutcome with the right status; resources are
checked against the configured FHIR version; the maps load and refuse bad tables; the
CapabilityStatement is valid and says what the search code takes."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.config.settings import PROJECT_ROOT
from bridge.errors import (
    BridgeError,
    Conflict,
    MappingFailed,
    NotFound,
    Rejected,
    Transient,
)
from bridge.mapping.fhir.capability import capability_statement, domain_resources
from bridge.mapping.fhir.outcome import (
    InvalidCode,
    InvalidReference,
    NotAllowed,
    PreconditionFailed,
    UnsupportedFormat,
    outcome_for,
)
from bridge.mapping.fhir.search import SEARCH_PARAMS
from bridge.mapping.fhir.tables import load_fhir_tables
from bridge.mapping.fhir.version import check_resource, model_for
from bridge.mapping.tables import TableError


@pytest.mark.parametrize(("error", "status", "code"), [
    (Rejected("x"), 400, "structure"),
    (MappingFailed("x"), 422, "invalid"),
    (InvalidCode("x"), 422, "code-invalid"),
    (InvalidReference("x"), 422, "not-found"),
    (NotFound("x"), 404, "not-found"),
    (Conflict("x"), 409, "conflict"),
    (PreconditionFailed("x"), 412, "conflict"),
    (NotAllowed("x"), 405, "not-supported"),
    (UnsupportedFormat("x"), 415, "not-supported"),
    (UnsupportedFormat("x", status=406), 406, "not-supported"),
    (Transient("x"), 503, "transient"),
    (BridgeError("x"), 500, "exception"),
    (KeyError("patient Ґалаґан"), 500, "exception"),
])
@pytest.mark.parametrize("version", ["R4", "R5"])
def test_each_error_kind_has_its_status(error: BaseException, status: int, code: str,
                                        version: str) -> None:
    answered_status, outcome = outcome_for(error)
    assert (answered_status, outcome["issue"][0]["code"]) == (status, code)
    check_resource(version, outcome, expected_type="OperationOutcome")
    if not isinstance(error, BridgeError):
        assert "Ґалаґан" not in str(outcome)  # an unexpected error's text may hold PHI


def test_only_fhirpaths_are_expressions() -> None:
    located = outcome_for(MappingFailed("x", location="ServiceRequest.identifier[1].value"))
    assert located[1]["issue"][0]["expression"] == ["ServiceRequest.identifier[1].value"]
    for location in ("If-Match", "ORC-2", "body"):
        assert "expression" not in outcome_for(Rejected("x", location=location))[1]["issue"][0]


def test_resources_are_checked_in_the_configured_version() -> None:
    assert model_for("R4", "ServiceRequest").__module__.startswith("fhir.resources.R4B.")
    assert not model_for("R5", "ServiceRequest").__module__.startswith("fhir.resources.R4B.")
    with pytest.raises(Rejected):
        check_resource("R4", [1, 2])
    with pytest.raises(Rejected) as caught:
        check_resource("R4", {"resourceType": "Patient"}, expected_type="ServiceRequest")
    assert caught.value.location == "resourceType"
    with pytest.raises(Rejected):
        check_resource("R4", {"resourceType": "NoSuchThing"})
    with pytest.raises(MappingFailed) as caught:
        check_resource("R4", {"resourceType": "Patient", "birthDate": "1980-13-01"},
                       path="Bundle.entry[2].resource")
    assert caught.value.location == "Bundle.entry[2].resource.birthDate"
    r5_code = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/1"},
               "code": {"concept": {"text": "CT"}}}
    check_resource("R5", r5_code)
    with pytest.raises(MappingFailed):
        check_resource("R4", r5_code)


def test_the_maps_load_and_a_bad_one_is_named(tmp_path: Path) -> None:
    tables = load_fhir_tables(PROJECT_ROOT / "mappings")
    assert tables.priority_to_dicom["stat"] == "STAT"
    shutil.copytree(PROJECT_ROOT / "mappings" / "fhir", tmp_path / "fhir")
    status = tmp_path / "fhir" / "service_request_status.yaml"
    status.write_text(status.read_text().replace("on-hold: SUSPENDED", "on-hold: PAUSED"))
    with pytest.raises(TableError) as caught:
        load_fhir_tables(tmp_path)
    assert "service_request_status.yaml" in str(caught.value) and "PAUSED" in str(caught.value)


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_the_capability_statement_is_valid_and_true(version: str) -> None:
    statement = capability_statement(version, "http://me/fhir", "0.1.0", domain_resources(),
                                     datetime(2031, 5, 1, tzinfo=UTC))
    check_resource(version, statement, expected_type="CapabilityStatement")
    assert statement["fhirVersion"] == {"R4": "4.0.1", "R5": "5.0.0"}[version]
    rest = statement["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    for resource in rest["resource"]:
        names = {p["name"] for p in resource["searchParam"]}
        assert names == set(SEARCH_PARAMS[resource["type"]])
        assert resource["conditionalCreate"] and resource["conditionalUpdate"]
