"""Writing a de-identified header without re-encoding what did not change.

pydicom writes an element it never decoded as a copy of its bytes, but one it decoded (to be
read, even if left as it was) is encoded again, the slow part of writing. The de-identified
header is written here from the original's bytes instead: every top-level element the
transform did not touch is copied byte for byte from where it was read, and only the touched
and the new ones are encoded (with the data set's own transfer syntax and character set).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping
from typing import Final

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

_LONG: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR",
                          "UT", "UV"})


#: String VRs whose value is text (the others are numbers, bytes or sequences).
_STRING_VRS: Final = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN",
                                "SH", "ST", "TM", "UC", "UI", "UR", "UT"})


def element_starts(ds: Dataset, *, implicit: bool) -> dict[int, int]:
    """Where each top-level element begins in the bytes ``ds`` was just read from (call
    before anything is decoded: decoded elements forget where they were)."""
    starts: dict[int, int] = {}
    for tag, element in ds._dict.items():
        tell = getattr(element, "value_tell", None)
        if tell is None:
            continue
        header = 8 if implicit or str(element.VR) not in _LONG else 12
        starts[int(tag)] = int(tell) - header
    return starts


def splice_header(raw: bytes, ds: Dataset, starts: Mapping[int, int], touched: Collection[int], *,
            header_end: int, body_start: int, implicit: bool, little: bool) -> bytes:
    """The header of ``ds`` (meta and every element before Pixel Data) as bytes."""
    out = DicomBytesIO()
    meta = getattr(ds, "file_meta", None)
    if body_start and meta is not None:
        out.write(raw[:128])
        out.write(b"DICM")
        out.write(file_meta_bytes(meta))
    out.is_little_endian, out.is_implicit_VR = little, implicit
    ends = _ends(starts, header_end)
    encodings = getattr(ds, "_character_set", None)
    codec = encodings[0] if encodings and len(encodings) == 1 else None
    for tag in sorted(int(t) for t in ds._dict):
        start = starts.get(tag)
        if start is not None and tag not in touched:
            out.write(raw[start:ends[tag]])
            continue
        element = ds[tag]
        encoded = simple_element(tag, str(element.VR), element.value, codec,
                                 implicit=implicit, little=little)
        if encoded is None:
            write_data_element(out, element, encodings)
        else:
            out.write(encoded)
    return bytes(out.getvalue())


def simple_element(tag: int, vr: str, value: object, codec: str | None, *, implicit: bool,
                   little: bool) -> bytes | None:
    """A string-valued element encoded directly (the bulk of what de-identification
    writes: pseudonyms, UIDs, dummies, emptied values), or None to leave it to pydicom.
    Values are padded to even length as PS3.5 6.2 says (UIDs with NUL, the rest with
    space)."""
    if vr not in _STRING_VRS or codec is None:
        return None
    if value is None or value == "":
        data = b""
    elif isinstance(value, str):
        data = value.encode(codec)
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        data = "\\".join(value).encode(codec)
    else:
        return None
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    endian = "<" if little else ">"
    head = struct.pack(f"{endian}HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack(f"{endian}I", len(data)) + data
    if vr in _LONG:
        return head + vr.encode() + b"\0\0" + struct.pack(f"{endian}I", len(data)) + data
    if len(data) > 0xFFFF:
        return None
    return head + vr.encode() + struct.pack(f"{endian}H", len(data)) + data


def file_meta_bytes(meta: Dataset) -> bytes:
    """File meta information (always explicit VR little endian) with its group length."""
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    for tag in sorted(int(t) for t in meta._dict):
        if tag == 0x00020000:
            continue
        element = meta[tag]
        encoded = simple_element(tag, str(element.VR), element.value, "ascii", implicit=False,
                                 little=True)
        if encoded is None:
            write_data_element(body, element)
        else:
            body.write(encoded)
    content = body.getvalue()
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(content)) + content


def _ends(starts: Mapping[int, int], header_end: int) -> dict[int, int]:
    ordered = sorted(starts.items(), key=lambda item: item[1])
    ends = {}
    for (tag, _start), following in zip(ordered, [*ordered[1:], (None, header_end)],
                                        strict=True):
        ends[tag] = following[1]
    return ends
