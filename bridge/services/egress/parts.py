"""Parts of a stored object on their way out, for WADO-RS: the header alone, one bulk
value, or the whole object re-encoded. Like :mod:`bridge.services.egress.objects` (whose patching
they share), they carry the current MIS values.

- :func:`egress_header`: the patched header without pixel data (for metadata), and where the
  pixel data lies in the file, read without loading it.
- :func:`transcoded_object`: the object re-encoded in Explicit VR Little Endian, for a stored
  Implicit VR or Deflated Little Endian object when the client wants the default syntax
  (lossless: the same values with their VRs written out), or for a compressed one, decoded.
  This reads one object into memory;
  only one object at a time is ever held.
- :func:`bulk_value_stream`: the bytes of an uncompressed little-endian pixel data value,
  streamed from the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from bridge.mapping.dicom.patch import SubjectValues
from bridge.services.egress.objects import (
    DEFAULT_CHUNK_SIZE,
    StoredObject,
    apply_mis_values,
    egress_dataset,
    encode_part10,
)
from bridge.services.egress.transcode import decompressed

#: Stored syntaxes that can be re-encoded as Explicit VR Little Endian without decoding
#: pixel data (uncompressed, little endian).
CONVERTIBLE_TO_DEFAULT = frozenset({ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                                    ExplicitVRLittleEndian})
_PIXEL_TAGS = {0x7FE00008: "OF", 0x7FE00009: "OD", 0x7FE00010: None}
#: VRs with a 4-byte length (and two reserved bytes) in explicit VR encoding.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class PixelElement:
    """Where a stored object's pixel data lies (``offset`` of the value, in the file)."""

    tag: int
    vr: str
    offset: int
    length: int

    @property
    def encapsulated(self) -> bool:
        return self.length == UNDEFINED_LENGTH


@dataclass(frozen=True, slots=True)
class Header:
    dataset: Dataset
    transfer_syntax: str
    #: None when the object has no pixel data, or it lies in a deflated file.
    pixel: PixelElement | None
    #: (tag, VR) of the pixel data, also for a deflated file.
    pixel_vr: tuple[int, str] | None


def egress_header(archive_root: Path, instance: StoredObject, subject: SubjectValues | None,
                  *, now: datetime | None = None, local: Path | None = None) -> Header:
    """The header with the MIS values applied (as :func:`egress_stream` would send it).
    ``local``: the checked copy to read (:mod:`bridge.storage.reader`), else the online file."""
    path = local or archive_root / instance.path
    with path.open("rb") as fp:
        dataset = dcmread(fp, stop_before_pixels=True)
        offset = fp.tell()
        syntax = str(dataset.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
        # Patched before any text element is read (patching decodes undeclared text).
        apply_mis_values(dataset, instance, subject, now)
        if syntax == DeflatedExplicitVRLittleEndian:
            pixel_vr = _deflated_pixel_vr(path)
            return Header(dataset, syntax, None, pixel_vr)
        pixel = _pixel_element(fp, offset, syntax, dataset)
    return Header(dataset, syntax, pixel, (pixel.tag, pixel.vr) if pixel else None)


def transcoded_object(archive_root: Path, instance: StoredObject,
                      subject: SubjectValues | None, *, local: Path | None = None) -> bytes:
    """The object with the MIS values applied, as a Part 10 file in Explicit VR Little
    Endian (from Implicit VR or Deflated Little Endian, or decompressed from a compressed
    syntax: :func:`bridge.services.egress.transcode.decompressed`)."""
    dataset = decompressed(egress_dataset(archive_root, instance, subject, local=local))
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return encode_part10(dataset)


def bulk_value_stream(archive_root: Path, instance: StoredObject, pixel: PixelElement,
                      *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                      local: Path | None = None) -> Iterator[bytes]:
    """The pixel data value's bytes from the file (uncompressed, little endian)."""
    with (local or archive_root / instance.path).open("rb") as fp:
        fp.seek(pixel.offset)
        remaining = pixel.length
        while remaining > 0:
            chunk = fp.read(min(chunk_size, remaining))
            if not chunk:
                raise OSError(f"stored file ends inside its pixel data: {instance.path}")
            remaining -= len(chunk)
            yield chunk


def _pixel_element(fp: BinaryIO, offset: int, syntax: str,
                   header: Dataset) -> PixelElement | None:
    fp.seek(offset)
    raw = fp.read(12)
    if len(raw) < 8:
        return None
    order: Literal["little", "big"] = "big" if syntax == ExplicitVRBigEndian else "little"
    tag = (int.from_bytes(raw[0:2], order) << 16) | int.from_bytes(raw[2:4], order)
    if tag not in _PIXEL_TAGS:
        return None
    if syntax == ImplicitVRLittleEndian:
        length = int.from_bytes(raw[4:8], "little")
        return PixelElement(tag, _implicit_vr(tag, length, header), offset + 8, length)
    vr = raw[4:6]
    if vr in _LONG_VRS:
        if len(raw) < 12:
            return None
        return PixelElement(tag, vr.decode("ascii"), offset + 12,
                            int.from_bytes(raw[8:12], order))
    return PixelElement(tag, vr.decode("ascii", "replace"), offset + 8,
                        int.from_bytes(raw[6:8], order))


def _implicit_vr(tag: int, length: int, header: Dataset) -> str:
    fixed = _PIXEL_TAGS[tag]
    if fixed is not None:
        return fixed
    if length == UNDEFINED_LENGTH:
        return "OB"
    bits = header.get("BitsAllocated")
    return "OW" if bits is None or int(bits) > 8 else "OB"


def _deflated_pixel_vr(path: Path) -> tuple[int, str] | None:
    """A deflated file cannot be read in parts: read it whole (rare) for the pixel VR."""
    dataset = dcmread(path)
    for tag in _PIXEL_TAGS:
        if tag in dataset:
            return tag, str(dataset[tag].VR)
    return None
