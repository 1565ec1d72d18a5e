"""A small, fast HL7 v2 reader: charset decoding per MSH-18, segment/field access, unescaping.

python-hl7's ``hl7.parse`` builds a full object tree for every message (~0.2 ms); the bridge
reads a few dozen fields per message, so it splits lazily instead and only unescapes what is
read. Field paths follow HL7 notation: ``PID-5.1`` (segment PID, field 5, component 1),
``PID-3`` (the whole first repetition), ``IPC-6.2``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

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
HL7_NULL = '""'  # HL7's explicit "delete this value"


@dataclass(frozen=True, slots=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


class FieldPath(NamedTuple):
    """A path parsed once (``compile_path``): what :meth:`HL7Message.first` walks.

    ``component`` and ``subcomponent`` are list indexes (the HL7 number minus one), None
    when the path stops above them; numbers past the subcomponent are ignored, as ever.
    """

    segment: str
    field: int
    component: int | None
    subcomponent: int | None
    #: The path as written (``PID-5.1``), for error locations.
    text: str


FieldPaths = tuple[FieldPath, ...]


#: Encodings by MSH-1..MSH-2 as sent, with their escape replacements (senders use one or
#: two sets of delimiters, so each message would otherwise build the same objects again).
_ENCODINGS: dict[str, tuple[Encoding, dict[str, str]]] = {}


def _encoding_of(msh: str) -> tuple[Encoding, dict[str, str]]:
    key = msh[3:8]
    known = _ENCODINGS.get(key)
    if known is None:
        enc = Encoding(msh[3], *(msh[4:8] + "\\&")[:4])
        replacements = {"F": enc.field, "S": enc.component, "T": enc.subcomponent,
                        "R": enc.repetition, "E": enc.escape, ".br": "\n"}
        known = (enc, replacements)
        if len(_ENCODINGS) < 256:
            _ENCODINGS[key] = known
    return known


class HL7Message:
    """One decoded message, split into segments and fields once; fields are never copied,
    components are split and unescaped only when read."""

    __slots__ = ("_by_name", "_component", "_escape", "_first", "_message_type",
                 "_repeated", "_repetition", "_replacements", "_subcomponent", "charset",
                 "encoding", "segments", "text")

    def __init__(self, text: str, charset: str) -> None:
        if "\n" in text:  # both other separators have one (a search for one character is fast)
            for sep in SEGMENT_SEPARATORS:
                if sep in text:
                    text = text.replace(sep, "\r")
        self.text = text
        self.charset = charset
        lines = [line for line in text.split("\r") if line.strip()]
        if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
            raise Rejected("message does not start with an MSH segment", location="MSH",
                           hl7_code="100")
        enc, self._replacements = _encoding_of(lines[0])
        self.encoding = enc
        # Read on every field access: plain attributes are the cheapest to reach.
        self._repetition, self._component = enc.repetition, enc.component
        self._subcomponent, self._escape = enc.subcomponent, enc.escape
        self._message_type: tuple[str, str] | None = None
        separator = enc.field
        self.segments: list[list[str]] = [line.split(separator) for line in lines]
        by_name: dict[str, list[list[str]]] = {}
        #: The first segment of each name: what nearly every read is about.
        first: dict[str, list[str]] = {}
        #: The names of the segments sent more than once (IPC, say).
        repeated: list[str] = []
        for fields in self.segments:
            name = fields[0]
            if name == "MSH":
                fields.insert(1, separator)  # so that fields[n] is MSH-n
            found = by_name.get(name)
            if found is None:
                by_name[name] = [fields]
                first[name] = fields
            else:
                found.append(fields)
                if len(found) == 2:
                    repeated.append(name)
        self._by_name = by_name
        self._first = first
        self._repeated = repeated

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
        return self.first(_ALONE.get(path) or (compile_path(path),), occurrence)

    def first(self, paths: FieldPaths, occurrence: int = 0) -> str:
        """The first of ``paths`` that has a value (unescaped, first repetition), else "".

        What :meth:`get` reads with, and what the compiled readers (:func:`compile_reader`)
        are held to.
        """
        for segment, number, component, subcomponent, _ in paths:
            value = self._sent(segment, number, occurrence)
            if not value:
                continue
            if self._repetition in value:
                value = value.split(self._repetition, 1)[0]
            if component is not None and value:
                parts = value.split(self._component)
                value = parts[component] if component < len(parts) else ""
                if subcomponent is not None and value:
                    subs = value.split(self._subcomponent)
                    value = subs[subcomponent] if subcomponent < len(subs) else ""
            if self._escape in value:
                value = self.unescape(value)
            if value:
                return value
        return ""

    def read(self, reader: Reader, occurrence: int = 0) -> dict[str, str | None]:
        """The values ``reader`` (:func:`compile_reader`) names, from the ``occurrence``-th
        segment of each name (0-based)."""
        if occurrence < 0:
            raise ValueError("occurrences count from 0")
        return reader(self, self._first if not occurrence else self._occurrences(occurrence))

    def _occurrences(self, occurrence: int) -> dict[str, list[str]]:
        """Segment name → its ``occurrence``-th segment (from 1), for those that have one."""
        by_name = self._by_name
        return {name: by_name[name][occurrence] for name in self._repeated
                if occurrence < len(by_name[name])}

    def first_raw(self, paths: FieldPaths, occurrence: int = 0) -> str:
        """The first repetition, as sent, of the first of ``paths`` (whole fields) that is
        not empty; "" when none is. Only the paths' field numbers count."""
        for segment, number, _, _, _ in paths:
            value = self._sent(segment, number, occurrence)
            if value:
                return value.split(self._repetition, 1)[0]
        return ""

    def _sent(self, segment: str, number: int, occurrence: int) -> str:
        """Field ``number`` of the ``occurrence``-th ``segment`` as sent, "" when absent."""
        found = self._by_name.get(segment)
        if found is None or occurrence >= len(found):
            return ""
        fields = found[occurrence]
        return fields[number] if number < len(fields) else ""

    def repetitions(self, segment: str, number: int, occurrence: int = 0) -> list[str]:
        field = self.raw_field(segment, number, occurrence)
        return [rep for rep in field.split(self._repetition) if rep] if field else []

    def components(self, raw: str) -> list[str]:
        """Unescaped components of one raw repetition (subcomponents keep only the first)."""
        sub, esc = self._subcomponent, self._escape
        parts = raw.split(self._component)
        if sub in raw:
            parts = [c.split(sub, 1)[0] for c in parts]
        if esc in raw:
            parts = [self.unescape(c) if esc in c else c for c in parts]
        return parts

    def unescape(self, value: str) -> str:
        """Replace escape sequences; an unknown one is kept as sent, and so is an escape
        character that nothing closes."""
        esc = self._escape
        if esc not in value:
            return value
        # Split on the escape character: the odd pieces are the sequences (the last piece
        # is one only when a closing escape character follows it).
        pieces = value.split(esc)
        last = len(pieces) - 1
        out = [pieces[0]]
        for index in range(1, last + 1, 2):
            seq = pieces[index]
            if index == last:  # nothing closes it
                out.append(esc + seq)
                break
            replacement = self._replacements.get(seq)
            if replacement is None and seq[:1] == "X" and _is_hex(seq[1:]):
                replacement = bytes.fromhex(seq[1:]).decode(self.charset, errors="replace")
            out.append(esc + seq + esc if replacement is None else replacement)
            out.append(pieces[index + 1])
        return "".join(out)

    # -- header shortcuts -------------------------------------------------------------------
    @property
    def message_code(self) -> str:
        return self._type()[0]

    @property
    def trigger(self) -> str:
        return self._type()[1]

    def _type(self) -> tuple[str, str]:
        """MSH-9.1 and MSH-9.2, upper case (read by the mapping, the ACK and the log)."""
        found = self._message_type
        if found is None:
            said = self.read(_MESSAGE_TYPE)
            found = self._message_type = ((said["code"] or "").upper(),
                                          (said["trigger"] or "").upper())
        return found

    @property
    def control_id(self) -> str:
        return self.get("MSH-10")


def _is_hex(text: str) -> bool:
    return len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text) and bool(text)


#: Parsed paths (the mapping tables and the code name a few dozen).
_COMPILED: dict[str, FieldPath] = {}
#: The same, each alone in a tuple (what :meth:`HL7Message.get` hands to ``first``).
_ALONE: dict[str, FieldPaths] = {}


@lru_cache(maxsize=1024)
def parse_path(path: str) -> tuple[str, tuple[int, ...]]:
    segment, _, rest = path.partition("-")
    return segment, tuple(int(n) for n in rest.split("."))


def compile_path(path: str) -> FieldPath:
    """``SEG-F[.C[.S]]`` parsed for :meth:`HL7Message.first` (ValueError when malformed)."""
    compiled = _COMPILED.get(path)
    if compiled is None:
        segment, numbers = parse_path(path)
        compiled = FieldPath(segment, numbers[0],
                             numbers[1] - 1 if len(numbers) > 1 else None,
                             numbers[2] - 1 if len(numbers) > 2 else None, path)
        if len(_COMPILED) < 1024:
            _COMPILED[path] = compiled
            _ALONE[path] = (compiled,)
    return compiled


#: Reads a message's values for :meth:`HL7Message.read`: (message, segment name → the
#: segment read) → value name → value.
Reader = Callable[[HL7Message, dict[str, list[str]]], dict[str, str | None]]


def compile_reader(group: Mapping[str, FieldPaths], *, skip: Container[str] = (),
                   raw: Container[str] = (), hl7_null: bool = False) -> Reader:
    """A function reading every name of ``group`` (but those in ``skip``) from a message.

    For a name, what :meth:`HL7Message.first` gives for its paths, None when none has a
    value; with ``hl7_null``, HL7's explicit null (``""``) comes back as an empty string.
    A name in ``raw`` is a whole field instead: what :meth:`HL7Message.first_raw` gives
    (None for nothing).

    The mapping reads a few dozen values from every message through its tables; a loop
    over the paths spent more time on itself than on the reading. So each table group is
    written out once as straight-line Python (each segment looked up once, each path's
    numbers as constants) and compiled. Only ``repr`` of strings and ints from the parsed
    paths reach the source. ``tests/unit/test_hl7_reader.py`` holds it to ``first`` and
    ``first_raw``.
    """
    names = [name for name in group if name not in skip]
    segments = sorted({path.segment for name in names for path in group[name]})
    variables = {segment: f"segment_{n}" for n, segment in enumerate(segments)}
    lines = ["def read(msg, at):",
             "    repetition, component, subcomponent = "
             "msg._repetition, msg._component, msg._subcomponent",
             "    escape, unescape = msg._escape, msg.unescape"]
    lines += [f"    {variables[segment]} = at.get({segment!r}) or ()" for segment in segments]
    results = []
    for index, name in enumerate(names):
        for path in group[name]:
            if path.field < 0:
                raise ValueError(f"field path {path.text!r} counts back from the end")
        if name in raw:
            lines += _raw_source(group[name], variables, f"value_{index}")
        else:
            lines += _value_source(group[name], variables, f"value_{index}", hl7_null)
        results.append(f"{name!r}: value_{index}")
    lines.append("    return {" + ", ".join(results) + "}")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<hl7 reader {', '.join(map(str, names))}>", "exec"), namespace)
    reader: Reader = namespace["read"]
    return reader


def _value_source(paths: FieldPaths, variables: dict[str, str], result: str,
                  hl7_null: bool) -> list[str]:
    """``result = `` the first valued path (:meth:`HL7Message.first`), as source lines."""
    lines = ["    value = ''"]
    indent = "    "
    for path in paths:
        fields = variables[path.segment]
        lines += [f"{indent}if len({fields}) > {path.field:d}:",
                  f"{indent}    value = {fields}[{path.field:d}]",
                  f"{indent}    if repetition in value:",
                  f"{indent}        value = value.split(repetition, 1)[0]"]
        for separator, number in (("component", path.component),
                                  ("subcomponent", path.subcomponent)):
            if number is None:
                break
            lines += [f"{indent}    if value:",
                      f"{indent}        parts = value.split({separator})",
                      f"{indent}        value = parts[{number:d}] "
                      f"if {number:d} < len(parts) else ''"]
        lines += [f"{indent}    if escape in value:",
                  f"{indent}        value = unescape(value)",
                  f"{indent}if not value:"]
        indent += "    "
    lines.append(f"{indent}pass")
    if hl7_null:
        lines.append(f"    {result} = ('' if value == {HL7_NULL!r} else value) if value else None")
    else:
        lines.append(f"    {result} = value or None")
    return lines


def _raw_source(paths: FieldPaths, variables: dict[str, str], result: str) -> list[str]:
    """``result = `` the first repetition of the first sent field
    (:meth:`HL7Message.first_raw`), as source lines."""
    lines = [f"    {result} = None"]
    keyword = "if"
    for path in paths:
        fields = variables[path.segment]
        lines += [f"    {keyword} len({fields}) > {path.field:d} and {fields}[{path.field:d}]:",
                  f"        {result} = {fields}[{path.field:d}].split(repetition, 1)[0]"]
        keyword = "elif"
    return lines


_MESSAGE_TYPE = compile_reader({"code": (compile_path("MSH-9.1"),),
                                "trigger": (compile_path("MSH-9.2"),)})


class RawHeader(NamedTuple):
    """MSH fields read from the undecoded bytes: enough to pick a charset and key the log.

    A named tuple, not a frozen dataclass: one is made for every message received, and
    a tuple is built at a third of the cost."""

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
    if not sep:  # "MSH" and the end of its line: no field separator to read by
        return None
    fields = line.split(sep)
    fields.insert(1, sep)
    if len(fields) < 19:  # MSH-18 and the fields before it, empty when not sent
        fields += [b""] * (19 - len(fields))
    component = line[4:5] or b"^"
    return RawHeader(fields[3].split(component, 1)[0].decode("ascii", "replace").strip(),
                     fields[4].split(component, 1)[0].decode("ascii", "replace").strip(),
                     fields[10].decode("ascii", "replace").strip(),
                     fields[18].decode("ascii", "replace").strip().split("~")[0])


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
