"""Put studies into a test archive: real Part 10 files (written with pydicom) and their index
rows (SQLAlchemy Core), as the storage SCP would leave them, without needing it.

The files carry what the modality sent (:class:`Source`); the index links the study to an MIS
patient and order when given, exactly like a reconciled study. Images are 16x16 so the
archive stays tiny.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from bridge.mapping.dicom.charset import UTF8_TERM
from bridge.store.archive_models import MATCHED, QUEUED, Instance, Series, Study
from bridge.store.models import Order, Patient, PatientIdentifier, table_of, utcnow

UID_PREFIX = "1.2.826.0.1.3680043.10.1137.77."
SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}

S = table_of(Study)
SE = table_of(Series)
I = table_of(Instance)  # noqa: E741
PT = table_of(Patient)
PID = table_of(PatientIdentifier)
ORD = table_of(Order)


@dataclass(frozen=True, slots=True)
class Source:
    """What the modality wrote into the files (and ``studies.source_*``)."""

    patient_id: str = "SRC1"
    issuer: str = ""
    name: str = "Source^Patient"
    birth_date: str = "19700101"
    sex: str = "M"
    accession: str = ""
    referring_physician: str = ""


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    modality: str = "CT"
    instances: int = 2
    number: int | None = 1
    description: str = ""
    body_part: str = ""


@dataclass(slots=True)
class ArchivedInstance:
    pk: int
    sop_instance_uid: str
    sop_class_uid: str
    path: Path


@dataclass(slots=True)
class ArchivedSeries:
    pk: int
    series_instance_uid: str
    modality: str
    instances: list[ArchivedInstance] = field(default_factory=list)


@dataclass(slots=True)
class ArchivedStudy:
    pk: int
    study_instance_uid: str
    series: list[ArchivedSeries] = field(default_factory=list)

    @property
    def instances(self) -> list[ArchivedInstance]:
        return [i for s in self.series for i in s.instances]


def archive_study(
    session: Session,
    archive_root: Path,
    *,
    source: Source = Source(),
    patient: Patient | None = None,
    order: Order | None = None,
    study_uid: str | None = None,
    study_date: str = "20261122",
    study_time: str = "101500",
    study_id: str = "1",
    description: str = "",
    series: Sequence[SeriesPlan] = (SeriesPlan(),),
) -> ArchivedStudy:
    """One study with its series and instances: files under ``archive_root``, index rows
    with the counters (series, instances, modalities, size) the store keeps."""
    conn = session.connection()
    study_uid = study_uid or generate_uid(prefix=UID_PREFIX)
    modalities = "\\".join(dict.fromkeys(plan.modality for plan in series))
    study_pk = conn.execute(insert(S).values(
        study_instance_uid=study_uid,
        patient_id=patient.id if patient is not None else None,
        order_id=order.id if order is not None else None,
        source_patient_id=source.patient_id, source_issuer=source.issuer,
        source_patient_name=source.name, source_name_search=source.name.casefold(),
        source_birth_date=source.birth_date, source_sex=source.sex,
        accession=source.accession, study_date=study_date, study_time=study_time,
        study_id=study_id, description=description,
        referring_physician=source.referring_physician, modalities=modalities,
        num_series=len(series), num_instances=sum(p.instances for p in series),
        size_bytes=0, state="receiving",
        reconciliation=MATCHED if patient is not None else QUEUED,
    )).inserted_primary_key[0]  # type: ignore[index]
    study = ArchivedStudy(int(study_pk), study_uid)
    size = 0
    for plan in series:
        series_uid = generate_uid(prefix=UID_PREFIX)
        series_pk = conn.execute(insert(SE).values(
            study_id=study_pk, series_instance_uid=series_uid, modality=plan.modality,
            series_number=plan.number, description=plan.description,
            body_part=plan.body_part, num_instances=plan.instances,
        )).inserted_primary_key[0]  # type: ignore[index]
        archived = ArchivedSeries(int(series_pk), series_uid, plan.modality)
        study.series.append(archived)
        for number in range(1, plan.instances + 1):
            header = _header(source, study_uid, series_uid, plan, number, study_date,
                             study_time, study_id, description)
            relative = f"{study_uid}/{series_uid}/{header.SOPInstanceUID}.dcm"
            path = archive_root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            header.save_as(path, enforce_file_format=True)
            data = path.read_bytes()
            size += len(data)
            instance_pk = conn.execute(insert(I).values(
                series_id=series_pk, study_id=study_pk,
                sop_instance_uid=header.SOPInstanceUID, sop_class_uid=header.SOPClassUID,
                instance_number=number, transfer_syntax_uid=ExplicitVRLittleEndian,
                path=relative, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                source_charset=None, calling_ae="MODALITY",
            )).inserted_primary_key[0]  # type: ignore[index]
            archived.instances.append(ArchivedInstance(
                int(instance_pk), header.SOPInstanceUID, header.SOPClassUID, path))
    conn.execute(update(S).where(S.c.id == study_pk).values(size_bytes=size))
    return study


def bulk_studies(session: Session, count: int, *, study_date: str = "20260101") -> None:
    """``count`` queued studies without series in one statement (long C-FIND answers)."""
    session.connection().execute(insert(S), [
        {"study_instance_uid": generate_uid(prefix=UID_PREFIX), "patient_id": None,
         "order_id": None, "source_patient_id": f"BULK{n}", "source_issuer": "",
         "source_patient_name": f"Bulk^{n}", "source_name_search": f"bulk^{n}",
         "source_birth_date": "", "source_sex": "", "accession": f"B{n}",
         "study_date": study_date, "study_time": "", "study_id": "", "description": "",
         "referring_physician": "", "modalities": "", "num_series": 0, "num_instances": 0,
         "size_bytes": 0, "state": "receiving", "reconciliation": QUEUED}
        for n in range(count)
    ])


def bulk_index(session: Session, *, patients: int, studies_per_patient: int,
               queued: int) -> None:
    """Index rows only (no files), shaped like a real archive, for query plans: patients
    ``P<n>`` (issuer HOSP, name ``Name<n>^Test``) with one order (accession ``A<n>_<k>``)
    per study, a study a day going back from 2026-12-31, and ``queued`` unreconciled
    studies (source PatientID ``Q<n>``, accession ``QA<n>``)."""
    conn = session.connection()
    now = utcnow()
    patient_pks = conn.execute(insert(PT).returning(PT.c.id, sort_by_parameter_order=True), [
        {"name": f"Name{n}^Test", "name_search": f"name{n}^test", "birth_date": "19800101",
         "sex": "F", "created_at": now, "updated_at": now} for n in range(patients)
    ]).scalars().all()
    conn.execute(insert(PID), [
        {"patient_id": pk, "value": f"P{n}", "issuer": "HOSP", "id_type": "MR", "position": 0}
        for n, pk in enumerate(patient_pks)])
    planned = [(n, k) for n in range(patients) for k in range(studies_per_patient)]
    order_pks = conn.execute(insert(ORD).returning(ORD.c.id, sort_by_parameter_order=True), [
        {"patient_id": patient_pks[n], "placer_issuer": "", "filler_issuer": "",
         "accession": f"A{n}_{k}", "status": "SCHEDULED", "source": "hl7",
         "created_at": now, "updated_at": now} for n, k in planned
    ]).scalars().all()
    last_day = date(2026, 12, 31)
    rows = [
        _bulk_study(f"{UID_PREFIX}1.{i}", patient=patient_pks[n], order=order_pks[i],
                    source_id=f"P{n}", accession=f"A{n}_{k}",
                    day=last_day - timedelta(days=i % 1000))
        for i, (n, k) in enumerate(planned)
    ]
    rows += [
        _bulk_study(f"{UID_PREFIX}2.{i}", patient=None, order=None, source_id=f"Q{i}",
                    accession=f"QA{i}", day=last_day - timedelta(days=i % 1000))
        for i in range(queued)
    ]
    conn.execute(insert(S), rows)


def _bulk_study(uid: str, *, patient: int | None, order: int | None, source_id: str,
                accession: str, day: date) -> dict[str, object]:
    return {
        "study_instance_uid": uid, "patient_id": patient, "order_id": order,
        "source_patient_id": source_id, "source_issuer": "",
        "source_patient_name": f"{source_id}^Src",
        "source_name_search": f"{source_id.casefold()}^src", "source_birth_date": "",
        "source_sex": "", "accession": accession, "study_date": day.strftime("%Y%m%d"),
        "study_time": "120000", "study_id": "", "description": "", "referring_physician": "",
        "modalities": "CT", "num_series": 1, "num_instances": 10, "size_bytes": 0,
        "state": "stable", "reconciliation": MATCHED if patient else QUEUED,
    }


def _header(source: Source, study_uid: str, series_uid: str, plan: SeriesPlan, number: int,
            study_date: str, study_time: str, study_id: str, description: str) -> Dataset:
    sop_class = SOP_CLASSES.get(plan.modality, SecondaryCaptureImageStorage)
    sop_uid = generate_uid(prefix=UID_PREFIX)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    texts = (source.name, source.referring_physician, description, plan.description)
    if not all(text.isascii() for text in texts):
        ds.SpecificCharacterSet = UTF8_TERM
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = source.accession
    ds.Modality = plan.modality
    ds.ReferringPhysicianName = source.referring_physician
    ds.StudyDescription = description
    ds.SeriesDescription = plan.description
    ds.PatientName = source.name
    ds.PatientID = source.patient_id
    if source.issuer:
        ds.IssuerOfPatientID = source.issuer
    ds.PatientBirthDate = source.birth_date
    ds.PatientSex = source.sex
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study_id
    ds.SeriesNumber = plan.number
    ds.InstanceNumber = number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 16
    ds.Columns = 16
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = array("H", ((i * number) % 4096 for i in range(256))).tobytes()
    return ds
