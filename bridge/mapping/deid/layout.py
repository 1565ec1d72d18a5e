"""Where a Part 10 file's pixel data starts, and its data set: the split that makes restoring
byte-exact.

A de-identified object differs from its original only in its header (the attributes before
Pixel Data); its pixel data element is carried over byte for byte (unless a pixel rule
blanked regions). So the key record keeps the original's header bytes (the *prefix*), and an
object that comes back unchanged is restored as that prefix plus its own pixel data element
(the *tail*): SHA-256 equal to the original, even after a peer rebuilt the file meta
information. When Pixel Data is not the last top-level element (trailing padding, digital
signatures), or the bytes cannot be located (a deflated transfer syntax), the whole file is
the prefix and the tail is empty.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

_LONG_HEADER_VRS: Final = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UN", "UC",
                                     "UR", "UT", "SV", "UV"})


def pixel_tail(raw: bytes, offset: int, *, implicit: bool, little: bool) -> bool:
    """Whether ``raw[offset:]`` is exactly one Pixel Data element (native or encapsulated):
    the element's header at ``offset`` and nothing after it."""
    endian = "<" if little else ">"
    if raw[offset:offset + 4] != struct.pack(f"{endian}HH", 0x7FE0, 0x0010):
        return False
    if implicit:
        length, position = struct.unpack_from(f"{endian}I", raw, offset + 4)[0], offset + 8
    else:
        if raw[offset + 4:offset + 6] not in (b"OB", b"OW"):
            return False
        length, position = struct.unpack_from(f"{endian}I", raw, offset + 8)[0], offset + 12
    if length != 0xFFFFFFFF:
        return position + length == len(raw)
    # Encapsulated: items (FFFE,E000) until the sequence delimiter (FFFE,E0DD).
    while position + 8 <= len(raw):
        group, element, item_length = struct.unpack_from(f"{endian}HHI", raw, position)
        if group != 0xFFFE:
            return False
        if element == 0xE0DD:
            return position + 8 == len(raw)
        if element != 0xE000:
            return False
        position += 8 + item_length
    return False


def body_offset(raw: bytes) -> int:
    """Where the data set starts after the preamble and file meta information (0 when the
    file has neither): what a peer keeps of an object while rebuilding its meta."""
    if raw[128:132] != b"DICM":
        return 0
    position = 132
    while position + 8 <= len(raw):
        group, _element = struct.unpack_from("<HH", raw, position)
        if group != 0x0002:
            return position
        vr = raw[position + 4:position + 6].decode("ascii", "replace")
        if vr in _LONG_HEADER_VRS:
            length = struct.unpack_from("<I", raw, position + 8)[0]
            position += 12 + length
        else:
            length = struct.unpack_from("<H", raw, position + 6)[0]
            position += 8 + length
    return position


def header_hash(data: bytes, tail_length: int) -> str:
    """SHA-256 of an object's data set before its pixel data element (no preamble, no file
    meta): equal on return means the header was not changed outside. The pixel data need not
    be hashed here: a changed one fails the restore's check against the original's hash."""
    end = len(data) - tail_length
    return hashlib.sha256(memoryview(data)[body_offset(data):end]).hexdigest()
