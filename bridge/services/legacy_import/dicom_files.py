"""DICOM files of a legacy export: DICOMDIR sets, and bare data sets without a Part 10
header, which the archive cannot take as they are.

A Part 10 file goes to the archive unchanged (copied; the source is never touched). A bare
data set is wrapped in a Part 10 header (the data set itself unchanged, in the transfer
syntax it was written in) in a temporary file the archive then moves into place.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from bridge.errors import Rejected

_READ_ERRORS = (InvalidDicomError, EOFError, ValueError, struct.error, AttributeError,
                KeyError, TypeError, NotImplementedError, IndexError)
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class BadDicomFile(Rejected):
    """The file looked like DICOM but cannot be taken (the reason says why)."""


def dicomdir_members(path: Path) -> list[Path] | None:
    """The files a DICOMDIR references (existing or not), or None when ``path`` is not a
    DICOMDIR (any other Part 10 file)."""
    try:
        meta = read_file_meta_info(path)
    except _READ_ERRORS:
        return None  # the archive's own parsing gives the precise reason
    if str(meta.get("MediaStorageSOPClassUID", "")) != MediaStorageDirectoryStorage:
        return None
    try:
        directory = dcmread(path)
        records = list(directory.get("DirectoryRecordSequence", []))
    except _READ_ERRORS as exc:
        raise BadDicomFile(f"DICOMDIR unreadable: {type(exc).__name__}") from None
    root = path.parent
    members: list[Path] = []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue  # patient, study and series records name no file
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        members.append(_resolve(root, [str(p).strip() for p in parts]))
    return members


def _resolve(root: Path, parts: list[str]) -> Path:
    """File IDs are upper case; a CD copied to a Linux disk may have them in lower case."""
    exact = root.joinpath(*parts)
    if exact.exists():
        return exact
    current = root
    for part in parts:
        try:
            found = next((c for c in current.iterdir() if c.name.upper() == part.upper()),
                         None)
        except OSError:
            return exact
        if found is None:
            return exact
        current = found
    return current


def _check_complete(dataset: Dataset, size: int) -> None:
    """A forced read stops quietly where a bare file is cut: every value must be whole and
    the last one must end where the file does (no half element left over)."""
    end: int | None = 0
    for tag in list(dataset.keys()):
        element = dataset.get_item(tag, keep_deferred=True)
        if not isinstance(element, RawDataElement) or element.value_tell is None:
            continue
        if element.length == 0xFFFFFFFF:  # a sequence or encapsulated data: end unknown
            end = None
            continue
        stop = element.value_tell + element.length
        short = element.value is not None and len(element.value) < element.length
        if stop > size or short:
            raise BadDicomFile(f"bare DICOM data set truncated at element {tag}",
                               location=str(tag))
        end = stop if end is not None else None
    if end is not None and 0 < end < size:
        raise BadDicomFile("bare DICOM data set truncated inside an element header")


def bare_to_part10(source: Path, target: Path) -> None:
    """Write the bare data set in ``source`` as a Part 10 file at ``target``."""
    try:
        dataset = dcmread(source, force=True)
        _check_complete(dataset, source.stat().st_size)
        missing = [k for k in _REQUIRED if not str(dataset.get(k, "") or "").strip()]
    except _READ_ERRORS as exc:
        raise BadDicomFile(f"not a readable DICOM data set: {type(exc).__name__}") from None
    if missing:
        raise BadDicomFile(f"bare DICOM data set without {', '.join(missing)}",
                           location=missing[0])
    implicit, little = dataset.original_encoding
    if implicit is None:
        raise BadDicomFile("not a readable DICOM data set: unknown encoding")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(dataset.SOPClassUID))
    meta.MediaStorageSOPInstanceUID = UID(str(dataset.SOPInstanceUID))
    if dataset.file_meta and "TransferSyntaxUID" in dataset.file_meta:
        meta.TransferSyntaxUID = dataset.file_meta.TransferSyntaxUID
    elif implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    dataset.file_meta = meta
    try:
        dataset.save_as(target, enforce_file_format=True)
    except _READ_ERRORS as exc:  # a value pydicom read but cannot write back
        raise BadDicomFile(f"bare DICOM data set not re-encodable: {type(exc).__name__}"
                           ) from None
