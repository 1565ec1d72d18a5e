"""ImagingStudy and Endpoint mapping (pure): the DICOM → FHIR table, R4 and R5, validated with
fhir.resources (R4B models for R4) independently of the bridge's own ``validate``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.endpoint import Endpoint as EndpointR5
from fhir.resources.imagingstudy import ImagingStudy as ImagingStudyR5
from fhir.resources.R4B.endpoint import Endpoint as EndpointR4
from fhir.resources.R4B.imagingstudy import ImagingStudy as ImagingStudyR4
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, MRImageStorage

from bridge.errors import MappingFailed
from bridge.mapping.fhir import imaging_study as fis
from bridge.mapping.fhir.imaging_study import (
    CodeValue,
    IdentifierValue,
    InstanceRecord,
    OrderLink,
    SeriesRecord,
    StudyRecord,
    SubjectLink,
)

DCM = "http://dicom.nema.org/resources/ontology/DCM"
MODELS = {"R4": ImagingStudyR4, "R5": ImagingStudyR5}
VERSIONS = ("R4", "R5")


def a_study(**changes: Any) -> StudyRecord:
    ct = SeriesRecord(
        series_instance_uid="1.2.826.0.1.3680043.10.1137.5.2", modality="CT", number=2,
        description="Axial 1.0", body_part="HEAD", num_instances=2,
        instances=(InstanceRecord("1.2.826.0.1.3680043.10.1137.5.2.1", CTImageStorage, 1),
                   InstanceRecord("1.2.826.0.1.3680043.10.1137.5.2.2", CTImageStorage, 2)))
    mr = SeriesRecord(
        series_instance_uid="1.2.826.0.1.3680043.10.1137.5.3", modality="MR", number=None,
        body_part="Left little toe", num_instances=1,
        instances=(InstanceRecord("1.2.826.0.1.3680043.10.1137.5.3.1", MRImageStorage, None),))
    values: dict[str, Any] = dict(
        study_instance_uid="1.2.826.0.1.3680043.10.1137.5", study_date="20261122",
        study_time="101500", description="CT head and neck",
        referring_physician="Modality^Referrer", modalities=("CT", "MR"), num_series=2,
        num_instances=3, accession="MODACC", updated_at=datetime(2026, 11, 22, 9, 0, tzinfo=UTC),
        series=(ct, mr))
    values.update(changes)
    return StudyRecord(**values)


ORDER = OrderLink(reference="ServiceRequest/7", accession="ACC1001",
                  procedure=CodeValue("24727-0", "LN", "CT Head"),
                  procedure_description="КТ голови та шиї",
                  referring_physician="Бондаренко^Олег^Миколайович")
SUBJECT = SubjectLink("Patient/12", IdentifierValue("P10001", "urn:oid:1.2.3.4"))


def build(version: str, study: StudyRecord | None = None, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(subject=SUBJECT, order=ORDER, timezone="Europe/Kyiv",
                                   endpoint_reference="Endpoint/wado-rs", resource_id="42")
    options.update(kwargs)
    return fis.imaging_study(study or a_study(), version=version,  # type: ignore[arg-type]
                             **options)


@pytest.mark.parametrize("version", VERSIONS)
def test_imaging_study_validates_with_fhir_resources(version: str) -> None:
    resource = build(version)
    parsed = MODELS[version].model_validate(resource)
    assert parsed.id == "42"
    assert parsed.subject.reference == "Patient/12"
    fis.validate(resource, version)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", VERSIONS)
def test_study_instance_uid_identifier_and_accession(version: str) -> None:
    resource = build(version)
    uid = {"use": "official", "system": "urn:dicom:uid",
           "value": "urn:oid:1.2.826.0.1.3680043.10.1137.5"}
    acsn = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "ACSN"}]}, "value": "ACC1001"}
    # R4 keeps the accession among the study's identifiers; R5 moved it to basedOn.
    assert resource["identifier"] == ([uid, acsn] if version == "R4" else [uid])
    # The order's accession wins over what the modality sent ("MODACC").
    assert resource["basedOn"] == [{"type": "ServiceRequest",
                                    "reference": "ServiceRequest/7", "identifier": acsn}]


@pytest.mark.parametrize("version", VERSIONS)
def test_without_a_known_service_request_basedon_is_logical(version: str) -> None:
    resource = build(version, order=OrderLink(accession="ACC9"))
    assert resource["basedOn"] == [{"type": "ServiceRequest", "identifier": {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                             "code": "ACSN"}]}, "value": "ACC9"}}]
    MODELS[version].model_validate(resource)


def test_no_order_and_no_accession_leaves_basedon_out() -> None:
    resource = build("R4", a_study(accession=""), order=None)
    assert "basedOn" not in resource
    assert [i["system"] for i in resource["identifier"]] == ["urn:dicom:uid"]
    # Without the order, the file's referring physician is the referrer.
    assert resource["referrer"] == {"display": "Modality Referrer"}


def test_modality_is_a_coding_in_r4_and_a_concept_in_r5() -> None:
    r4, r5 = build("R4"), build("R5")
    assert r4["modality"] == [{"system": DCM, "code": "CT"}, {"system": DCM, "code": "MR"}]
    assert r5["modality"] == [{"coding": [{"system": DCM, "code": "CT"}]},
                              {"coding": [{"system": DCM, "code": "MR"}]}]
    assert r4["series"][0]["modality"] == {"system": DCM, "code": "CT"}
    assert r5["series"][0]["modality"] == {"coding": [{"system": DCM, "code": "CT"}]}


@pytest.mark.parametrize("version", VERSIONS)
def test_counts_come_from_the_index_counters(version: str) -> None:
    # The counters are what the index says even when not every instance is listed.
    resource = build(version, a_study(num_series=5, num_instances=40))
    assert resource["numberOfSeries"] == 5
    assert resource["numberOfInstances"] == 40
    assert [s["numberOfInstances"] for s in resource["series"]] == [2, 1]


@pytest.mark.parametrize("version", VERSIONS)
def test_series_and_instances(version: str) -> None:
    ct, mr = build(version)["series"]
    assert ct["uid"] == "1.2.826.0.1.3680043.10.1137.5.2"
    assert ct["number"] == 2
    assert ct["description"] == "Axial 1.0"
    assert ct["instance"][1] == {
        "uid": "1.2.826.0.1.3680043.10.1137.5.2.2",
        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{CTImageStorage}",
                     "display": "CT Image Storage"},
        "number": 2,
    }
    assert "number" not in mr and "number" not in mr["instance"][0]
    head = {"system": "http://snomed.info/sct", "code": "69536005", "display": "Head"}
    if version == "R4":
        assert ct["bodySite"] == head
        assert mr["bodySite"] == {"display": "Left little toe"}
    else:
        assert ct["bodySite"] == {"concept": {"coding": [head]}}
        assert mr["bodySite"] == {"concept": {"text": "Left little toe"}}


@pytest.mark.parametrize("version", VERSIONS)
def test_procedure_code_description_and_referrer(version: str) -> None:
    resource = build(version)
    concept = {"coding": [{"code": "24727-0", "system": "http://loinc.org",
                           "display": "CT Head"}], "text": "КТ голови та шиї"}
    if version == "R4":
        assert resource["procedureCode"] == [concept]
    else:
        assert resource["procedure"] == [{"concept": concept}]
    assert resource["description"] == "CT head and neck"
    assert resource["referrer"] == {"display": "Бондаренко Олег Миколайович"}
    assert resource["endpoint"] == [{"reference": "Endpoint/wado-rs"}]
    assert resource["subject"] == {"reference": "Patient/12", "type": "Patient",
                                   "identifier": {"system": "urn:oid:1.2.3.4",
                                                  "value": "P10001"}}


def test_a_subject_identifier_without_a_system_is_left_out() -> None:
    resource = build("R4", subject=SubjectLink("Patient/3", IdentifierValue("P1", None)))
    assert resource["subject"] == {"reference": "Patient/3", "type": "Patient"}


@pytest.mark.parametrize(("day", "moment", "expected"), [
    ("20261122", "101500", "2026-11-22T10:15:00+02:00"),  # winter time in Kyiv
    ("20260715", "101500", "2026-07-15T10:15:00+03:00"),  # summer time
    ("20261122", "10", "2026-11-22T10:00:00+02:00"),
    ("20261122", "1015", "2026-11-22T10:15:00+02:00"),
    ("20261122", "10:15:30", "2026-11-22T10:15:30+02:00"),  # ACR-NEMA style colons
    ("20261122", "101530.5", "2026-11-22T10:15:30.500+02:00"),
    ("20261122", "101530.123456", "2026-11-22T10:15:30.123456+02:00"),
    ("20261122", "", "2026-11-22"),
    ("20261122", "garbage", "2026-11-22"),
    ("20261322", "101500", None),
    ("", "101500", None),
])
def test_started_carries_the_local_offset(day: str, moment: str, expected: str | None) -> None:
    assert fis.started(day, moment, "Europe/Kyiv") == expected


def test_started_in_another_zone_and_at_a_daylight_saving_gap() -> None:
    assert fis.started("20261122", "101500", "America/New_York") == "2026-11-22T10:15:00-05:00"
    # 03:30 on 29 March 2026 does not exist in Kyiv (clocks jump 03:00 → 04:00): the offset
    # before the change is stated, never none.
    assert fis.started("20260329", "033000", "Europe/Kyiv") == "2026-03-29T03:30:00+02:00"


@pytest.mark.parametrize("version", VERSIONS)
def test_started_in_the_resource(version: str) -> None:
    resource = build(version, a_study(study_time="235959"), timezone="Europe/Kyiv")
    assert resource["started"] == "2026-11-22T23:59:59+02:00"
    assert "started" not in build(version, a_study(study_date=""))


@pytest.mark.parametrize("version", VERSIONS)
def test_status(version: str) -> None:
    assert build(version)["status"] == "available"
    empty = a_study(num_series=0, num_instances=0, series=(), modalities=())
    resource = build(version, empty)
    assert resource["status"] == "registered"
    assert "series" not in resource and "modality" not in resource
    MODELS[version].model_validate(resource)
    withdrawn = build(version, status="entered-in-error")
    assert withdrawn["status"] == "entered-in-error"
    MODELS[version].model_validate(withdrawn)


@pytest.mark.parametrize("version", VERSIONS)
def test_empty_texts_are_left_out(version: str) -> None:
    study = a_study(description="  ", referring_physician="", accession="",
                    series=(SeriesRecord("1.2.3.4", modality="", num_instances=1,
                                         instances=(InstanceRecord("1.2.3.4.1", "1.2.3.99"),)),))
    resource = build(version, study, order=None)
    for key in ("description", "referrer", "basedOn", "procedureCode", "procedure"):
        assert key not in resource
    series = resource["series"][0]
    assert "description" not in series and "bodySite" not in series
    # A series without a modality is still in the study (Modality is required: OT).
    assert series["modality"] in ({"system": DCM, "code": "OT"},
                                  {"coding": [{"system": DCM, "code": "OT"}]})
    # An unknown SOP class gets no made-up display.
    assert series["instance"][0]["sopClass"] == {"system": "urn:ietf:rfc:3986",
                                                 "code": "urn:oid:1.2.3.99"}
    MODELS[version].model_validate(resource)


@pytest.mark.parametrize("version", VERSIONS)
def test_meta_for_own_and_published_resources(version: str) -> None:
    own = build(version)
    assert own["meta"] == {"lastUpdated": "2026-11-22T09:00:00.000Z"}
    published = build(version, resource_id=None, meta_source="http://bridge.example:8080")
    assert "id" not in published
    assert published["meta"] == {"source": "http://bridge.example:8080"}
    MODELS[version].model_validate(published)


@pytest.mark.parametrize("version", VERSIONS)
def test_two_thousand_instances_validate(version: str) -> None:
    instances = tuple(InstanceRecord(f"1.2.826.0.1.3680043.10.1137.6.{n}", CTImageStorage, n)
                      for n in range(1, 2001))
    study = a_study(num_series=1, num_instances=2000, series=(SeriesRecord(
        "1.2.826.0.1.3680043.10.1137.6", "CT", 1, num_instances=2000, instances=instances),))
    resource = build(version, study)
    parsed = MODELS[version].model_validate(resource)
    assert parsed.series is not None and len(parsed.series[0].instance or []) == 2000


@pytest.mark.parametrize("version", VERSIONS)
def test_endpoint(version: str) -> None:
    resource = fis.endpoint("http://bridge.example:8080/dicomweb/", version=version,  # type: ignore[arg-type]
                            name="BRIDGE DICOMweb WADO-RS")
    assert resource["id"] == "wado-rs"
    assert resource["address"] == "http://bridge.example:8080/dicomweb"
    assert resource["identifier"] == [{"system": "urn:ietf:rfc:3986",
                                       "value": "http://bridge.example:8080/dicomweb"}]
    connection = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                  "code": "dicom-wado-rs"}
    if version == "R4":
        EndpointR4.model_validate(resource)
        assert resource["connectionType"] == connection
    else:
        EndpointR5.model_validate(resource)
        assert resource["connectionType"] == [{"coding": [connection]}]
    fis.validate(resource, version)  # type: ignore[arg-type]


def test_validate_names_the_problem() -> None:
    resource = build("R4")
    del resource["subject"]
    with pytest.raises(MappingFailed, match=r"ImagingStudy is not valid FHIR R4.*subject"):
        fis.validate(resource, "R4")
    r5_shaped = build("R5")
    with pytest.raises(MappingFailed, match="not valid FHIR R4"):
        fis.validate(r5_shaped, "R4")  # R5 modality (CodeableConcept) is not an R4 Coding
    with pytest.raises(MappingFailed, match="unknown resource type"):
        fis.validate({"resourceType": "../x"}, "R4")


@pytest.mark.parametrize(("issuer", "table", "expected"), [
    ("", None, None),
    ("KYIV_CITY_HOSP_1", None, None),
    ("KYIV_CITY_HOSP_1", {"KYIV_CITY_HOSP_1": "urn:oid:1.2.3"}, "urn:oid:1.2.3"),
    ("1.2.804.2.1", None, None),  # an OID without a table entry is not a URI
    ("urn:oid:1.2.3", None, "urn:oid:1.2.3"),
    ("http://hospital.example/mrn", None, "http://hospital.example/mrn"),
])
def test_identifier_system(issuer: str, table: dict[str, str] | None,
                           expected: str | None) -> None:
    assert fis.identifier_system(issuer, table) == expected


@pytest.mark.parametrize(("scheme", "expected"), [
    ("DCM", DCM), ("SCT", "http://snomed.info/sct"), ("SRT", "http://snomed.info/sct"),
    ("LN", "http://loinc.org"), ("ln", "http://loinc.org"), ("LOCAL", None), ("", None),
    ("http://example.org/codes", "http://example.org/codes"), ("99LOCAL", None),
])
def test_code_system(scheme: str, expected: str | None) -> None:
    assert fis.code_system(scheme) == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_site_naming_tables(version: str) -> None:
    naming = fis.FhirNaming(issuer_systems={"HOSP": "urn:oid:1.2.3.4"},
                            accession_system="urn:oid:1.2.826.0.1.3680043.10.1137.2",
                            coding_systems={"LOCAL": "http://hospital.example/procedures"})
    assert naming.system_for("HOSP") == "urn:oid:1.2.3.4"
    assert naming.system_for("OTHER") is None
    order = OrderLink(reference="ServiceRequest/7", accession="ACC1",
                      procedure=CodeValue("CTHEAD", "LOCAL", "CT head"))
    resource = build(version, order=order, naming=naming)
    acsn = resource["basedOn"][0]["identifier"]
    assert acsn["system"] == "urn:oid:1.2.826.0.1.3680043.10.1137.2"
    if version == "R4":
        assert resource["identifier"][1] == acsn
        coding = resource["procedureCode"][0]["coding"][0]
    else:
        coding = resource["procedure"][0]["concept"]["coding"][0]
    assert coding["system"] == "http://hospital.example/procedures"
    MODELS[version].model_validate(resource)


def test_body_part_codes_agree_with_dicom_cid_4031() -> None:
    cid = codes.cid4031
    official = {getattr(cid, name).value: getattr(cid, name).meaning for name in cid.dir()}
    for term, (code, meaning) in fis.BODY_PARTS.items():
        assert official.get(code) == meaning, term


def test_tokens() -> None:
    assert fis.study_identifier_token("1.2.3") == "urn:dicom:uid|urn:oid:1.2.3"
    assert fis.endpoint_identifier_token("http://b:1/dicomweb/") == \
        "urn:ietf:rfc:3986|http://b:1/dicomweb"
    assert fis.person_display("Doe^John^^Dr=ДОУ^ДЖОН") == "Doe John Dr"
    assert fis.person_display("^^") is None


@pytest.mark.parametrize("version", VERSIONS)
def test_a_viewer_link_is_a_contained_iid_endpoint(version: str) -> None:
    url = "https://bridge.example/console/view#brl_abc"
    resource = build(version, viewer_url=url)
    parsed = MODELS[version].model_validate(resource)
    assert [e.reference for e in parsed.endpoint] == ["Endpoint/wado-rs", "#viewer"]
    (contained,) = resource["contained"]
    assert (contained["resourceType"], contained["id"], contained["address"]) == (
        "Endpoint", "viewer", url)
    coding = contained["connectionType"] if version == "R4" else \
        contained["connectionType"][0]["coding"][0]
    assert coding["code"] == "ihe-iid"
    (EndpointR4 if version == "R4" else EndpointR5).model_validate(contained)
    fis.validate(resource, version)  # type: ignore[arg-type]
    assert "contained" not in build(version) and len(build(version)["endpoint"]) == 1
