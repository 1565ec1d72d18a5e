"""Telling files apart, JPEG headers, Secondary Capture objects, settled files."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from bridge.services.legacy_import.classify import Kind, classify_bytes
from bridge.services.legacy_import.dicom_files import BadDicomFile, bare_to_part10
from bridge.services.legacy_import.jpeg_info import ends_complete, read_jpeg_header
from bridge.services.legacy_import.scan import FileVersion, StabilityFilter, walk
from bridge.services.legacy_import.secondary_capture import (
    BadImage,
    image_pixels,
    instance_uid,
    secondary_capture,
)
from tests.legacy_files import _bare, _part10, image_bytes

UID_ROOT = "1.2.826.0.1.3680043.10.1137"
VALUES = {"StudyInstanceUID": f"{UID_ROOT}.1", "SeriesInstanceUID": f"{UID_ROOT}.2",
          "PatientID": "P1", "PatientName": "Коваль^Ганна", "AccessionNumber": "A1"}


@pytest.mark.parametrize(("data", "kind"), [
    (_part10(study_uid=f"{UID_ROOT}.9"), Kind.DICOM),
    (_bare(study_uid=f"{UID_ROOT}.9"), Kind.DICOM_RAW),
    (image_bytes("JPEG", 1), Kind.JPEG),
    (image_bytes("PNG", 1), Kind.PNG),
    (image_bytes("BMP", 1), Kind.BMP),
    (image_bytes("TIFF", 1), Kind.TIFF),
    (b"Patient: Shevchenko\r\n" * 10, Kind.UNKNOWN),
    (b"", Kind.UNKNOWN),
])
def test_files_are_told_apart_by_content(data: bytes, kind: Kind) -> None:
    assert classify_bytes(data[:132]) is kind


def test_jpeg_headers() -> None:
    colour = read_jpeg_header(image_bytes("JPEG", 1))
    assert colour is not None and colour.is_baseline
    assert (colour.photometric, colour.components) == ("YBR_FULL_422", 3)
    full = read_jpeg_header(image_bytes("JPEG", 1, subsampling=0))
    assert full is not None and full.photometric == "YBR_FULL"
    grey = read_jpeg_header(image_bytes("JPEG", 1, grey=True))
    assert grey is not None and grey.photometric == "MONOCHROME2"
    progressive = read_jpeg_header(image_bytes("JPEG", 1, progressive=True))
    assert progressive is not None and not progressive.is_baseline
    assert read_jpeg_header(b"\xff\xd8\x00\x00") is None
    assert ends_complete(image_bytes("JPEG", 1)) and not ends_complete(image_bytes("JPEG", 1)[:-2])


def _dataset(data: bytes, kind: Kind) -> list[pydicom.Dataset]:
    now = datetime(2026, 11, 22, 10, 0, 0)
    out = []
    for page, pixels in enumerate(image_pixels(data, kind)):
        ds = secondary_capture(pixels, VALUES, sop_instance_uid=instance_uid(UID_ROOT, "ab", page),
                               source_kind=kind, now=now)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(pydicom.dcmread(io.BytesIO(buffer.getvalue())))
    return out


def test_a_baseline_jpeg_keeps_its_bitstream() -> None:
    data = image_bytes("JPEG", 7, quality=95)
    [ds] = _dataset(data, Kind.JPEG)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert (ds.PhotometricInterpretation, ds.LossyImageCompression) == ("YBR_FULL_422", "01")
    frame = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
    assert next(frame).rstrip(b"\x00") == data
    assert ds.pixel_array.shape == (40, 56, 3)  # decodable (pylibjpeg)


def test_native_images_keep_every_pixel() -> None:
    rgb = np.random.default_rng(3).integers(0, 255, (20, 30, 3)).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    [ds] = _dataset(out.getvalue(), Kind.PNG)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.PhotometricInterpretation == "RGB" and "LossyImageCompression" not in ds
    assert np.array_equal(ds.pixel_array, rgb)
    grey16 = np.arange(600, dtype="uint16").reshape(20, 30) * 100
    out = io.BytesIO()
    Image.fromarray(grey16).save(out, format="PNG")
    [ds] = _dataset(out.getvalue(), Kind.PNG)
    assert (ds.BitsStored, ds.PhotometricInterpretation) == (16, "MONOCHROME2")
    assert np.array_equal(ds.pixel_array, grey16)
    assert str(ds.PatientName) == "Коваль^Ганна" and ds.SpecificCharacterSet == "ISO_IR 192"
    for keyword in ("StudyDate", "ReferringPhysicianName", "StudyID", "PatientOrientation",
                    "PatientBirthDate", "PatientSex", "SeriesNumber"):
        assert keyword in ds  # Type 2: present, maybe empty
    assert (ds.Modality, ds.ConversionType) == ("OT", "DI")


def test_multi_page_tiff_gives_one_object_per_page() -> None:
    pages = [Image.fromarray(np.full((8, 8), v, dtype="uint8")) for v in (10, 20, 30)]
    out = io.BytesIO()
    pages[0].save(out, format="TIFF", save_all=True, append_images=pages[1:])
    datasets = _dataset(out.getvalue(), Kind.TIFF)
    assert [int(ds.pixel_array[0, 0]) for ds in datasets] == [10, 20, 30]
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3


@pytest.mark.parametrize(("data", "kind"), [
    (image_bytes("JPEG", 5)[:-600], Kind.JPEG),
    (image_bytes("PNG", 5)[:-200], Kind.PNG),
    (b"BM" + b"\x00" * 60, Kind.BMP),
    (b"II*\x00" + b"\x00" * 60, Kind.TIFF),
])
def test_truncated_or_corrupt_images_are_refused(data: bytes, kind: Kind) -> None:
    with pytest.raises(BadImage, match="truncated or corrupt"):
        image_pixels(data, kind)


def test_a_bare_data_set_is_wrapped_whole_or_refused(tmp_path: Path) -> None:
    data = _bare(study_uid=f"{UID_ROOT}.9", number=3)
    (tmp_path / "raw").write_bytes(data)
    bare_to_part10(tmp_path / "raw", tmp_path / "p10.dcm")
    wrapped = pydicom.dcmread(tmp_path / "p10.dcm")
    assert wrapped.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert wrapped.InstanceNumber == 3
    for cut in (100, 301, len(data) - 10):
        (tmp_path / "raw").write_bytes(data[:cut])
        with pytest.raises(BadDicomFile, match="truncated"):
            bare_to_part10(tmp_path / "raw", tmp_path / "p10.dcm")


def test_uids_derive_from_content() -> None:
    assert instance_uid(UID_ROOT, "ab", 0) == instance_uid(UID_ROOT, "ab", 0)
    assert instance_uid(UID_ROOT, "ab", 0) != instance_uid(UID_ROOT, "ab", 1)
    assert instance_uid(UID_ROOT, "ab", 0).startswith(UID_ROOT + ".")
    assert len(instance_uid(UID_ROOT, "ab", 0)) <= 64


def test_a_file_passes_once_seen_twice_unchanged() -> None:
    stability = StabilityFilter()
    first = FileVersion(Path("/x/a.jpg"), 10, 1)
    grown = FileVersion(Path("/x/a.jpg"), 20, 2)
    assert stability.stable([first]) == []
    assert stability.stable([grown]) == []
    assert stability.stable([grown]) == [grown]


def test_walk_lists_dicomdir_first_and_skips_hidden_and_archive(tmp_path: Path) -> None:
    for name in ("b/IMG1", "b/DICOMDIR", "a.jpg", ".hidden/x", "archive/y.dcm"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [str(v.path.relative_to(tmp_path)) for v in walk([tmp_path],
                                                             skip=[tmp_path / "archive"])]
    assert found == ["a.jpg", "b/DICOMDIR", "b/IMG1"]
