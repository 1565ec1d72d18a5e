"""Worklist response identifiers encoded straight to bytes. Pure: no I/O.

:func:`bridge.mapping.worklist.dataset.build_identifier` builds a pydicom ``Dataset`` that
pydicom then encodes: about 0.3 + 0.5 ms per response, most of a 46-match query's time at
the server. A :class:`ResponseEncoder` is compiled once per query (return keys, options,
transfer syntax) and writes each item's identifier directly, with the same tables and
value rules, byte for byte what pydicom writes (``tests/unit/test_worklist_encoder.py``
compares them): elements in tag order, defined-length sequences and items, text padded to
an even length with a space (UI with NUL), text VRs in the response's character set.

It covers the usual case only: Little Endian (Implicit or Explicit VR, not deflated), the
default repertoire or ISO_IR 192, and keys asked with their dictionary VR.
:func:`response_encoder` returns None otherwise, and :meth:`ResponseEncoder.encode` returns
None for an item it cannot write exactly (a value the character set cannot hold, an
over-long value): the caller then uses ``build_identifier`` and pydicom.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR

from bridge.mapping.worklist.dataset import (
    _TOP_ATTRIBUTES,
    Getter,
    ResponseOptions,
    WorklistItem,
    _all_keys,
    _Seq,
    response_value,
)
from bridge.mapping.worklist.query import ReturnKey

#: Specific Character Set → the codec of the text VRs (pydicom's mapping for these).
_CODECS = {"": "ascii", "ISO_IR 192": "utf-8"}
#: VRs whose value is text in the Specific Character Set; other string VRs are ASCII.
_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
#: String VRs this encoder writes values of.
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM",
                         "UC", "UI", "UR", "UT"})
#: Explicit VR with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR",
                       "UT", "UV"})
_SPECIFIC_CHARACTER_SET = 0x00080005
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)


class _Unencodable(Exception):
    """This item needs pydicom (see the module)."""


@dataclass(frozen=True, slots=True)
class _Field:
    tag: int
    #: The element's header up to (not including) its length.
    head: bytes
    long_length: bool
    vr: str
    getter: Getter | None = None
    #: Set for a sequence built from items: the fields of each item.
    items: Callable[[Any], Sequence[Any]] | None = None
    item_fields: tuple[_Field, ...] = ()
    #: Leave the element out when it has no value (a sequence asked without an item).
    skip_empty: bool = False


@dataclass(frozen=True, slots=True)
class ResponseEncoder:
    """Encodes :class:`WorklistItem` identifiers for one query (see the module)."""

    fields: tuple[_Field, ...]
    implicit_vr: bool
    codec: str
    options: ResponseOptions
    #: Specific Character Set element, encoded (empty when none is sent).
    prefix: bytes

    def encode(self, item: WorklistItem) -> bytes | None:
        """The identifier's bytes, or None when pydicom must encode this item."""
        try:
            return self.prefix + self._dataset(item, self.fields)
        except (_Unencodable, UnicodeError, struct.error):
            return None

    def _dataset(self, context: Any, fields: tuple[_Field, ...]) -> bytes:
        out = bytearray()
        for f in fields:
            if f.items is not None:
                value = b"".join(
                    _ITEM + struct.pack("<L", len(body)) + body
                    for body in (self._dataset(c, f.item_fields) for c in f.items(context))
                )
            elif f.getter is not None:
                value = self._value(f.getter(context), f.vr)
                if not value and f.skip_empty:
                    continue
            else:
                value = b""
            out += f.head
            out += struct.pack("<L" if f.long_length or self.implicit_vr else "<H", len(value))
            out += value
        return bytes(out)

    def _value(self, raw: Any, vr: str) -> bytes:
        value = response_value(raw, vr, self.options)
        if value is None:
            return b""
        if not isinstance(value, str):
            raise _Unencodable
        data = value.encode(self.codec if vr in _CHARSET_VRS else "ascii")
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
        return data


def response_encoder(
    keys: Sequence[ReturnKey],
    options: ResponseOptions,
    *,
    implicit_vr: bool,
    little_endian: bool,
    deflated: bool,
) -> ResponseEncoder | None:
    """An encoder for ``keys``, or None when this case needs pydicom (see the module)."""
    charset = "" if options.latin_only else options.character_set
    codec = _CODECS.get(charset)
    if codec is None or not little_endian or deflated:
        return None
    try:
        fields = _fields(keys, _TOP_ATTRIBUTES, implicit_vr, skip_empty=False)
    except _Unencodable:
        return None
    prefix = b""
    if charset:
        if any(f.tag <= _SPECIFIC_CHARACTER_SET for f in fields):
            return None  # the character set would not come first: rare, let pydicom sort
        prefix = _field_head(_SPECIFIC_CHARACTER_SET, "CS", implicit_vr)
        value = charset.encode("ascii")
        value += b" " * (len(value) % 2)
        prefix += struct.pack("<L" if implicit_vr else "<H", len(value)) + value
    return ResponseEncoder(fields, implicit_vr, codec, options, prefix)


def _fields(
    keys: Sequence[ReturnKey],
    known: Mapping[int, Getter | _Seq],
    implicit_vr: bool,
    *,
    skip_empty: bool,
) -> tuple[_Field, ...]:
    """The same decisions as ``worklist_dataset._fill``, taken once for every item."""
    fields = []
    for key in sorted(keys, key=lambda k: k.tag):
        if key.tag == _SPECIFIC_CHARACTER_SET:
            continue  # never a return key (the parser leaves it out), set from the options
        spec = known.get(key.tag)
        head = _field_head(key.tag, key.vr, implicit_vr)
        long_length = key.vr in _LONG_VRS
        if isinstance(spec, _Seq):
            sub_keys = key.items if key.items else _all_keys(spec.attributes)
            fields.append(_Field(
                key.tag, _field_head(key.tag, "SQ", implicit_vr), True, "SQ",
                items=spec.items,
                item_fields=_fields(sub_keys, spec.attributes, implicit_vr,
                                    skip_empty=not key.items),
            ))
        elif spec is not None and key.vr != "SQ":
            if key.vr not in _STRING_VRS or key.vr != dictionary_VR(key.tag):
                raise _Unencodable
            fields.append(_Field(key.tag, head, long_length, key.vr, getter=spec,
                                 skip_empty=skip_empty))
        elif not skip_empty:
            if len(key.vr) != 2:
                raise _Unencodable  # e.g. "US or SS": pydicom decides
            fields.append(_Field(key.tag, head, long_length, key.vr))
    return tuple(fields)


def _field_head(tag: int, vr: str, implicit_vr: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit_vr:
        return head
    head += vr.encode("ascii")
    return head + b"\0\0" if vr in _LONG_VRS else head
