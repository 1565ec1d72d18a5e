"""The import mapping tables: sidecar parsing, file-name patterns, normalised values."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config.settings import PROJECT_ROOT
from bridge.mapping.legacy_import.metadata import (
    ImportMapping,
    MetadataError,
    compile_pattern,
    decode_sidecar,
    load_import_mapping,
    normalise,
    parse_sidecar,
    transliterated,
    values_from_fields,
    values_from_path,
    with_patterns,
)
from bridge.mapping.tables import TableError

MAPPINGS = PROJECT_ROOT / "mappings"


@pytest.fixture(scope="module")
def default() -> ImportMapping:
    return load_import_mapping(MAPPINGS, "default")


def test_a_windows_1251_ini_sidecar_gives_the_patient(default: ImportMapping) -> None:
    raw = ("[Patient]\nID=P10003\nLastName=Шевченко\nFirstName=Тарас\nSex=Ч\n"
           "BirthDate=09.03.1814\n[Study]\nAccession=ACC7\nDate=22.11.2026\nTime=09:30\n"
           ).encode("cp1251")
    fields = parse_sidecar(decode_sidecar(raw, default.encodings), "ini")
    values = normalise(values_from_fields(fields, default), default)
    assert values == {"PatientID": "P10003", "PatientName": "Шевченко^Тарас",
                      "PatientSex": "M", "PatientBirthDate": "18140309",
                      "AccessionNumber": "ACC7", "StudyDate": "20261122", "StudyTime": "093000"}


def test_json_and_text_sidecars(default: ImportMapping) -> None:
    as_json = parse_sidecar('{"Patient": {"ID": "X1", "Name": "Ґалаґан^Олена"}, '
                            '"Study": {"Description": "УЗД"}}', "json")
    assert values_from_fields(as_json, default) == {
        "PatientID": "X1", "PatientName": "Ґалаґан^Олена", "StudyDescription": "УЗД"}
    as_text = parse_sidecar("# export\nPatientID: X2\nAccession\tA-9\nbroken line\n", "txt")
    assert values_from_fields(as_text, default) == {"PatientID": "X2", "AccessionNumber": "A-9"}
    with pytest.raises(MetadataError, match="malformed"):
        parse_sidecar("{not json", "json")


def test_utf8_wins_when_valid_and_a_bom_decides() -> None:
    text = "Прізвище=Коваль"
    assert decode_sidecar(text.encode("utf-8"), ("utf-8", "windows-1251")) == text
    assert decode_sidecar(text.encode("cp1251"), ("utf-8", "windows-1251")) == text
    assert decode_sidecar(b"\xef\xbb\xbf" + text.encode("utf-8"), ("windows-1251",)) == text


def test_file_name_patterns(default: ImportMapping) -> None:
    assert values_from_path(("x", "P10003_22.11.2026_ACC9_0007.JPG"), default) == {
        "PatientID": "P10003", "StudyDate": "22.11.2026", "AccessionNumber": "ACC9",
        "InstanceNumber": "0007"}
    assert values_from_path(("P5", "20261122", "img.bmp"), default) == {
        "PatientID": "P5", "StudyDate": "20261122"}
    assert values_from_path(("holiday.jpg",), default) is None
    cyrillic = with_patterns(default, ["{PatientName}_{PatientID}_{n}.{ext}"])
    assert values_from_path(("Петренко Іван_UA90_2.png",), cyrillic) == {
        "PatientName": "Петренко Іван", "PatientID": "UA90", "InstanceNumber": "2"}
    by_folder = with_patterns(default, ["{AccessionNumber}/{*}.{ext}"])
    assert values_from_path(("root", "ACC5", "a.tif"), by_folder) == {"AccessionNumber": "ACC5"}


def test_bad_values_reject_without_quoting_them(default: ImportMapping) -> None:
    with pytest.raises(MetadataError, match="StudyDate: not a date") as caught:
        normalise({"StudyDate": "32.13.2026"}, default)
    assert "32.13" not in str(caught.value)
    with pytest.raises(MetadataError, match="AccessionNumber: not a valid SH"):
        normalise({"AccessionNumber": "A" * 17}, default)
    with pytest.raises(MetadataError, match="backslash"):
        normalise({"PatientID": "A\\B"}, default)


def test_transliteration_kmu55(default: ImportMapping) -> None:
    values = {"PatientName": "Згурський^Єгор", "StudyDescription": "Гастроскопія",
              "PatientID": "UA1", "StudyDate": "20261122"}
    assert transliterated(values, "uk") == {
        "PatientName": "Zghurskyi^Yehor", "StudyDescription": "Hastroskopiia",
        "PatientID": "UA1", "StudyDate": "20261122"}


def test_tables_are_checked_when_loaded(tmp_path: Path) -> None:
    (tmp_path / "import").mkdir()
    for text, message in (("defaults: {NoSuchKeyword: 1}", "not a DICOM keyword"),
                          ("defaults: {PixelData: 1}", "only single text values"),
                          ("sidecar: {extensions: [xml]}", "unknown"),
                          ("sidecar: {encodings: [no-such-codec]}", "no-such-codec"),
                          ("defaults: {StudyDate: tomorrow}", "defaults: StudyDate"),
                          ("filename: {patterns: ['{Bogus}.jpg']}", "not a DICOM keyword")):
        (tmp_path / "import" / "t.yaml").write_text(text)
        with pytest.raises(TableError, match=message):
            load_import_mapping(tmp_path, "t")
    with pytest.raises(TableError, match="no such import mapping"):
        load_import_mapping(tmp_path, "missing")
    assert compile_pattern("regex:(?P<AccessionNumber>\\d+)\\.jpg").depth == 1
