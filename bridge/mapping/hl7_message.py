"""A small, fast HL7 v2 reader: charset decoding per MSH-18, segment/field access, unescaping.

python-hl7's ``hl7.parse`` builds a full object tree for every message (~0.2 ms); the bridge
reads a few dozen fields per message, so it splits lazily instead and only unescapes what is
read. Field paths follow HL7 notation: ``PID-5.1`` (segment PID, field 5, component 1),
``PID-3`` (the whole first repetition), ``IPC-6.2``.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from functools import lru_cache

from bridge.errors import Rejected

#: MSH-18 values (HL7 table 0211) and the Python codecs that read them.
MSH18_CODECS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "iso-8859-1",
    "8859/2": "iso-8859-2",
    "8859/5": "iso-8859-5",
    "8859/15": "iso-8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    # Not in table 0211 but sent by Ukrainian MIS products in the field.
    "CP1251": "cp1251",
    "WINDOWS-1251": "cp1251",
}

SEGMENT_SEPARATORS = ("\r\n", "\n")


@dataclass(frozen=True, slots=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


class HL7Message:
    """One decoded message. Segments are split on first use; fields are never copied."""

    __slots__ = ("_by_name", "_component", "_escape", "_repetition", "_subcomponent", "charset",
                 "encoding", "segments", "text")

    def __init__(self, text: str, charset: str) -> None:
        for sep in SEGMENT_SEPARATORS:
            if sep in text:
                text = text.replace(sep, "\r")
        self.text = text
        self.charset = charset
        lines = [line for line in text.split("\r") if line.strip()]
        if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
            raise Rejected("message does not start with an MSH segment", location="MSH",
                           hl7_code="100")
        msh = lines[0]
        enc = Encoding(msh[3], *(msh[4:8] + "\\&")[:4])
        self.encoding = enc
        # Read on every field access: plain attributes are the cheapest to reach.
        self._repetition, self._component = enc.repetition, enc.component
        self._subcomponent, self._escape = enc.subcomponent, enc.escape
        self.segments: list[list[str]] = []
        for line in lines:
            fields = line.split(enc.field)
            if fields[0] == "MSH":
                fields.insert(1, enc.field)  # so that fields[n] is MSH-n
            self.segments.append(fields)
        self._by_name: dict[str, list[list[str]]] = {}
        for fields in self.segments:
            self._by_name.setdefault(fields[0], []).append(fields)

    # -- access -----------------------------------------------------------------------------
    def has(self, segment: str) -> bool:
        return segment in self._by_name

    def all(self, segment: str) -> list[list[str]]:
        return self._by_name.get(segment, [])

    def raw_field(self, segment: str, number: int, occurrence: int = 0) -> str:
        """A field as sent (escaped, all repetitions)."""
        found = self._by_name.get(segment)
        if not found or occurrence >= len(found):
            return ""
        fields = found[occurrence]
        return fields[number] if number < len(fields) else ""

    def get(self, path: str, occurrence: int = 0) -> str:
        """The unescaped value at ``SEG-F[.C[.S]]`` of the first repetition."""
        segment, numbers = _PATHS.get(path) or parse_path(path)
        found = self._by_name.get(segment)
        if not found or occurrence >= len(found):
            return ""
        fields = found[occurrence]
        number = numbers[0]
        if number >= len(fields):
            return ""
        return self.value_in(fields[number], numbers[1:])

    def value_in(self, field: str, numbers: tuple[int, ...]) -> str:
        """Component/subcomponent ``numbers`` of the first repetition of a raw ``field``."""
        if not field:
            return ""
        value = field.split(self._repetition, 1)[0]
        if numbers and value:
            parts = value.split(self._component)
            value = parts[numbers[0] - 1] if numbers[0] <= len(parts) else ""
            if len(numbers) > 1 and value:
                subs = value.split(self._subcomponent)
                value = subs[numbers[1] - 1] if numbers[1] <= len(subs) else ""
        return self.unescape(value) if self._escape in value else value

    def repetitions(self, segment: str, number: int, occurrence: int = 0) -> list[str]:
        field = self.raw_field(segment, number, occurrence)
        return [rep for rep in field.split(self.encoding.repetition) if rep] if field else []

    def components(self, raw: str) -> list[str]:
        """Unescaped components of one raw repetition (subcomponents keep only the first)."""
        sub, esc = self._subcomponent, self._escape
        parts = raw.split(self._component)
        if sub in raw:
            parts = [c.split(sub, 1)[0] for c in parts]
        if esc in raw:
            parts = [self.unescape(c) for c in parts]
        return parts

    def unescape(self, value: str) -> str:
        esc = self.encoding.escape
        if esc not in value:
            return value
        enc = self.encoding
        out: list[str] = []
        i = 0
        while i < len(value):
            ch = value[i]
            end = value.find(esc, i + 1) if ch == esc else -1
            if end == -1:
                out.append(ch)
                i += 1
                continue
            seq = value[i + 1:end]
            replacement = {
                "F": enc.field, "S": enc.component, "T": enc.subcomponent,
                "R": enc.repetition, "E": enc.escape, ".br": "\n",
            }.get(seq)
            if replacement is None and seq[:1] == "X" and _is_hex(seq[1:]):
                replacement = bytes.fromhex(seq[1:]).decode(self.charset, errors="replace")
            if replacement is None:  # unknown escape: keep it as sent
                out.append(value[i:end + 1])
            else:
                out.append(replacement)
            i = end + 1
        return "".join(out)

    # -- header shortcuts -------------------------------------------------------------------
    @property
    def message_code(self) -> str:
        return self.get("MSH-9.1").upper()

    @property
    def trigger(self) -> str:
        return self.get("MSH-9.2").upper()

    @property
    def control_id(self) -> str:
        return self.get("MSH-10")


def _is_hex(text: str) -> bool:
    return len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text) and bool(text)


#: Parsed paths (the mapping tables name a few dozen).
_PATHS: dict[str, tuple[str, tuple[int, ...]]] = {}


@lru_cache(maxsize=1024)
def parse_path(path: str) -> tuple[str, tuple[int, ...]]:
    segment, _, rest = path.partition("-")
    numbers = tuple(int(n) for n in rest.split("."))
    if len(_PATHS) < 1024:
        _PATHS[path] = (segment, numbers)
    return segment, numbers


@dataclass(frozen=True, slots=True)
class RawHeader:
    """MSH fields read from the undecoded bytes: enough to pick a charset and key the log."""

    sending_application: str
    sending_facility: str
    control_id: str
    msh18: str


def read_raw_header(raw: bytes) -> RawHeader | None:
    """MSH is ASCII in every charset HL7 allows, so it can be read before decoding."""
    start = raw.find(b"MSH")
    if start == -1 or len(raw) < start + 8:
        return None
    end = raw.find(b"\r", start)
    line = raw[start:end if end != -1 else len(raw)].split(b"\n", 1)[0]
    sep = line[3:4]
    fields = line.split(sep)
    fields.insert(1, sep)
    component = line[4:5] or b"^"

    def field(n: int, first_component: bool = False) -> str:
        value = fields[n] if n < len(fields) else b""
        if first_component:
            value = value.split(component, 1)[0]
        return value.decode("ascii", errors="replace").strip()

    return RawHeader(field(3, True), field(4, True), field(10), field(18).split("~")[0])


def choose_charset(msh18: str, sender: str, sender_charsets: dict[str, str],
                   default: str) -> str:
    """The codec for a message: MSH-18 when given, else the sender's setting, else the default."""
    declared = msh18.strip().upper()
    if declared:
        codec = MSH18_CODECS.get(declared)
        if codec is None:
            try:
                codec = codecs.lookup(declared).name
            except LookupError:
                raise Rejected(f"unsupported character set {msh18!r}", location="MSH-18",
                               hl7_code="102") from None
        return codec
    return sender_charsets.get(sender, default)


def decode(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset)
    except UnicodeDecodeError as exc:
        raise Rejected(
            f"bytes at offset {exc.start} are not valid {charset}; declare MSH-18 or set "
            "BRIDGE_HL7_SENDER_CHARSETS for this sender", location="MSH-18", hl7_code="102",
        ) from None
