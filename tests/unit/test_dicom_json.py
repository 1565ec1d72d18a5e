"""The DICOM JSON Model (PS3.18 F.2) of QIDO-RS matches, WADO-RS metadata and STOW-RS
responses."""

from __future__ import annotations

import base64
import json

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from bridge.mapping.dicom.json_model import (
    STUDY_ATTRIBUTES,
    StowResult,
    dataset_json,
    element,
    person_name,
    search_result,
    stow_response,
)
from bridge.mapping.dicom.qr_results import (
    InstanceRecord,
    PatientValues,
    SeriesRecord,
    StudyRecord,
)

STUDY = StudyRecord(
    pk=1, study_instance_uid="1.2.3",
    patient=PatientValues(patient_id="MIS-1", issuer_of_patient_id="HOSP",
                          name="SHEVCHENKO^TARAS==Шевченко^Тарас", birth_date="19811224",
                          sex="M"),
    accession="ACC1", study_date="20261122", study_time="093000", study_id="1",
    description="", referring_physician="", modalities=("CT", "MR"), num_series=2,
    num_instances=7)
SERIES = SeriesRecord(pk=2, study=STUDY, series_instance_uid="1.2.3.4", modality="CT",
                      series_number=3, description="axial", body_part="CHEST",
                      num_instances=5)
INSTANCE = InstanceRecord(pk=3, series=SERIES, sop_instance_uid="1.2.3.4.5",
                          sop_class_uid="1.2.840.10008.5.1.4.1.1.2", instance_number=None)
URL = "http://bridge/dicomweb/studies/1.2.3"


def test_person_names_keep_their_component_groups() -> None:
    assert person_name("Ivanenko^Olena") == {"Alphabetic": "Ivanenko^Olena"}
    assert person_name("SHEVCHENKO^TARAS==Шевченко^Тарас") == {
        "Alphabetic": "SHEVCHENKO^TARAS", "Phonetic": "Шевченко^Тарас"}
    assert person_name("=Ideo") == {"Ideographic": "Ideo"}


def test_elements_by_vr() -> None:
    assert element(0x00201206, "IS", 2) == {"vr": "IS", "Value": [2]}
    assert element(0x00201206, "IS", "12") == {"vr": "IS", "Value": [12]}
    assert element(0x00281050, "DS", "40\\-7.5") == {"vr": "DS", "Value": [40, -7.5]}
    assert element(0x00080061, "CS", ["CT", "MR"]) == {"vr": "CS", "Value": ["CT", "MR"]}
    assert element(0x00080050, "SH", "") == {"vr": "SH"}
    assert element(0x00200011, "IS", None) == {"vr": "IS"}
    assert element(0x00080090, "PN", "A^B\\C^D") == {
        "vr": "PN", "Value": [{"Alphabetic": "A^B"}, {"Alphabetic": "C^D"}]}
    assert element(0x00081190, "UR", "http://x/a\\b") == {"vr": "UR", "Value": ["http://x/a\\b"]}


def test_study_match_has_the_default_attributes_ordered_by_tag() -> None:
    result = search_result(STUDY, retrieve_url=URL)
    assert list(result) == sorted(result)
    assert {int(tag, 16) for tag in result} == set(STUDY_ATTRIBUTES)
    assert result["00100010"] == {"vr": "PN", "Value": [
        {"Alphabetic": "SHEVCHENKO^TARAS", "Phonetic": "Шевченко^Тарас"}]}
    assert result["00100020"] == {"vr": "LO", "Value": ["MIS-1"]}
    assert result["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert result["00201208"] == {"vr": "IS", "Value": [7]}
    assert result["00081190"] == {"vr": "UR", "Value": [URL]}
    assert result["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert result["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
    assert result["00081030"] == {"vr": "LO"}  # known but empty: present, no Value
    assert json.loads(json.dumps(result)) == result


def test_series_and_instance_matches_carry_their_context() -> None:
    series = search_result(SERIES, retrieve_url=URL)
    assert series["0020000E"]["Value"] == ["1.2.3.4"]
    assert series["00200011"] == {"vr": "IS", "Value": [3]}
    assert series["00201209"] == {"vr": "IS", "Value": [5]}
    assert series["0020000D"]["Value"] == ["1.2.3"]
    assert "00201206" not in series  # the study's counts only on request
    assert "00180015" not in series
    instance = search_result(INSTANCE, retrieve_url=URL)
    assert instance["00080018"]["Value"] == ["1.2.3.4.5"]
    assert instance["00200013"] == {"vr": "IS"}
    assert instance["0008103E"]["Value"] == ["axial"]


def test_includefield_adds_known_attributes_only() -> None:
    series = search_result(SERIES, retrieve_url=URL,
                           include={0x00180015, 0x00201206, 0x00280010})
    assert series["00180015"] == {"vr": "CS", "Value": ["CHEST"]}
    assert series["00201206"] == {"vr": "IS", "Value": [2]}
    assert "00280010" not in series  # Rows: not in the index
    everything = search_result(INSTANCE, retrieve_url=URL, include_all=True)
    assert {"00180015", "00201208", "00080061"} <= set(everything)


def _header() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Шевченко^Тарас"
    ds.add_new(0x00020000, "UL", 100)  # group length: not in JSON
    ds.add_new(0x00080000, "UL", 100)
    ds.InstanceNumber = "7"
    ds.WindowCenter = "40"
    ds.add_new(0x00091010, "LO", "PRIVATE")
    ds.add_new(0x00091011, "OB", b"\x01\x02\x03\x04")
    ds.add_new(0x00091012, "OB", b"\x00" * 4096)
    item = Dataset()
    item.PatientName = "Old^Name"
    item.add_new(0x00091012, "OB", b"\x05" * 4096)  # nested: inline, never by reference
    ds.OriginalAttributesSequence = Sequence([Dataset()])
    ds.OriginalAttributesSequence[0].ModifiedAttributesSequence = Sequence([item])
    return ds


def test_metadata_references_bulk_data_and_pixel_data() -> None:
    uris: list[int] = []

    def uri(tag: int) -> str:
        uris.append(tag)
        return f"http://bridge/bulk/{tag:08x}"

    result = dataset_json(_header(), bulk_data_uri=uri, pixel_data=(0x7FE00010, "OW"))
    assert "00080000" not in result and "00020000" not in result
    assert result["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Шевченко^Тарас"}]}
    assert result["00200013"] == {"vr": "IS", "Value": [7]}
    assert result["00281050"] == {"vr": "DS", "Value": [40]}
    assert base64.b64decode(result["00091011"]["InlineBinary"]) == b"\x01\x02\x03\x04"
    assert result["00091012"] == {"vr": "OB", "BulkDataURI": "http://bridge/bulk/00091012"}
    assert result["7FE00010"] == {"vr": "OW", "BulkDataURI": "http://bridge/bulk/7fe00010"}
    assert uris == [0x00091012, 0x7FE00010]
    nested = result["04000561"]["Value"][0]["04000550"]["Value"][0]
    assert nested["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Old^Name"}]}
    assert base64.b64decode(nested["00091012"]["InlineBinary"]) == b"\x05" * 4096
    assert json.loads(json.dumps(result)) == result


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # pydicom's, expected here
def test_metadata_keeps_invalid_numbers_as_text() -> None:
    ds = Dataset()
    # As read from a file: a modality's invalid IS value, decoded only when accessed.
    ds[0x00200013] = RawDataElement(Tag(0x00200013), "IS", 6, b"7.5x\\2", 0, False, True)
    ds.PatientID = "P1"
    result = dataset_json(ds, bulk_data_uri=str)
    assert result["00200013"] == {"vr": "IS", "Value": ["7.5x", "2"]}
    assert result["00100020"] == {"vr": "LO", "Value": ["P1"]}


def test_stow_response_lists_stored_and_failed_objects() -> None:
    results = [
        StowResult("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", retrieve_url=URL + "/i"),
        StowResult("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.6", failure_reason=0x0110),
        StowResult(None, None, failure_reason=0xC000),
    ]
    body = stow_response(results, retrieve_url=URL)
    assert body["00081190"] == {"vr": "UR", "Value": [URL]}
    (stored,) = body["00081199"]["Value"]
    assert stored == {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                      "00081155": {"vr": "UI", "Value": ["1.2.3.4.5"]},
                      "00081190": {"vr": "UR", "Value": [URL + "/i"]}}
    failed = body["00081198"]["Value"]
    assert failed[0]["00081197"] == {"vr": "US", "Value": [0x0110]}
    assert failed[0]["00081155"]["Value"] == ["1.2.3.4.6"]
    assert failed[1] == {"00081197": {"vr": "US", "Value": [0xC000]}}
    only_stored = stow_response(results[:1], retrieve_url=None)
    assert "00081198" not in only_stored and "00081190" not in only_stored
