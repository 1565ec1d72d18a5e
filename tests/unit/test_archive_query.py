"""Query/Retrieve identifiers → ArchiveQuery / RetrieveKeys, and records → C-FIND responses."""

from __future__ import annotations

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from bridge.errors import MappingFailed
from bridge.mapping.dicom.qr_query import (
    Level,
    Model,
    RetrieveKeys,
    parse_find_identifier,
    parse_retrieve_identifier,
)
from bridge.mapping.dicom.qr_results import (
    InstanceRecord,
    PatientRecord,
    PatientValues,
    SeriesRecord,
    StudyRecord,
    build_find_response,
    record_values,
)
from bridge.mapping.worklist.dataset import ResponseOptions
from bridge.mapping.worklist.query import Range, ReturnKey, TextMatch

STUDY_ROOT, PATIENT_ROOT = Model.STUDY_ROOT, Model.PATIENT_ROOT
# Some identifiers here are deliberately invalid DICOM; pydicom warns as it reads them.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")


def identifier(level: str | None, **keys: object) -> Dataset:
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def received(level: str, keyword: str, vr: str, raw: bytes, **keys: object) -> Dataset:
    """An identifier with one element as it arrives from the network (not yet decoded)."""
    ds = identifier(level, **keys)
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    return ds


# --- C-FIND identifiers ----------------------------------------------------------------------


def test_study_keys_and_return_keys() -> None:
    query = parse_find_identifier(identifier(
        "STUDY", PatientName="ГАЛАҐАН*", PatientID="UA?00", StudyDate="20261122-",
        StudyTime="0800-1700", AccessionNumber="A1\\A2", ModalitiesInStudy="CT\\MR",
        StudyInstanceUID="", NumberOfStudyRelatedInstances="", SpecificCharacterSet="ISO_IR 192",
    ), STUDY_ROOT)
    assert query.level == Level.STUDY
    assert query.patient_name == TextMatch(pattern="галаґан*")  # case-folded
    assert query.patient_id == TextMatch(pattern="UA?00")
    assert query.study_date == Range("20261122", None)
    assert query.study_time == Range("080000", "170059.999999")
    assert query.accession == TextMatch(values=("A1", "A2"))
    assert query.modalities_in_study == TextMatch(values=("CT", "MR"))
    assert query.study_uids == ()  # empty: universal matching, only asked back
    # Every key comes back except the level (always sent) and the character set (ours).
    assert {key.tag for key in query.return_keys} == {
        Tag(k) for k in ("PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber",
                         "ModalitiesInStudy", "StudyInstanceUID",
                         "NumberOfStudyRelatedInstances")}


def test_lower_levels_keys_uid_lists_and_numbers() -> None:
    query = parse_find_identifier(identifier(
        "IMAGE", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4",
        SOPInstanceUID="1.2.3.4.5\\1.2.3.4.6", InstanceNumber="2\\3", SOPClassUID="",
    ), STUDY_ROOT)
    assert query.study_uids == ("1.2.3",)
    assert query.series_uids == ("1.2.3.4",)
    assert query.sop_instance_uids == ("1.2.3.4.5", "1.2.3.4.6")
    assert query.instance_numbers == (2, 3)
    series = parse_find_identifier(identifier(
        "SERIES", StudyInstanceUID="1.2.3", Modality="MR", SeriesNumber="4"), STUDY_ROOT)
    assert (series.modality, series.series_numbers) == (TextMatch(values=("MR",)), (4,))


def test_keys_without_matching_are_returned_and_noted() -> None:
    query = parse_find_identifier(identifier("STUDY", PatientWeight="70", InstitutionName=""),
                                  STUDY_ROOT)
    assert query.ignored_keys == ("PatientWeight",)
    assert {k.tag for k in query.return_keys} == {Tag("PatientWeight"), Tag("InstitutionName")}


def test_undeclared_8bit_text_is_read_with_the_peers_charset() -> None:
    ds = identifier("STUDY")
    ds.add_new(Tag("PatientName"), "PN", "Шевченко*".encode("cp1251").decode("latin-1"))
    query = parse_find_identifier(ds, STUDY_ROOT, undeclared_charset="cp1251")
    assert query.patient_name == TextMatch(pattern="шевченко*")


@pytest.mark.parametrize(
    ("ds", "model", "message"),
    [
        (identifier(None, PatientID=""), STUDY_ROOT, "missing"),
        (identifier("WORKLIST"), STUDY_ROOT, "not PATIENT, STUDY"),
        (identifier("PATIENT", PatientID=""), STUDY_ROOT, "not part of the Study Root"),
        (identifier("STUDY", StudyDate=""), PATIENT_ROOT, "single PatientID"),
        (identifier("STUDY", PatientID="UA*"), PATIENT_ROOT, "single PatientID"),
        (identifier("SERIES", Modality="CT"), STUDY_ROOT, "single StudyInstanceUID"),
        (identifier("SERIES", StudyInstanceUID="1.2\\1.3"), STUDY_ROOT,
         "single StudyInstanceUID"),
        (identifier("IMAGE", StudyInstanceUID="1.2"), STUDY_ROOT, "single SeriesInstanceUID"),
        (received("SERIES", "SeriesNumber", "IS", b"one", StudyInstanceUID="1.2"), STUDY_ROOT,
         "integers"),
        (received("STUDY", "StudyDate", "DA", b"22.11.2026"), STUDY_ROOT, "invalid date"),
    ],
)
def test_unusable_identifiers_are_refused(ds: Dataset, model: Model, message: str) -> None:
    with pytest.raises(MappingFailed, match=message):
        parse_find_identifier(ds, model)


def test_a_malformed_date_names_its_attribute() -> None:
    ds = received("STUDY", "StudyDate", "DA", b"22.11.2026")
    with pytest.raises(MappingFailed) as caught:
        parse_find_identifier(ds, STUDY_ROOT)
    assert caught.value.location == "StudyDate"


def test_patient_root_study_level_with_the_patient() -> None:
    query = parse_find_identifier(identifier("STUDY", PatientID="UA100", StudyDate=""),
                                  PATIENT_ROOT)
    assert query.patient_id == TextMatch(values=("UA100",))


# --- retrieve identifiers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ds", "model", "expected"),
    [
        (identifier("STUDY", StudyInstanceUID="1.2\\1.3"), STUDY_ROOT,
         RetrieveKeys(Level.STUDY, study_uids=("1.2", "1.3"))),
        (identifier("SERIES", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.1"), STUDY_ROOT,
         RetrieveKeys(Level.SERIES, study_uids=("1.2",), series_uids=("1.2.1",))),
        (identifier("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.1",
                    SOPInstanceUID="1.2.1.1\\1.2.1.2"), STUDY_ROOT,
         RetrieveKeys(Level.IMAGE, study_uids=("1.2",), series_uids=("1.2.1",),
                      sop_instance_uids=("1.2.1.1", "1.2.1.2"))),
        (identifier("PATIENT", PatientID="UA100", IssuerOfPatientID="HOSP"), PATIENT_ROOT,
         RetrieveKeys(Level.PATIENT, patient_id="UA100", issuer_of_patient_id="HOSP")),
        (identifier("STUDY", PatientID="OLD1", StudyInstanceUID="1.2"), PATIENT_ROOT,
         RetrieveKeys(Level.STUDY, study_uids=("1.2",))),
    ],
)
def test_retrieve_keys(ds: Dataset, model: Model, expected: RetrieveKeys) -> None:
    assert parse_retrieve_identifier(ds, model) == expected


@pytest.mark.parametrize(
    ("ds", "model"),
    [
        (identifier("STUDY"), STUDY_ROOT),
        (received("STUDY", "StudyInstanceUID", "UI", b"*"), STUDY_ROOT),  # never "everything"
        (identifier("SERIES", StudyInstanceUID="1.2"), STUDY_ROOT),
        (identifier("PATIENT", PatientID="UA*"), PATIENT_ROOT),
        (identifier("STUDY", StudyInstanceUID="1.2"), PATIENT_ROOT),  # no PatientID
    ],
)
def test_retrieves_without_their_unique_keys_are_refused(ds: Dataset, model: Model) -> None:
    with pytest.raises(MappingFailed):
        parse_retrieve_identifier(ds, model)


# --- responses -------------------------------------------------------------------------------

PATIENT = PatientValues("UA100", "HOSP", "Ґалаґан^Олена", "19800101", "F")
STUDY = StudyRecord(
    pk=1, study_instance_uid="1.2", patient=PATIENT, accession="ACC1", study_date="20261122",
    study_time="101500", description="КТ голови", modalities=("CT", "MR"), num_series=2,
    num_instances=3,
)
SERIES = SeriesRecord(pk=5, study=STUDY, series_instance_uid="1.2.1", modality="CT",
                      series_number=1, num_instances=2)
IMAGE = InstanceRecord(pk=9, series=SERIES, sop_instance_uid="1.2.1.1",
                       sop_class_uid="1.2.840.10008.5.1.4.1.1.2", instance_number=1)


def keys(*keywords: str) -> list[ReturnKey]:
    ds = Dataset()
    for keyword in keywords:
        setattr(ds, keyword, None)
    return [ReturnKey(int(elem.tag), str(elem.VR)) for elem in ds]


def test_a_study_response_holds_exactly_the_requested_keys_in_utf8() -> None:
    ds = build_find_response(
        STUDY, keys("PatientName", "AccessionNumber", "ModalitiesInStudy", "StudyDescription",
                    "NumberOfStudyRelatedInstances", "ReferringPhysicianName", "PatientWeight",
                    "RetrieveAETitle"),
        ResponseOptions(), retrieve_ae_title="BRIDGE")
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Ґалаґан^Олена"
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert ds.NumberOfStudyRelatedInstances == 3
    assert ds.RetrieveAETitle == "BRIDGE"
    # Known but empty, and unknown: both returned empty with their VR.
    assert ds["ReferringPhysicianName"].value in ("", None)
    assert ds["PatientWeight"].VR == "DS" and ds["PatientWeight"].value in ("", None)
    assert "PatientID" not in ds and "StudyInstanceUID" not in ds


def test_ascii_responses_declare_no_character_set() -> None:
    ds = build_find_response(SERIES, keys("StudyInstanceUID", "SeriesInstanceUID", "Modality",
                                          "NumberOfSeriesRelatedInstances"),
                             ResponseOptions(), retrieve_ae_title="BRIDGE")
    assert "SpecificCharacterSet" not in ds
    assert (ds.QueryRetrieveLevel, ds.StudyInstanceUID, ds.Modality) == ("SERIES", "1.2", "CT")
    assert ds.NumberOfSeriesRelatedInstances == 2


def test_latin_only_peers_get_transliterated_text() -> None:
    ds = build_find_response(STUDY, keys("PatientName", "StudyDescription"),
                             ResponseOptions(latin_only=True), retrieve_ae_title="BRIDGE")
    assert str(ds.PatientName) == "Galagan^Olena"
    assert ds.StudyDescription.isascii()
    assert "SpecificCharacterSet" not in ds


def test_patient_and_image_records() -> None:
    patient = PatientRecord(pk=1, patient=PATIENT, num_studies=2, num_series=3, num_instances=4)
    ds = build_find_response(patient, keys("PatientID", "NumberOfPatientRelatedStudies",
                                           "NumberOfPatientRelatedSeries",
                                           "NumberOfPatientRelatedInstances"),
                             ResponseOptions(), retrieve_ae_title="BRIDGE")
    assert (ds.QueryRetrieveLevel, ds.PatientID) == ("PATIENT", "UA100")
    assert (ds.NumberOfPatientRelatedStudies, ds.NumberOfPatientRelatedSeries,
            ds.NumberOfPatientRelatedInstances) == (2, 3, 4)
    values = record_values(IMAGE)
    assert values[Tag("SOPInstanceUID")] == "1.2.1.1"
    assert values[Tag("SeriesInstanceUID")] == "1.2.1"
    assert values[Tag("PatientID")] == "UA100"
