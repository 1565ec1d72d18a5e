"""What a file is, from its first bytes (never from its extension: legacy modalities name
DICOM files ``.dcm``, ``.dic``, ``IMG0001`` or anything else)."""

from __future__ import annotations

import struct
from enum import Enum
from pathlib import Path

from bridge.mapping.legacy_import.metadata import ImportMapping

_HEAD = 132


class Kind(Enum):
    DICOM = "dicom"  # Part 10: 128-byte preamble and "DICM"
    DICOM_RAW = "dicom_raw"  # no preamble: a bare data set (often implicit VR)
    JPEG = "jpeg"
    PNG = "png"
    BMP = "bmp"
    TIFF = "tiff"
    SIDECAR = "sidecar"  # metadata for images (never imported itself)
    UNKNOWN = "unknown"


IMAGE_KINDS = frozenset({Kind.JPEG, Kind.PNG, Kind.BMP, Kind.TIFF})


def classify(path: Path, mapping: ImportMapping) -> Kind:
    """Raises OSError when the file cannot be read."""
    if mapping.is_sidecar_name(path.name):
        return Kind.SIDECAR
    with path.open("rb") as handle:
        head = handle.read(_HEAD)
    return classify_bytes(head)


def classify_bytes(head: bytes) -> Kind:
    if len(head) >= _HEAD and head[128:132] == b"DICM":
        return Kind.DICOM
    if head.startswith(b"\xff\xd8\xff"):
        return Kind.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Kind.PNG
    if head.startswith(b"BM") and len(head) >= 26:
        return Kind.BMP
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return Kind.TIFF
    if _looks_like_bare_dataset(head):
        return Kind.DICOM_RAW
    return Kind.UNKNOWN


def _looks_like_bare_dataset(head: bytes) -> bool:
    """A data set written without preamble starts with a low group (0002 file meta, 0008
    identification) in little endian, with an explicit VR or a plausible implicit length.
    Only a cue: the file is then parsed, and must hold the four UIDs to be taken."""
    if len(head) < 8:
        return False
    group, element = struct.unpack_from("<HH", head)
    if group not in (0x0002, 0x0008) or element > 0x2000:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    (length,) = struct.unpack_from("<I", head, 4)
    return length < 0x10000
