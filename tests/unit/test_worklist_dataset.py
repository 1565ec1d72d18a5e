"""Worklist item → response identifier: every requested key back, text per calling AE."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from bridge.mapping.translit import transliterate_person_name, transliterate_text
from bridge.mapping.worklist.dataset import (
    Code,
    OtherId,
    ResponseOptions,
    WorklistItem,
    build_identifier,
)
from bridge.mapping.worklist.query import parse_worklist_query

ITEM = WorklistItem(
    patient_name="Ґалаґан^Олена^Євгенівна",
    patient_id="UA100",
    issuer_of_patient_id="HOSP",
    birth_date="19800101",
    sex="F",
    other_ids=(OtherId("NI555", "NATIONAL"),),
    accession="ACC1",
    study_instance_uid="1.2.3",
    requested_procedure_id="RP1",
    procedure_code=Code("CTHEAD", "LOCAL", "КТ голови"),
    procedure_description="КТ голови",
    priority="STAT",
    reason="Головний біль",
    requesting_physician="Шевченко^Тарас",
    referring_physician="Франко^Іван",
    admission_id="ADM1",
    placer_number="PL1",
    placer_issuer="HIS",
    filler_number="FL1",
    sps_id="SPS1",
    station_ae="CT1",
    station_name="CTROOM",
    location="Корпус 2",
    modality="CT",
    start_date="20261122",
    start_time="090000",
    description="КТ голови без контрасту",
    performing_physician="Коваль^Ірина",
    protocol_codes=(Code("P1", "LOCAL", "Протокол 1"), Code("X" * 20, "LOCAL", "Long")),
    status="SCHEDULED",
)

WANTED = [
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "StudyInstanceUID", "RequestedProcedureID",
    "RequestedProcedureDescription", "RequestedProcedurePriority",
    "ReasonForTheRequestedProcedure", "RequestingPhysician", "ReferringPhysicianName",
    "AdmissionID", "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest",
]
WANTED_IN_SPS = [
    "ScheduledStationAETitle", "ScheduledStationName", "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "Modality",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID", "ScheduledProcedureStepStatus",
]


def request() -> Dataset:
    ds = Dataset()
    for keyword in WANTED:
        setattr(ds, keyword, "")
    ds.OtherPatientIDsSequence = []
    code = Dataset()
    code.CodeValue = ""
    code.CodeMeaning = ""
    ds.RequestedProcedureCodeSequence = [code]
    ds.add_new(0x00211010, "LO", None)  # a key we do not know
    ds.add_new(Tag("PatientWeight"), "DS", None)
    sps = Dataset()
    for keyword in WANTED_IN_SPS:
        setattr(sps, keyword, "")
    sps.ScheduledProtocolCodeSequence = []
    sps.add_new(Tag("PreMedication"), "LO", None)  # unknown inside the sequence
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def build(options: ResponseOptions | None = None) -> Dataset:
    keys = parse_worklist_query(request()).return_keys
    return build_identifier(ITEM, keys, options or ResponseOptions())


def test_every_requested_key_is_present() -> None:
    ds = build()
    for keyword in WANTED:
        assert keyword in ds, keyword
    sps = ds.ScheduledProcedureStepSequence[0]
    for keyword in WANTED_IN_SPS:
        assert keyword in sps, keyword
    assert ds.PatientName == "Ґалаґан^Олена^Євгенівна"
    assert ds.RequestedProcedurePriority == "STAT"
    assert sps.ScheduledStationAETitle == "CT1"
    assert sps.ScheduledProcedureStepStatus == "SCHEDULED"


def test_unknown_keys_come_back_empty_with_their_vr() -> None:
    ds = build()
    assert ds[0x00211010].VR == "LO" and ds[0x00211010].value in (None, "")
    assert ds["PatientWeight"].VR == "DS" and ds["PatientWeight"].value in (None, "")
    pre = ds.ScheduledProcedureStepSequence[0]["PreMedication"]
    assert pre.VR == "LO" and pre.value in (None, "")


def test_sequences_and_codes() -> None:
    ds = build()
    other = ds.OtherPatientIDsSequence
    assert [(o.PatientID, o.IssuerOfPatientID, o.TypeOfPatientID) for o in other] == [
        ("NI555", "NATIONAL", "TEXT")]
    code = ds.RequestedProcedureCodeSequence[0]
    assert code.CodeValue == "CTHEAD" and code.CodeMeaning == "КТ голови"
    assert "CodingSchemeDesignator" not in code  # not asked for inside the item
    protocols = ds.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
    assert protocols[0].CodeValue == "P1" and protocols[0].CodingSchemeDesignator == "LOCAL"
    assert "CodeValue" not in protocols[1] and protocols[1].LongCodeValue == "X" * 20


def test_utf8_by_default() -> None:
    ds = build()
    assert ds.SpecificCharacterSet == "ISO_IR 192"


def test_latin_only_peer_gets_kmu_transliteration_and_ascii_only() -> None:
    ds = build(ResponseOptions(latin_only=True, language="uk"))
    assert "SpecificCharacterSet" not in ds
    assert str(ds.PatientName) == "Galagan^Olena^Yevhenivna"
    assert str(ds.RequestingPhysician) == "Shevchenko^Taras"
    assert ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepLocation == "Korpus 2"

    def walk(dataset: Dataset) -> None:
        for elem in dataset:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif isinstance(elem.value, str) or elem.VR == "PN":
                assert str(elem.value).isascii(), elem

    walk(ds)


def test_transliteration_systems() -> None:
    assert transliterate_person_name("Згурський^Їжакевич", "uk") == "Zghurskyi^Yizhakevych"
    assert transliterate_text("Знам'янка", "uk") == "Znamianka"
    assert transliterate_person_name("Щербаков^Юрий", "ru") == "Shcherbakov^Iurii"
    assert transliterate_person_name("SHEVCHENKO^TARAS==Шевченко^Тарас", "uk") == (
        "SHEVCHENKO^TARAS")
    assert transliterate_text("Zürich", "uk") == "Zurich"
