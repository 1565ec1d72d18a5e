"""Plain images (JPEG, PNG, BMP, TIFF) as DICOM Secondary Capture Image Storage objects.

Choices, and why:

- **A baseline JPEG keeps its bitstream**, encapsulated as JPEG Baseline (Process 1). It was
  lossy already; decoding it to native RGB would multiply its size ten-fold without adding a
  single true pixel, and re-encoding would lose more. JPEG Baseline is the lossy syntax
  every DICOM viewer decodes (PS3.5 10.2), and the archive hands a decompressed copy to a
  peer that refuses it. The image is still decoded once here, to refuse a truncated or
  corrupt file before it is archived. Progressive, 12-bit or lossless JPEG (not Process 1)
  is decoded to native pixels instead. Either way Lossy Image Compression is ``01``.
- **PNG, BMP and TIFF are stored native** (Explicit VR Little Endian), pixel for pixel:
  8-bit grey as MONOCHROME2, 16-bit grey as 16 bits stored, colour as RGB (an alpha
  channel is dropped, palettes are expanded). Each page of a multi-page TIFF is an object.
- **UIDs are derived, not random**: the SOP Instance UID from the file's content (SHA-256)
  and page under ``uid_root``, so importing the same file again (after a crash between the
  archive's commit and the processed list, or under another name) gives the same UID and
  the archive's duplicate check catches it. Study and series UIDs come from the metadata
  (see :mod:`bridge.services.legacy_import.image_values`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from PIL import Image, ImageSequence
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from bridge.errors import Rejected
from bridge.mapping.dicom.charset import UTF8_TERM
from bridge.services.legacy_import.classify import Kind
from bridge.services.legacy_import.jpeg_info import ends_complete, read_jpeg_header

#: Attributes the SC IOD requires (Type 1 or 2) that the builder writes itself from
#: ``values`` or empty: Patient, General Study, General Series, SC Equipment, General Image.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
          "SeriesNumber", "InstanceNumber", "PatientOrientation")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                  IndexError, TypeError)


class BadImage(Rejected):
    """The image cannot be decoded or has a pixel format DICOM SC cannot hold as is."""


@dataclass(frozen=True, slots=True)
class Pixels:
    rows: int
    columns: int
    samples: int
    photometric: str
    bits: int
    data: bytes
    #: The original JPEG bitstream (encapsulated as it is) instead of native pixels.
    encapsulated: bool = False


def instance_uid(uid_root: str, sha256: str, page: int) -> str:
    return str(generate_uid(prefix=f"{uid_root}.", entropy_srcs=["legacy-sop", sha256,
                                                                  str(page)]))


def image_pixels(data: bytes, kind: Kind) -> list[Pixels]:
    """The pixels of every page; :class:`BadImage` for a truncated or unusable file."""
    try:
        image = Image.open(io.BytesIO(data))
        if kind is Kind.JPEG:
            return [_jpeg(data, image)]
        return [_native(page.copy()) for page in ImageSequence.Iterator(image)]
    except BadImage:
        raise
    except _DECODE_ERRORS as exc:
        raise BadImage(f"{kind.value.upper()} image truncated or corrupt "
                       f"({type(exc).__name__})") from None


def _jpeg(data: bytes, image: Image.Image) -> Pixels:
    header = read_jpeg_header(data)
    image.load()  # decodes every scan: a truncated file raises here
    if header is not None and header.is_baseline and ends_complete(data):
        return Pixels(header.rows, header.columns, header.components, header.photometric,
                      8, data, encapsulated=True)
    return _native(image)


def _native(image: Image.Image) -> Pixels:
    image.load()
    mode = image.mode
    if mode in ("1", "LA", "La"):
        image, mode = image.convert("L"), "L"
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(image)
        if array.min() < 0 or array.max() > 0xFFFF:
            raise BadImage("32-bit integer image: values outside 16 bits")
        return Pixels(image.height, image.width, 1, "MONOCHROME2", 16,
                      array.astype("<u2").tobytes())
    elif mode == "F":
        raise BadImage("floating-point image: not representable as Secondary Capture")
    elif mode != "L" and mode != "RGB":
        image, mode = image.convert("RGB"), "RGB"
    if image.width > 0xFFFF or image.height > 0xFFFF:
        raise BadImage("image larger than 65535 pixels in a dimension")
    samples = 1 if mode == "L" else 3
    return Pixels(image.height, image.width, samples,
                  "MONOCHROME2" if samples == 1 else "RGB", 8, image.tobytes())


def secondary_capture(pixels: Pixels, values: Mapping[str, str], *, sop_instance_uid: str,
                      source_kind: Kind, now: datetime) -> Dataset:
    """The SC object for one page. ``values``: DICOM keyword → text, including the Study
    and Series Instance UIDs; what the IOD requires and ``values`` lacks is written empty."""
    ds = Dataset()
    if any(not v.isascii() for v in values.values()):
        ds.SpecificCharacterSet = UTF8_TERM
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    for keyword in _TYPE2:
        setattr(ds, keyword, "")
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.ConversionType = values.get("ConversionType") or "DI"
    ds.Modality = values.get("Modality") or "OT"
    if ds.StudyDate and "ContentDate" not in values:
        ds.ContentDate = ds.StudyDate
        if ds.StudyTime:
            ds.ContentTime = ds.StudyTime
    ds.DateOfSecondaryCapture = now.strftime("%Y%m%d")
    ds.TimeOfSecondaryCapture = now.strftime("%H%M%S")
    ds.DerivationDescription = f"{source_kind.value.upper()} file of a legacy export"
    if source_kind is Kind.JPEG:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    _pixel_module(ds, pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = JPEGBaseline8Bit if pixels.encapsulated else ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _pixel_module(ds: Dataset, pixels: Pixels) -> None:
    ds.SamplesPerPixel = pixels.samples
    ds.PhotometricInterpretation = pixels.photometric
    ds.Rows, ds.Columns = pixels.rows, pixels.columns
    ds.BitsAllocated = ds.BitsStored = pixels.bits
    ds.HighBit = pixels.bits - 1
    ds.PixelRepresentation = 0
    if pixels.samples > 1:
        ds.PlanarConfiguration = 0
    if pixels.encapsulated:
        ds.PixelData = encapsulate([pixels.data])
        element = ds["PixelData"]
        element.VR = "OB"
        element.is_undefined_length = True
    else:
        data = pixels.data if len(pixels.data) % 2 == 0 else pixels.data + b"\x00"
        ds.PixelData = data
        ds["PixelData"].VR = "OW" if pixels.bits == 16 else "OB"
