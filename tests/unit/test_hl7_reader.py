"""The compiled readers and the split-based unescaping give what the plain walks give.

``compile_reader`` writes each table group out as straight-line code; these tests hold it to
``HL7Message.first`` / ``first_raw`` on the fixtures and on seeded random variations of them
(fields emptied, escaped, repeated, cut short; segments dropped and doubled; other
delimiters), and hold ``unescape`` to a character-by-character reading of the escapes.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bridge.config.settings import PROJECT_ROOT
from bridge.errors import Rejected
from bridge.mapping.hl7.message import (
    FieldPath,
    FieldPaths,
    HL7Message,
    compile_path,
    compile_reader,
)
from bridge.mapping.hl7.tables import load_hl7_tables
from bridge.mapping.tables import TableError
from tests.conftest import FIXTURES

#: Paths the tables do not name, for the corners: MSH's own fields, component 0 (the last
#: one), subcomponents, a segment or a field that is not there.
EXTRA_PATHS = ("MSH-1", "MSH-2", "MSH-9.3", "PID-0", "PID-5.0", "PID-5.1.2", "PID-11.2.1",
               "OBR-4.2", "NTE-3", "NTE-3.1", "ZZZ-1", "PID-99", "IPC-6.2")
ESCAPES = ("\\F\\", "\\S\\", "\\T\\", "\\R\\", "\\E\\", "\\.br\\", "\\X41\\", "\\X4\\",
           "\\Xzz\\", "\\Q\\", "\\", "\\\\", "\\X\\", "\\XC3A9\\", "x\\T")


def _variant(text: str, rng: random.Random) -> str:
    segments = text.split("\r")
    for _ in range(rng.randint(1, 4)):
        index = rng.randrange(len(segments))
        fields = segments[index].split("|")
        at = rng.randrange(len(fields))
        kind = rng.randrange(9)
        if kind == 0 and at:
            fields[at] = ""
        elif kind == 1 and at:
            fields[at] = '""'
        elif kind == 2:
            cut = rng.randrange(len(fields[at]) + 1)
            fields[at] = fields[at][:cut] + rng.choice(ESCAPES) + fields[at][cut:]
        elif kind == 3 and at:
            fields[at] += "~" + rng.choice(["A^B^C^D^E^F", "", "X&Y^Z", '""'])
        elif kind == 4 and at:
            fields[at] = "~" + fields[at]
        elif kind == 5 and index:
            del segments[index]
            continue
        elif kind == 6:
            segments.insert(index, segments[index])
        elif kind == 7:
            fields = fields[:at + 1]
        elif kind == 8 and at:
            fields[at] = "^".join(["", rng.choice(["a", "", '""', "b&c", "d\\S\\e"]), "z"])
        segments[index] = "|".join(fields)
    return rng.choice(["\r", "\r\n", "\n"]).join(segments)


def _messages() -> list[HL7Message]:
    rng = random.Random(2026)
    messages = []
    for fixture in sorted((FIXTURES / "hl7").glob("*.hl7")):
        raw = fixture.read_bytes()
        try:
            text, charset = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, charset = raw.decode("cp1251"), "cp1251"
        if not text.startswith("MSH"):
            continue
        other_delimiters = text.translate(str.maketrans("|^~\\&", "#$%!*"))
        for variant in [text, other_delimiters, *(_variant(text, rng) for _ in range(25))]:
            try:
                messages.append(HL7Message(variant, charset))
            except Rejected:  # a variation cut MSH short
                continue
    return messages


MESSAGES = _messages()
TABLES = load_hl7_tables(PROJECT_ROOT / "mappings")
GROUPS = {**TABLES.compiled,
          "extra": {path: (compile_path(path),) for path in EXTRA_PATHS}}


def _first_raw_or_none(msg: HL7Message, paths: FieldPaths, occurrence: int) -> str | None:
    for path in paths:
        field = msg.raw_field(path.segment, path.field, occurrence)
        if field:
            return field.split(msg.encoding.repetition, 1)[0]
    return None


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_reader_gives_what_first_gives(group: str) -> None:
    paths = GROUPS[group]
    values = compile_reader(paths)
    with_null = compile_reader(paths, hl7_null=True)
    whole_fields = compile_reader(paths, raw=set(paths))
    for msg in MESSAGES:
        for occurrence in (0, 1, 2):
            expected = {name: msg.first(name_paths, occurrence) or None
                        for name, name_paths in paths.items()}
            assert msg.read(values, occurrence) == expected
            assert msg.read(with_null, occurrence) == {
                name: "" if value == '""' else value for name, value in expected.items()}
            assert msg.read(whole_fields, occurrence) == {
                name: _first_raw_or_none(msg, name_paths, occurrence)
                for name, name_paths in paths.items()}


def test_reader_skips_what_it_is_told_to() -> None:
    msg = HL7Message((FIXTURES / "hl7" / "orm_o01_nw.hl7").read_text("utf-8"), "utf-8")
    reader = compile_reader(TABLES.compiled["order"], skip={"priority"}, raw={"reason"})
    said = msg.read(reader)
    assert "priority" not in said
    assert said["reason"] == "^Підозра на інсульт"  # OBR-31 as sent
    assert said["accession"] == "ACC1001"


def test_reader_takes_no_path_counting_back() -> None:
    with pytest.raises(ValueError, match="PID--1"):
        compile_reader({"x": (FieldPath("PID", -1, None, None, "PID--1"),)})
    with pytest.raises(ValueError, match="from 0"):
        MESSAGES[0].read(compile_reader({}), -1)


def _unescape_by_scanning(msg: HL7Message, value: str) -> str:
    """The escapes read a character at a time: the reading ``unescape`` must keep."""
    enc = msg.encoding
    known = {"F": enc.field, "S": enc.component, "T": enc.subcomponent,
             "R": enc.repetition, "E": enc.escape, ".br": "\n"}
    out, i = [], 0
    while i < len(value):
        end = value.find(enc.escape, i + 1) if value[i] == enc.escape else -1
        if end == -1:
            out.append(value[i])
            i += 1
            continue
        seq = value[i + 1:end]
        replacement = known.get(seq)
        hex_digits = seq[1:]
        if (replacement is None and seq[:1] == "X" and hex_digits and len(hex_digits) % 2 == 0
                and all(c in "0123456789abcdefABCDEF" for c in hex_digits)):
            replacement = bytes.fromhex(hex_digits).decode(msg.charset, errors="replace")
        out.append(value[i:end + 1] if replacement is None else replacement)
        i = end + 1
    return "".join(out)


def test_unescape_reads_what_a_character_scan_reads() -> None:
    rng = random.Random(7)
    msg = HL7Message("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5", "utf-8")
    pieces = ["\\", "\\", "F", "S", "T", "R", "E", ".br", "X", "41", "C3A9", "4", "Q", "a",
              "Ж", " "]
    for _ in range(3000):
        value = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        assert msg.unescape(value) == _unescape_by_scanning(msg, value), value


def test_a_path_int_cannot_read_is_a_table_error(tmp_path: Path) -> None:
    (tmp_path / "hl7v2").mkdir()
    for name in ("messages", "order_status", "priority", "stations"):
        src = PROJECT_ROOT / "mappings" / "hl7v2" / f"{name}.yaml"
        (tmp_path / "hl7v2" / f"{name}.yaml").write_text(src.read_text("utf-8"), "utf-8")
    # "²" is a digit to str.isdigit() but not to int(): once every message failed on it.
    (tmp_path / "hl7v2" / "fields.yaml").write_text("patient:\n  sex: PID-\u00b2\n", "utf-8")
    with pytest.raises(TableError, match="bad field path"):
        load_hl7_tables(tmp_path)
