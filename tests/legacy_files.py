"""A legacy modality's export folder for the import tests: DICOM files named any way, a bare
data set, a DICOMDIR set, plain images with Cyrillic names and sidecars, and bad files."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.fileset import FileSet

from tests.dicom_factories import ct_slice


def image_bytes(kind: str, seed: int, *, size: tuple[int, int] = (40, 56), grey: bool = False,
                **options: object) -> bytes:
    """A small real image (``kind``: JPEG, PNG, BMP, TIFF) with content unique to ``seed``."""
    rng = np.random.default_rng(seed)
    shape = size if grey else (*size, 3)
    pixels = Image.fromarray(rng.integers(0, 255, shape).astype("uint8"))
    out = io.BytesIO()
    pixels.save(out, format=kind, **options)  # type: ignore[arg-type]
    return out.getvalue()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content's SHA-256 (to prove nothing changed)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class LegacyExport:
    root: Path
    #: What each file should become: imported, duplicate, rejected, directory, metadata.
    expected: dict[str, str] = field(default_factory=dict)

    def add(self, relative: str, data: bytes, expected: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.expected[relative] = expected
        return path


def _part10(**attributes: object) -> bytes:
    out = io.BytesIO()
    ct_slice(**attributes).save_as(out, enforce_file_format=True)  # type: ignore[arg-type]
    return out.getvalue()


def _bare(**attributes: object) -> bytes:
    dataset = ct_slice(**attributes)  # type: ignore[arg-type]
    del dataset.file_meta
    out = io.BytesIO()
    dataset.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return out.getvalue()


def mixed_export(root: Path, *, study_uid: str, accession: str, patient_id: str,
                 sidecar_patient_id: str, sidecar_accession: str) -> LegacyExport:
    """The mixed folder: CT slices of ``study_uid`` with ``accession`` (the MIS order's) as
    ``.dcm``, ``.dic``, no extension and a bare data set; a DICOMDIR set of the same study;
    images in ``Ендоскопія/`` whose folder sidecar (windows-1251 INI) gives only the patient
    ID and the accession; and bad files."""
    export = LegacyExport(root)
    common = {"study_uid": study_uid, "AccessionNumber": accession, "PatientID": patient_id,
              "PatientName": "Wrong^Name"}
    first = _part10(number=1, **common)
    export.add("ct/slice1.dcm", first, "imported")
    export.add("ct/slice2.dic", _part10(number=2, **common), "imported")
    export.add("ct/IMG0003", _part10(number=3, **common), "imported")
    export.add("ct/raw0004", _bare(number=4, **common), "imported")
    fileset = FileSet()
    for number in (5, 6):
        fileset.add(ct_slice(number=number, **common))  # type: ignore[arg-type]
    fileset.write(root / "cd")
    for path in sorted((root / "cd").rglob("*")):
        if path.is_file():
            relative = str(path.relative_to(root))
            export.expected[relative] = ("directory" if path.name == "DICOMDIR"
                                         else "imported")
    export.add("Ендоскопія/study.ini",
               (f"[Patient]\nID={sidecar_patient_id}\n[Study]\nAccession={sidecar_accession}\n"
                "Date=22.11.2026\nDescription=Гастроскопія\n").encode("cp1251"), "metadata")
    export.add("Ендоскопія/Знімок 1.jpg", image_bytes("JPEG", 1, quality=90), "imported")
    export.add("Ендоскопія/Знімок 2.png", image_bytes("PNG", 2), "imported")
    export.add("Ендоскопія/Знімок 3.bmp", image_bytes("BMP", 3), "imported")
    export.add("Ендоскопія/Знімок 4.tif", image_bytes("TIFF", 4, grey=True), "imported")
    export.add("Ендоскопія/Знімок 5.jpg", image_bytes("JPEG", 5, progressive=True), "imported")
    # Bad files.
    export.add("ct/обрізаний.dcm", first[:-300], "rejected")
    export.add("ct/raw0005", _bare(number=5, **common)[:-40], "rejected")
    export.add("Ендоскопія/нотатки.jpg", "Це не зображення".encode(), "rejected")
    export.add("Ендоскопія/обрізаний.jpg", image_bytes("JPEG", 6)[:400], "rejected")
    return export
