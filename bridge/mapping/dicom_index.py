"""What the archive index keeps of a received object, read from its header. Pure: no I/O.

Values come back as Unicode text (the caller has applied the right codec, see
:mod:`bridge.mapping.dicom_text`) trimmed of DICOM padding. A missing unique key is a
:class:`~bridge.errors.Rejected` naming the attribute, answered with a DIMSE failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from bridge.errors import Rejected


@dataclass(frozen=True, slots=True)
class IndexValues:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    accession: str
    study_date: str
    study_time: str
    study_id: str
    study_description: str
    referring_physician: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str


def read_index_values(header: Dataset, *, transfer_syntax_uid: str) -> IndexValues:
    """The index values of a header; the SOP Instance/Class UIDs fall back to the file meta
    (filled from the C-STORE command) when the data set lacks them."""
    meta = getattr(header, "file_meta", None)
    sop_instance = _text(header, "SOPInstanceUID") or _text(meta, "MediaStorageSOPInstanceUID")
    sop_class = _text(header, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID")
    values = {
        "SOPInstanceUID": sop_instance,
        "SOPClassUID": sop_class,
        "StudyInstanceUID": _text(header, "StudyInstanceUID"),
        "SeriesInstanceUID": _text(header, "SeriesInstanceUID"),
    }
    for keyword, value in values.items():
        if not value:
            raise Rejected(f"{keyword} is missing", location=keyword)
        if len(value) > 64:
            raise Rejected(f"{keyword} is longer than 64 characters", location=keyword)
    return IndexValues(
        sop_instance_uid=sop_instance,
        sop_class_uid=sop_class,
        study_instance_uid=values["StudyInstanceUID"],
        series_instance_uid=values["SeriesInstanceUID"],
        transfer_syntax_uid=transfer_syntax_uid,
        instance_number=_int(header, "InstanceNumber"),
        patient_id=_text(header, "PatientID")[:64],
        issuer=_text(header, "IssuerOfPatientID")[:64],
        patient_name=_text(header, "PatientName")[:320],
        birth_date=_text(header, "PatientBirthDate")[:8],
        sex=_text(header, "PatientSex")[:1],
        accession=_text(header, "AccessionNumber")[:16],
        study_date=_text(header, "StudyDate")[:8],
        study_time=_text(header, "StudyTime")[:14],
        study_id=_text(header, "StudyID")[:16],
        study_description=_text(header, "StudyDescription")[:256],
        referring_physician=_text(header, "ReferringPhysicianName")[:320],
        modality=_text(header, "Modality")[:16],
        series_number=_int(header, "SeriesNumber"),
        series_description=_text(header, "SeriesDescription")[:256],
        body_part=_text(header, "BodyPartExamined")[:16],
    )


def _text(ds: Dataset | None, keyword: str) -> str:
    if ds is None:
        return ""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")


def _int(ds: Dataset, keyword: str) -> int | None:
    text = _text(ds, keyword)
    try:
        return int(text.split("\\")[0])
    except ValueError:
        return None
