"""QIDO-RS query parameters → ArchiveQuery: the same matching as C-FIND, PS3.18's controls,
and a clear refusal (Rejected → 400, naming the parameter) for anything malformed."""

from __future__ import annotations

import pytest

from bridge.errors import Rejected
from bridge.mapping.dicom.qido_params import MAX_LIMIT, parse_qido
from bridge.mapping.dicom.qr_query import Level
from bridge.mapping.worklist.query import Range, TextMatch


def test_keywords_and_tags_name_the_same_keys() -> None:
    by_keyword = parse_qido([("PatientID", "P1"), ("AccessionNumber", "A*")], Level.STUDY)
    by_tag = parse_qido([("00100020", "P1"), ("00080050", "A*")], Level.STUDY)
    assert by_keyword.query == by_tag.query
    assert by_keyword.query.patient_id == TextMatch(values=("P1",))
    assert by_keyword.query.accession == TextMatch(pattern="A*")
    assert set(by_keyword.matching_tags) == {0x00100020, 0x00080050}


def test_patient_name_is_case_folded_like_c_find() -> None:
    query = parse_qido([("PatientName", "ШЕВЧЕНКО^Тарас^^")], Level.STUDY).query
    assert query.patient_name == TextMatch(values=("шевченко^тарас",))
    assert parse_qido([("PatientName", "iv*")], Level.STUDY).query.patient_name == TextMatch(
        pattern="iv*")
    assert parse_qido([("PatientName", "*")], Level.STUDY).query.patient_name is None


def test_lists_wildcards_and_universal_matching() -> None:
    query = parse_qido([("ModalitiesInStudy", "CT,MR"), ("StudyID", "1\\2"),
                        ("StudyDescription", "")], Level.STUDY).query
    assert query.modalities_in_study == TextMatch(values=("CT", "MR"))
    assert query.study_id == TextMatch(values=("1", "2"))
    assert query.study_description is None  # empty value: return it, do not match on it
    repeated = parse_qido([("Modality", "CT"), ("Modality", "MR")], Level.SERIES).query
    assert repeated.modality == TextMatch(values=("CT", "MR"))


def test_uid_lists_take_commas_and_backslashes() -> None:
    query = parse_qido([("StudyInstanceUID", "1.2.3,1.2.4\\1.2.5")], Level.STUDY).query
    assert query.study_uids == ("1.2.3", "1.2.4", "1.2.5")
    assert parse_qido([("StudyInstanceUID", "*")], Level.STUDY).query.study_uids == ()


def test_dates_times_and_numbers() -> None:
    query = parse_qido([("StudyDate", "20260101-20260131"), ("StudyTime", "08-"),
                        ("PatientBirthDate", "-19800101")], Level.STUDY).query
    assert query.study_date == Range("20260101", "20260131")
    assert query.study_time == Range("080000", None)
    assert query.birth_date == Range(None, "19800101")
    instances = parse_qido([("SeriesNumber", "2"), ("InstanceNumber", "1,3")], Level.IMAGE)
    assert instances.query.series_numbers == (2,)
    assert instances.query.instance_numbers == (1, 3)


def test_path_uids_set_the_study_and_series() -> None:
    search = parse_qido([("StudyInstanceUID", "9.9")], Level.IMAGE, study_uid="1.2",
                        series_uid="1.2.3")
    assert (search.query.level, search.query.study_uids, search.query.series_uids) == (
        Level.IMAGE, ("1.2",), ("1.2.3",))


@pytest.mark.parametrize(("params", "location"), [
    ([("NoSuchKeyword", "x")], "NoSuchKeyword"),
    ([("patientname", "x")], "patientname"),  # keywords are case-sensitive
    ([("0010001", "x")], "0010001"),
    ([("StudyDate", "2026-01-01")], "StudyDate"),
    ([("StudyDate", "20260101"), ("StudyDate", "20260102")], "StudyDate"),
    ([("StudyTime", "25xx")], "StudyTime"),
    ([("SeriesNumber", "two")], "SeriesNumber"),
    ([("StudyInstanceUID", "1.2.x")], "StudyInstanceUID"),
    ([("StudyInstanceUID", "1." + "2" * 70)], "StudyInstanceUID"),
    ([("PatientName", "A"), ("PatientName", "B")], "PatientName"),
    ([("limit", "-5")], "limit"),
    ([("limit", "0")], "limit"),
    ([("offset", "x")], "offset"),
    ([("offset", "1"), ("offset", "2")], "offset"),
    ([("fuzzymatching", "yes")], "fuzzymatching"),
    ([("includefield", "NoSuchAttribute")], "includefield"),
])
def test_malformed_parameters_are_refused(params: list[tuple[str, str]], location: str) -> None:
    with pytest.raises(Rejected) as raised:
        parse_qido(params, Level.STUDY)
    assert raised.value.location == location


def test_keys_below_the_searched_level_are_refused() -> None:
    with pytest.raises(Rejected, match="not a matching key of a study search"):
        parse_qido([("SOPInstanceUID", "1.2")], Level.STUDY)
    with pytest.raises(Rejected, match="series search"):
        parse_qido([("InstanceNumber", "1")], Level.SERIES)
    # Above the level is fine: QIDO-RS is not hierarchical.
    assert parse_qido([("PatientID", "P")], Level.IMAGE).query.patient_id is not None


def test_real_attributes_we_cannot_match_are_ignored_with_a_warning() -> None:
    search = parse_qido([("InstitutionName", "Kyiv"), ("00091010", "x"),
                         ("00400275.00401001", "RP1"), ("PatientID", "P")], Level.STUDY)
    assert search.query.patient_id == TextMatch(values=("P",))
    assert len(search.warnings) == 3
    assert any("InstitutionName" in w for w in search.warnings)
    assert search.query.ignored_keys == ()


def test_paging_defaults_and_cap() -> None:
    default = parse_qido([], Level.STUDY)
    assert (default.limit, default.offset, default.limit_is_ours) == (MAX_LIMIT, 0, True)
    asked = parse_qido([("limit", "25"), ("offset", "50")], Level.STUDY)
    assert (asked.limit, asked.offset, asked.limit_is_ours) == (25, 50, False)
    too_many = parse_qido([("limit", "5000")], Level.STUDY, max_limit=100)
    assert (too_many.limit, too_many.limit_is_ours) == (100, True)


def test_includefield_and_fuzzymatching() -> None:
    search = parse_qido([("includefield", "00081030,SeriesDescription"),
                         ("includefield", "00400275.00401001"), ("fuzzymatching", "TRUE")],
                        Level.SERIES)
    assert search.include_tags == (0x00081030, 0x0008103E)
    assert not search.include_all
    assert any("fuzzymatching" in w for w in search.warnings)
    assert parse_qido([("includefield", "all")], Level.STUDY).include_all
    assert parse_qido([("fuzzymatching", "false")], Level.STUDY).warnings == ()
