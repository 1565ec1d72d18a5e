"""Modality Worklist identifier → WorklistQuery (PS3.4 C.2.2.2 matching)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from bridge.errors import MappingFailed
from bridge.mapping.worklist.query import (
    Range,
    ReturnKey,
    TextMatch,
    like_pattern,
    parse_date_range,
    parse_time_range,
    parse_worklist_query,
    wildcard_matches,
)


def identifier(sps: dict[str, object] | None = None, **top: object) -> Dataset:
    ds = Dataset()
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    if sps is not None:
        item = Dataset()
        for keyword, value in sps.items():
            setattr(item, keyword, value)
        ds.ScheduledProcedureStepSequence = [item]
    return ds


def test_station_and_date_range_inside_the_sequence() -> None:
    query = parse_worklist_query(identifier({
        "ScheduledStationAETitle": "CT1",
        "ScheduledProcedureStepStartDate": "20261122-20261123",
        "Modality": "",
    }))
    assert query.station_ae == TextMatch(values=("CT1",))
    assert query.start_date == Range("20261122", "20261123")
    assert query.modality is None  # empty: universal matching


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20261122", Range("20261122", "20261122")),
        ("20261122-20261123", Range("20261122", "20261123")),
        ("-20261122", Range(None, "20261122")),
        ("20261122-", Range("20261122", None)),
    ],
)
def test_date_ranges(value: str, expected: Range) -> None:
    assert parse_date_range(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0800-1700", Range("080000", "170059.999999")),
        ("08-17", Range("080000", "175959.999999")),
        ("-120000", Range(None, "120000.999999")),
        ("081500.5-", Range("081500", None)),
        ("0930", Range("093000", "093059.999999")),
    ],
)
def test_time_ranges(value: str, expected: Range) -> None:
    assert parse_time_range(value) == expected


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
@pytest.mark.parametrize("bad", ["2026-11-22", "202611", "tomorrow"])
def test_a_malformed_date_is_refused_with_its_location(bad: str) -> None:
    with pytest.raises(MappingFailed) as caught:
        parse_worklist_query(identifier({"ScheduledProcedureStepStartDate": bad}))
    assert caught.value.location == "(0040,0002)"


def test_combined_datetime_is_carried() -> None:
    query = parse_worklist_query(
        identifier({"ScheduledProcedureStepStartDate": "20261122-20261123",
                    "ScheduledProcedureStepStartTime": "2000-0600"}),
        combined_datetime=True,
    )
    assert query.combined_datetime
    assert query.start_time == Range("200000", "060059.999999")


def test_patient_keys_and_wildcards() -> None:
    query = parse_worklist_query(identifier(
        PatientID="UA1?0", IssuerOfPatientID="HOSP", AccessionNumber="A*",
        RequestedProcedureID="RP1", StudyInstanceUID="1.2.3\\1.2.4",
    ))
    assert query.patient_id == TextMatch(pattern="UA1?0")
    assert query.issuer_of_patient_id == TextMatch(values=("HOSP",))
    assert query.accession == TextMatch(pattern="A*")
    assert query.requested_procedure_id == TextMatch(values=("RP1",))
    assert query.study_instance_uid == TextMatch(values=("1.2.3", "1.2.4"))


def test_a_lone_star_is_universal_matching() -> None:
    assert parse_worklist_query(identifier(PatientID="*", PatientName="**")).patient_id is None


def test_patient_name_is_case_folded_in_cyrillic_too() -> None:
    query = parse_worklist_query(identifier(PatientName="ҐАЛАҐ*"))
    assert query.patient_name == TextMatch(pattern="ґалаґ*")
    exact = parse_worklist_query(identifier(PatientName="Ґалаґан^Олена^^"))
    assert exact.patient_name == TextMatch(values=("ґалаґан^олена",))


def test_undeclared_utf8_is_recoded_with_the_peers_charset() -> None:
    mojibake = "ґалаґ*".encode().decode("latin-1")  # what pydicom reads without a charset
    query = parse_worklist_query(identifier(PatientName=mojibake), undeclared_charset="utf-8")
    assert query.patient_name == TextMatch(pattern="ґалаґ*")


def test_return_keys_include_nested_and_unknown_keys() -> None:
    ds = identifier({"ScheduledStationAETitle": "CT1", "ScheduledProtocolCodeSequence": []},
                    PatientName="", SpecificCharacterSet="ISO_IR 192")
    ds.add_new(0x00091001, "LO", None)
    ds.OtherPatientIDsSequence = []
    keys = {k.tag: k for k in parse_worklist_query(ds).return_keys}
    assert Tag("SpecificCharacterSet") not in keys
    assert keys[Tag("PatientName")] == ReturnKey(Tag("PatientName"), "PN")
    assert keys[0x00091001].vr == "LO"
    assert keys[Tag("OtherPatientIDsSequence")].items == ()
    sps = keys[Tag("ScheduledProcedureStepSequence")]
    assert sps.items is not None
    assert [k.tag for k in sps.items] == [Tag("ScheduledStationAETitle"),
                                          Tag("ScheduledProtocolCodeSequence")]


def test_keys_we_do_not_match_on_are_reported() -> None:
    query = parse_worklist_query(identifier({"ScheduledStationName": "ROOM1"},
                                            PatientSex="F"))
    assert set(query.ignored_keys) == {"PatientSex", "ScheduledStationName"}


def test_like_pattern_escapes_sql_wildcards() -> None:
    assert like_pattern("50%_a*b?") == "50\\%\\_a%b_"
    assert wildcard_matches("ґал?ґ*", "ґалаґан^олена")
    assert not wildcard_matches("ґал?ґ", "ґалаґан")
