"""Small, real Part 10 objects for tests: CT slices written with pydicom."""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

UID_ROOT = "1.2.826.0.1.3680043.10.1137.77."


def ct_slice(*, study_uid: str, series_uid: str | None = None, number: int = 1,
             rows: int = 16, columns: int = 16, **attributes: Any) -> Dataset:
    """A CT Image Storage object. ``attributes`` are keywords (``PatientName="A^B"``); a
    ``bytes`` value is written raw (undeclared 8-bit text), with the VR the keyword has."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
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
    ds.InstanceNumber = number
    ds.ReferringPhysicianName = ""
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = array("H", ((i * (number + 1)) % 4096 for i in range(rows * columns))
                         ).tobytes()
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
    return ds


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
