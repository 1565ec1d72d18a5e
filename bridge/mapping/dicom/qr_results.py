"""Archive query results, and a result → C-FIND response identifier. Pure: no I/O.

The records are what :mod:`bridge.services.archive.query` finds, as the database has them
now: patient values are the current MIS patient's (after merges) for a reconciled study, the
modality's for one still waiting in the reconciliation queue, and the accession is the
order's when the study is matched to one. QIDO-RS renders the same records as DICOM JSON.

Every key the SCU asked for comes back (PS3.4 C.4.1.2.3): with our value, or empty (same VR)
when we have none or do not know the key. Query/Retrieve Level is always returned; text
outside ASCII is sent as UTF-8 (ISO_IR 192), or transliterated for a Latin-only peer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from bridge.mapping.dicom.charset import UTF8_TERM
from bridge.mapping.dicom.qr_query import Level
from bridge.mapping.worklist.dataset import ResponseOptions, response_value
from bridge.mapping.worklist.query import ReturnKey


@dataclass(frozen=True, slots=True)
class PatientValues:
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    name: str = ""
    birth_date: str = ""
    sex: str = ""


@dataclass(frozen=True, slots=True)
class PatientRecord:
    #: A stable paging key: the lowest id of the patient's studies (a patient known only
    #: from queued studies has no row of its own).
    pk: int
    patient: PatientValues
    num_studies: int
    num_series: int
    num_instances: int


@dataclass(frozen=True, slots=True)
class StudyRecord:
    pk: int
    study_instance_uid: str
    patient: PatientValues
    accession: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    description: str = ""
    referring_physician: str = ""
    modalities: tuple[str, ...] = ()
    num_series: int = 0
    num_instances: int = 0
    #: False while the study waits in the reconciliation queue (patient values as sent).
    reconciled: bool = True


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    pk: int
    study: StudyRecord
    series_instance_uid: str
    modality: str = ""
    series_number: int | None = None
    description: str = ""
    body_part: str = ""
    num_instances: int = 0


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    pk: int
    series: SeriesRecord
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None = None
    transfer_syntax_uid: str = ""


ArchiveRecord = PatientRecord | StudyRecord | SeriesRecord | InstanceRecord

Getter = Callable[[Any], Any]

_PATIENT: dict[int, Getter] = {
    Tag("PatientName"): lambda p: p.name,
    Tag("PatientID"): lambda p: p.patient_id,
    Tag("IssuerOfPatientID"): lambda p: p.issuer_of_patient_id,
    Tag("PatientBirthDate"): lambda p: p.birth_date,
    Tag("PatientSex"): lambda p: p.sex,
}
_PATIENT_COUNTS: dict[int, Getter] = {
    Tag("NumberOfPatientRelatedStudies"): lambda r: r.num_studies,
    Tag("NumberOfPatientRelatedSeries"): lambda r: r.num_series,
    Tag("NumberOfPatientRelatedInstances"): lambda r: r.num_instances,
}
_STUDY: dict[int, Getter] = {
    Tag("StudyInstanceUID"): lambda s: s.study_instance_uid,
    Tag("AccessionNumber"): lambda s: s.accession,
    Tag("StudyDate"): lambda s: s.study_date,
    Tag("StudyTime"): lambda s: s.study_time,
    Tag("StudyID"): lambda s: s.study_id,
    Tag("StudyDescription"): lambda s: s.description,
    Tag("ReferringPhysicianName"): lambda s: s.referring_physician,
    Tag("ModalitiesInStudy"): lambda s: list(s.modalities),
    Tag("NumberOfStudyRelatedSeries"): lambda s: s.num_series,
    Tag("NumberOfStudyRelatedInstances"): lambda s: s.num_instances,
}
_SERIES: dict[int, Getter] = {
    Tag("SeriesInstanceUID"): lambda s: s.series_instance_uid,
    Tag("Modality"): lambda s: s.modality,
    Tag("SeriesNumber"): lambda s: s.series_number,
    Tag("SeriesDescription"): lambda s: s.description,
    Tag("BodyPartExamined"): lambda s: s.body_part,
    Tag("NumberOfSeriesRelatedInstances"): lambda s: s.num_instances,
}
_INSTANCE: dict[int, Getter] = {
    Tag("SOPInstanceUID"): lambda i: i.sop_instance_uid,
    Tag("SOPClassUID"): lambda i: i.sop_class_uid,
    Tag("InstanceNumber"): lambda i: i.instance_number,
}
_RETRIEVE_AE_TITLE = Tag("RetrieveAETitle")
_INSTANCE_AVAILABILITY = Tag("InstanceAvailability")


def record_level(record: ArchiveRecord) -> Level:
    if isinstance(record, PatientRecord):
        return Level.PATIENT
    if isinstance(record, StudyRecord):
        return Level.STUDY
    if isinstance(record, SeriesRecord):
        return Level.SERIES
    return Level.IMAGE


def record_values(record: ArchiveRecord) -> dict[int, Any]:
    """Every attribute we know of ``record`` and of the levels above it, by tag."""
    values: dict[int, Any] = {}
    if isinstance(record, InstanceRecord):
        values.update(_read(_INSTANCE, record))
        record = record.series
    if isinstance(record, SeriesRecord):
        values.update(_read(_SERIES, record))
        record = record.study
    if isinstance(record, StudyRecord):
        values.update(_read(_STUDY, record))
    else:
        values.update(_read(_PATIENT_COUNTS, record))
    values.update(_read(_PATIENT, record.patient))
    return values


def build_find_response(
    record: ArchiveRecord,
    keys: Sequence[ReturnKey],
    options: ResponseOptions,
    *,
    retrieve_ae_title: str,
) -> Dataset:
    """The response identifier for one record: the level, then exactly the requested keys."""
    known = record_values(record)
    ds = Dataset()
    ds.QueryRetrieveLevel = str(record_level(record))
    for key in keys:
        if key.tag == _RETRIEVE_AE_TITLE:
            value: Any = retrieve_ae_title
        elif key.tag == _INSTANCE_AVAILABILITY:
            value = "ONLINE"  # every indexed object is on the archive's disk
        elif key.vr == "SQ" or key.tag not in known:
            ds.add_new(key.tag, key.vr, [] if key.vr == "SQ" else None)
            continue
        else:
            value = known[key.tag]
        ds.add_new(key.tag, key.vr, response_value(_empty_as_none(value), key.vr, options))
    if not options.latin_only and _has_non_ascii(ds):
        ds.SpecificCharacterSet = UTF8_TERM
    return ds


def _read(getters: Mapping[int, Getter], context: Any) -> dict[int, Any]:
    return {tag: get(context) for tag, get in getters.items()}


def _empty_as_none(value: Any) -> Any:
    if value == "" or value == []:
        return None
    return value


def _has_non_ascii(ds: Dataset) -> bool:
    return any(
        elem.VR != "SQ" and elem.value is not None and not str(elem.value).isascii()
        for elem in ds
    )
