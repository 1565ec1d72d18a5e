"""Small, real Part 10 objects for tests: CT slices written with pydicom."""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

UID_ROOT = "1.2.826.0.1.3680043.10.1137.77."


def ct_header(*, study_uid: str, series_uid: str | None = None, rows: int = 16,
              columns: int = 16, **attributes: Any) -> Dataset:
    """The CT Image attributes one series shares: no SOP Instance UID, file meta, instance
    number or pixel data. ``attributes`` as for :func:`ct_slice`."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid(prefix=UID_ROOT)
    ds.Modality = "CT"
    ds.PatientID = "MODALITY-ID"
    ds.PatientName = "Wrong^Name"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = ""
    ds.StudyDate = "20261122"
    ds.StudyTime = "093000"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.ReferringPhysicianName = ""
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    _set(ds, attributes)
    return ds


def ct_slice(*, study_uid: str, series_uid: str | None = None, number: int = 1,
             rows: int = 16, columns: int = 16, **attributes: Any) -> Dataset:
    """A CT Image Storage object. ``attributes`` are keywords (``PatientName="A^B"``); a
    ``bytes`` value is written raw (undeclared 8-bit text), with the VR the keyword has;
    ``None`` removes the attribute."""
    ds = ct_header(study_uid=study_uid, series_uid=series_uid, rows=rows, columns=columns)
    ds.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.file_meta = part10_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    ds.InstanceNumber = number
    ds.PixelData = array("H", ((i * (number + 1)) % 4096 for i in range(rows * columns))
                         ).tobytes()
    _set(ds, attributes)
    return ds


def part10_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    """File meta for an object written in Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    return meta


def _set(ds: Dataset, attributes: dict[str, Any]) -> None:
    for keyword, value in attributes.items():
        if isinstance(value, bytes):
            template = Dataset()
            setattr(template, keyword, "x")
            element = template[keyword]
            ds.add(DataElement(element.tag, element.VR, value))
        elif value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def write_series(folder: Path, count: int, *, study_uid: str | None = None,
                 **attributes: Any) -> list[Path]:
    """``count`` slices of one series in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid(prefix=UID_ROOT)
    series_uid = generate_uid(prefix=UID_ROOT)
    paths = []
    for number in range(1, count + 1):
        ds = ct_slice(study_uid=study_uid, series_uid=series_uid, number=number, **attributes)
        path = folder / f"ct{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
