"""Objects full of personal data for the de-identification tests: Cyrillic names, the name
typed into descriptions and comments (as written and transliterated), nested sequences,
private attributes of two vendors (one of them safe), an SR whose content names the patient,
an ultrasound image with burned-in text."""

from __future__ import annotations

from array import array
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    UltrasoundImageStorage,
    generate_uid,
)

from tests.dicom_factories import UID_ROOT, ct_slice, part10_meta

PATIENT_NAME = "Шевченко^Тарас^Григорович"
PATIENT_ID = "UA-7781234"
OTHER_ID = "MRN-555001"
ACCESSION = "ACC20261207"
BIRTH_DATE = "19610309"
#: Strings no exported file may hold anywhere (the PHI scan looks for each).
IDENTITY_STRINGS = ("Шевченко", "Тарас", "Shevchenko", "Taras", PATIENT_ID, OTHER_ID,
                    ACCESSION)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def patient_attributes(ds: Dataset, study_uid: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.IssuerOfPatientID = "UA-MIS"
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "M"
    ds.PatientAge = "065Y"
    ds.PatientWeight = "81"
    ds.PatientAddress = "Київ, вул. Хрещатик 1"
    ds.PatientTelephoneNumbers = "+380441234567"
    ds.OtherPatientIDs = OTHER_ID
    other = Dataset()
    other.PatientID = OTHER_ID
    other.IssuerOfPatientID = "HOSP-2"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.AccessionNumber = ACCESSION
    ds.StudyDate, ds.StudyTime = "20261207", "101500"
    ds.SeriesDate, ds.AcquisitionDate, ds.ContentDate = "20261207", "20261207", "20261207"
    ds.StudyDescription = "КТ грудної клітки Шевченко Тарас"
    ds.SeriesDescription = "chest Shevchenko Taras"
    ds.ImageComments = f"Patient Shevchenko, ID {PATIENT_ID}, called back"
    ds.InstitutionName = "Київська міська лікарня №1"
    ds.InstitutionAddress = "Київ"
    ds.StationName = "CT01"
    ds.DeviceSerialNumber = "SN-998877"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "SOMATOM"
    ds.ReferringPhysicianName = "Коваленко^Олена"
    ds.OperatorsName = "Бондар^Іван"
    ds.PerformingPhysicianName = "Мельник^Петро"
    ds.FrameOfReferenceUID = generate_uid(prefix=UID_ROOT)
    request = Dataset()
    request.RequestedProcedureID = "RP-1"
    request.RequestedProcedureDescription = f"CT for {PATIENT_NAME}"
    request.ScheduledProcedureStepID = "SPS-1"
    request.AccessionNumber = ACCESSION
    request.StudyInstanceUID = study_uid
    ds.RequestAttributesSequence = Sequence([request])
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    referenced.ReferencedSOPInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.ReferencedStudySequence = Sequence([referenced])
    ds.ProcedureCodeSequence = Sequence([_code("CT-CHEST", "99UA", "КТ грудної клітки")])
    # Two vendors' private blocks: Siemens' CSA-like text (not safe) and GE's b-value (safe).
    siemens = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    siemens.add_new(0x10, "LO", f"owner {PATIENT_NAME}")
    ge = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
    ge.add_new(0x39, "IS", ["1000", "0", "0", "0"])
    ge.add_new(0x10, "LO", PATIENT_ID)  # not in the safe list


def phi_ct(study_uid: str, series_uid: str, number: int = 1, *, rows: int = 16,
           columns: int = 16) -> Dataset:
    ds = ct_slice(study_uid=study_uid, series_uid=series_uid, number=number, rows=rows,
                  columns=columns)
    patient_attributes(ds, study_uid)
    ds.BurnedInAnnotation = "NO"
    return ds


def phi_sr(study_uid: str, referenced: Dataset | None = None) -> Dataset:
    """A Basic Text SR whose content names the patient (PNAME and TEXT items)."""
    ds = Dataset()
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.file_meta = part10_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.Modality = "SR"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    patient_attributes(ds, study_uid)
    for keyword in ("ImageComments",):
        delattr(ds, keyword)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    observer = Dataset()
    observer.RelationshipType = "HAS OBS CONTEXT"
    observer.ValueType = "PNAME"
    observer.ConceptNameCodeSequence = Sequence([_code("121008", "DCM", "Person Observer Name")])
    observer.PersonName = "Коваленко^Олена"
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    text.TextValue = f"Пацієнт Шевченко Тарас ({PATIENT_ID}): без патології."
    ds.ContentSequence = Sequence([observer, text])
    if referenced is not None:
        evidence = Dataset()
        evidence.StudyInstanceUID = study_uid
        series = Dataset()
        series.SeriesInstanceUID = referenced.SeriesInstanceUID
        sop = Dataset()
        sop.ReferencedSOPClassUID = referenced.SOPClassUID
        sop.ReferencedSOPInstanceUID = referenced.SOPInstanceUID
        series.ReferencedSOPSequence = Sequence([sop])
        evidence.ReferencedSeriesSequence = Sequence([series])
        ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    return ds


def burned_in_us(study_uid: str, *, rows: int = 48, columns: int = 64,
                 manufacturer: str = "ACME Medical", model: str = "Sono 5") -> Dataset:
    """An 8-bit ultrasound image whose top 8 rows are 'text' (value 255)."""
    ds = Dataset()
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.file_meta = part10_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.Modality = "US"
    ds.SeriesNumber, ds.InstanceNumber = 2, 1
    patient_attributes(ds, study_uid)
    ds.Manufacturer, ds.ManufacturerModelName = manufacturer, model
    ds.BurnedInAnnotation = "YES"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    pixels = array("B", [255 if i < 8 * columns else (i % 200) for i in range(rows * columns)])
    ds.PixelData = pixels.tobytes()
    return ds


def write(ds: Dataset, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{ds.SOPInstanceUID}.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path
