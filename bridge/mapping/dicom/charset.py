"""Which character set a received DICOM header's text is really in. Pure: no I/O.

A declared Specific Character Set (0008,0005) is trusted. Without one, DICOM says ASCII and
pydicom reads 8-bit bytes as Latin-1, but modalities in the field send undeclared
windows-1251 or UTF-8: Cyrillic names then turn into mojibake silently. So, for an
undeclared header with 8-bit bytes in its text, the sending peer's configured charset wins;
without one, bytes that are valid UTF-8 are read as UTF-8 (Latin-1 text is almost never valid
UTF-8), and anything else stays Latin-1, DICOM's own reading.
"""

from __future__ import annotations

import codecs

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
#: Text VRs whose bytes depend on the character set (PS3.5 6.1.2.3).
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
#: What the bridge writes when it changes a header: UTF-8, which holds every script
#: (ISO_IR 144 has no Ukrainian Ґ/ґ).
UTF8_TERM = "ISO_IR 192"


def is_declared(header: Dataset) -> bool:
    element = header.get_item(SPECIFIC_CHARACTER_SET)
    return element is not None and bool(element.value)


def undeclared_codec(header: Dataset, peer_charset: str | None) -> str | None:
    """The Python codec for an undeclared header's 8-bit text, or None when the header
    declares its character set or its text is plain ASCII."""
    if is_declared(header):
        return None
    raw = _raw_text_bytes(header)
    if raw.isascii():
        return None
    if peer_charset:
        return codecs.lookup(peer_charset).name
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "utf-8"


def apply_codec(header: Dataset, codec: str | None) -> None:
    """Make pydicom decode the header's (and its items') undeclared text with ``codec``.
    Must run before any text element is read; values already converted are not touched."""
    if codec is not None:
        # pydicom converts raw elements with the charset it noted at read time, else the
        # parent's; both are set so sequence items inherit the codec too.
        header._read_charset = [codec]
        header._parent_encoding = [codec]


def _raw_text_bytes(header: Dataset) -> bytes:
    """The undecoded bytes of the top-level text elements (read lazily by pydicom)."""
    parts: list[bytes] = []
    for tag in header.keys():  # noqa: SIM118 (iterating the Dataset converts the elements)
        element = header.get_item(tag)
        if element is None:
            continue
        vr = element.VR
        if vr is None:  # implicit VR files carry no VR: the dictionary's
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr not in TEXT_VRS:
            continue
        value = element.value
        if isinstance(value, bytes):
            parts.append(value)
        elif isinstance(value, str):
            parts.append(value.encode("utf-8", "surrogateescape"))
    return b"".join(parts)
