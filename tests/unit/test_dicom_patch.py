"""MIS values applied to outgoing headers: the database wins, the originals are kept in the
Original Attributes Sequence, and Cyrillic text always leaves as ISO_IR 192."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bridge.mapping.dicom.charset import undeclared_codec
from bridge.mapping.dicom.patch import (
    COERCE,
    MODIFYING_SYSTEM,
    RequestAttributes,
    SubjectValues,
    format_datetime,
    patch_header,
)
from bridge.mapping.worklist.dataset import Code

NOW = datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
UKRAINIAN = "Ґалаґан^Єлизавета^Ївна"

SUBJECT = SubjectValues(
    patient_id="UA100",
    issuer="HOSP",
    name=UKRAINIAN,
    birth_date="19800101",
    sex="F",
    accession="ACC1",
    referring_physician="Франко^Іван",
    request_attributes=(
        RequestAttributes(
            accession="ACC1",
            study_instance_uid="1.2.3.4",
            requested_procedure_id="RP1",
            requested_procedure_description="КТ голови",
            requested_procedure_code=Code("CTHEAD", "LOCAL", "КТ голови"),
            scheduled_procedure_step_id="SPS1",
            scheduled_procedure_step_description="Без контрасту",
            scheduled_protocol_codes=(Code("P1", "LOCAL", "Протокол 1"),),
        ),
    ),
)


def _file(*, implicit: bool = False, charset: str | None = None,
          **elements: Any) -> bytes:
    """A small Part 10 file; bytes values are written as they are (undeclared 8-bit text)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _read(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data), stop_before_pixels=True)


def _written(header: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, header, enforce_file_format=True)
    return buffer.getvalue()


def _wrong_file() -> bytes:
    """What a modality sent for a patient the MIS knows differently."""
    item = Dataset()
    item.RequestedProcedureID = "OLD-RP"
    item.ScheduledProcedureStepID = "OLD-SPS"
    return _file(
        charset="ISO_IR 192",
        PatientID="TYPO100",
        IssuerOfPatientID="OLDISSUER",
        PatientName="Галаган^Елизавета",
        PatientBirthDate="19810101",
        PatientSex="M",
        AccessionNumber="WRONG",
        ReferringPhysicianName="",
        RequestAttributesSequence=[item],
    )


def test_mis_values_replace_the_files_and_the_originals_are_kept() -> None:
    header = _read(_wrong_file())

    assert patch_header(header, SUBJECT, codec=None, now=NOW) is True

    out = _read(_written(header))
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert out.PatientID == "UA100"
    assert out.IssuerOfPatientID == "HOSP"
    assert str(out.PatientName) == UKRAINIAN
    assert out.PatientBirthDate == "19800101"
    assert out.PatientSex == "F"
    assert out.AccessionNumber == "ACC1"
    assert str(out.ReferringPhysicianName) == "Франко^Іван"
    assert out.InstanceCoercionDateTime == format_datetime(NOW)
    [request] = out.RequestAttributesSequence
    assert request.RequestedProcedureID == "RP1"
    assert request.ScheduledProcedureStepID == "SPS1"
    assert request.AccessionNumber == "ACC1"
    assert request.StudyInstanceUID == "1.2.3.4"
    assert request.RequestedProcedureDescription == "КТ голови"
    assert request.RequestedProcedureCodeSequence[0].CodeValue == "CTHEAD"
    assert request.ScheduledProtocolCodeSequence[0].CodeMeaning == "Протокол 1"

    [record] = out.OriginalAttributesSequence
    assert record.ModifyingSystem == MODIFYING_SYSTEM
    assert record.ReasonForTheAttributeModification == COERCE
    assert record.AttributeModificationDateTime == "20260314092653.589793+0000"
    [original] = record.ModifiedAttributesSequence
    assert original.PatientID == "TYPO100"
    assert original.IssuerOfPatientID == "OLDISSUER"
    assert str(original.PatientName) == "Галаган^Елизавета"
    assert original.PatientBirthDate == "19810101"
    assert original.PatientSex == "M"
    assert original.AccessionNumber == "WRONG"
    assert original.ReferringPhysicianName == ""  # empty before, value added
    assert original["InstanceCoercionDateTime"].is_empty  # absent before: zero length
    assert original.RequestAttributesSequence[0].RequestedProcedureID == "OLD-RP"
    # Nothing else is in the record: unchanged attributes are not "modified".
    assert "StudyInstanceUID" not in original


def test_matching_header_is_left_untouched() -> None:
    data = _file(
        charset="ISO_IR 192",
        PatientID="UA100",
        IssuerOfPatientID="HOSP",
        # The worklist gave the modality a Latin group and the Cyrillic one.
        PatientName="GALAGAN^YELYZAVETA^YIVNA=" + UKRAINIAN,
        PatientBirthDate="19800101",
        PatientSex="F",
        AccessionNumber="ACC1",
        ReferringPhysicianName="Франко^Іван^^^",
    )
    header = _read(data)
    # The modality copied the request with more than the MIS gives (kept as it is).
    item = Dataset()
    item.AccessionNumber = "ACC1"
    item.StudyInstanceUID = "1.2.3.4"
    item.RequestedProcedureID = "RP1"
    item.RequestedProcedureDescription = "КТ голови"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CTHEAD", "LOCAL", "КТ голови"
    code.CodingSchemeVersion = "1"
    item.RequestedProcedureCodeSequence = [code]
    item.ScheduledProcedureStepID = "SPS1"
    item.ScheduledProcedureStepDescription = "Без контрасту"
    protocol = Dataset()
    protocol.CodeValue, protocol.CodingSchemeDesignator = "P1", "LOCAL"
    protocol.CodeMeaning = "Протокол 1"
    item.ScheduledProtocolCodeSequence = [protocol]
    item.ReasonForTheRequestedProcedure = "Біль"
    header.RequestAttributesSequence = [item]
    data = _written(header)
    header = _read(data)

    assert patch_header(header, SUBJECT, codec=None, now=NOW) is False
    assert _written(header) == data
    assert "OriginalAttributesSequence" not in header


def test_no_subject_and_nothing_to_fix_is_untouched() -> None:
    data = _file(PatientID="P1", PatientName="DOE^JOHN")
    header = _read(data)
    assert patch_header(header, None, codec=undeclared_codec(header, None), now=NOW) is False
    assert _written(header) == data
    assert "SpecificCharacterSet" not in header


def test_mis_value_missing_keeps_the_files() -> None:
    header = _read(_file(charset="ISO_IR 192", PatientID="P1", PatientBirthDate="19700101",
                         AccessionNumber="MOD1", PatientName="Doe^John"))
    subject = SubjectValues(patient_id="P1", name="Doe^Jane")

    assert patch_header(header, subject, codec=None, now=NOW) is True
    out = _read(_written(header))
    assert str(out.PatientName) == "Doe^Jane"
    assert out.PatientBirthDate == "19700101"
    assert out.AccessionNumber == "MOD1"
    [original] = out.OriginalAttributesSequence[0].ModifiedAttributesSequence
    assert set(original.dir()) == {"PatientName", "InstanceCoercionDateTime"}


def test_new_patient_id_without_issuer_drops_the_old_issuer() -> None:
    header = _read(_file(PatientID="OLD", IssuerOfPatientID="OTHERHOSP"))
    assert patch_header(header, SubjectValues(patient_id="NEW"), codec=None, now=NOW)
    out = _read(_written(header))
    assert out.PatientID == "NEW"
    assert "IssuerOfPatientID" not in out
    original = out.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert (original.PatientID, original.IssuerOfPatientID) == ("OLD", "OTHERHOSP")


def test_existing_original_attributes_items_are_kept() -> None:
    earlier = Dataset()
    earlier.ModifyingSystem = "PACS1"
    earlier.ReasonForTheAttributeModification = "CORRECT"
    earlier.AttributeModificationDateTime = "20200101000000"
    earlier.SourceOfPreviousValues = ""
    earlier.ModifiedAttributesSequence = [Dataset()]
    earlier.ModifiedAttributesSequence[0].PatientID = "FIRST"
    header = _read(_file(PatientID="SECOND", OriginalAttributesSequence=[earlier]))

    assert patch_header(header, SubjectValues(patient_id="THIRD"), codec=None, now=NOW)
    records = _read(_written(header)).OriginalAttributesSequence
    assert [r.ModifyingSystem for r in records] == ["PACS1", MODIFYING_SYSTEM]
    assert records[1].ModifiedAttributesSequence[0].PatientID == "SECOND"


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_undeclared_cp1251_goes_out_as_utf8(implicit: bool) -> None:
    text = "Ґалаґан^Єлизавета^Ївна ґ є ї"
    item = Dataset()
    item.add_new(0x00321060, "LO", "КТ голови ґрунтовна".encode("cp1251"))
    data = _file(implicit=implicit, PatientName=text.encode("cp1251"),
                 StudyDescription="Огляд".encode("cp1251"), RequestAttributesSequence=[item])
    header = _read(data)

    # The peer's configured charset (what instances.source_charset holds).
    assert patch_header(header, None, codec="cp1251", now=NOW) is True

    written = _written(header)
    out = _read(written)
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert str(out.PatientName) == text
    assert out.StudyDescription == "Огляд"
    assert out.RequestAttributesSequence[0].RequestedProcedureDescription == "КТ голови ґрунтовна"
    assert text.encode("utf-8") in written
    # A charset fix changes no value: nothing to record.
    assert "OriginalAttributesSequence" not in out


def test_undeclared_cp1251_detected_from_the_peer_setting() -> None:
    header = _read(_file(PatientName="Ґонта^Їжак".encode("cp1251")))
    codec = undeclared_codec(header, "windows-1251")
    assert codec == "cp1251"
    assert patch_header(header, SUBJECT, codec=codec, now=NOW) is True
    out = _read(_written(header))
    assert str(out.PatientName) == UKRAINIAN
    original = out.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    # The original is recorded as the text it was, not as Latin-1 mojibake.
    assert str(original.PatientName) == "Ґонта^Їжак"


def test_undeclared_utf8_cyrillic_is_declared() -> None:
    text = "Ґалаґан^Єва^Ївна"
    header = _read(_file(PatientName=text.encode("utf-8"), PatientID="P1"))
    codec = undeclared_codec(header, None)
    assert codec == "utf-8"

    assert patch_header(header, None, codec=codec, now=NOW) is True
    out = _read(_written(header))
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert str(out.PatientName) == text


def test_undeclared_codec_sees_implicit_vr_text() -> None:
    header = _read(_file(implicit=True, PatientName="Ґонта".encode()))
    assert undeclared_codec(header, None) == "utf-8"


def test_declared_iso_ir_144_unchanged_is_left_alone() -> None:
    data = _file(charset="ISO_IR 144", PatientID="P1", PatientName="Иванов^Иван")
    header = _read(data)
    subject = SubjectValues(patient_id="P1", name="Иванов^Иван")
    assert patch_header(header, subject, codec=undeclared_codec(header, "cp1251"),
                        now=NOW) is False
    assert _written(header) == data
    assert "Иванов".encode("iso8859_5") in data


def test_declared_iso_ir_144_changed_goes_out_as_utf8_with_ukrainian_letters() -> None:
    item = Dataset()
    item.StudyDescription = "Обследование"
    header = _read(_file(charset="ISO_IR 144", PatientID="P1", PatientName="Иванов^Иван",
                         StudyDescription="Голова", ReferencedStudySequence=[item]))
    # Ґ cannot be written in ISO_IR 144: only UTF-8 can carry the MIS's name.
    assert patch_header(header, SubjectValues(name="Ґудзь^Іван"), codec=None, now=NOW)

    written = _written(header)
    out = _read(written)
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert str(out.PatientName) == "Ґудзь^Іван"
    assert out.StudyDescription == "Голова"
    assert out.ReferencedStudySequence[0].StudyDescription == "Обследование"
    original = out.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert str(original.PatientName) == "Иванов^Иван"
    assert b"?" not in written
    assert "Ґудзь".encode() in written


def test_values_longer_than_their_vr_are_cut_to_stay_valid() -> None:
    header = _read(_file(AccessionNumber="A1"))
    long_request = RequestAttributes(requested_procedure_description="Д" * 100)
    subject = SubjectValues(accession="A" * 20, request_attributes=(long_request,))
    assert patch_header(header, subject, codec=None, now=NOW)
    out = _read(_written(header))
    assert out.AccessionNumber == "A" * 16
    assert out.RequestAttributesSequence[0].RequestedProcedureDescription == "Д" * 64


def test_naive_datetime_has_no_offset() -> None:
    assert format_datetime(datetime(2026, 1, 2, 3, 4, 5)) == "20260102030405.000000"
