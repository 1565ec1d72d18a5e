"""The HL7 reader: charsets, escapes, paths, the raw header."""

from __future__ import annotations

import pytest

from bridge.errors import Rejected
from bridge.mapping.hl7.message import HL7Message, choose_charset, decode, read_raw_header
from tests.conftest import hl7_fixture


def message(name: str, sender_charsets: dict[str, str] | None = None) -> HL7Message:
    raw = hl7_fixture(name)
    header = read_raw_header(raw)
    assert header is not None
    charset = choose_charset(header.msh18, header.sending_application, sender_charsets or {},
                             "utf-8")
    return HL7Message(decode(raw, charset), charset)


def test_utf8_declared_cyrillic_with_ghe() -> None:
    msg = message("adt_a01_utf8.hl7")
    assert msg.charset == "utf-8"
    assert msg.get("PID-5.1") == "Ґалаґан"
    assert msg.get("PID-5.2") == "Олена"


def test_8859_5_declared() -> None:
    raw = hl7_fixture("adt_a04_8859_5.hl7")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # the fixture really is 8859-5 bytes
    msg = message("adt_a04_8859_5.hl7")
    assert msg.charset == "iso-8859-5"
    assert msg.get("PID-5.1") == "Шевченко"


def test_undeclared_windows_1251_needs_the_sender_setting() -> None:
    with pytest.raises(Rejected) as caught:
        message("orm_o01_win1251.hl7")
    assert caught.value.location == "MSH-18"
    msg = message("orm_o01_win1251.hl7", {"OLD_MIS": "cp1251"})
    assert msg.get("PID-5.1") == "Ковальчук"
    assert msg.get("PID-5.2") == "Ірина"


def test_all_five_escape_sequences() -> None:
    msg = message("orm_o01_nw.hl7")
    note = msg.get("NTE-3")
    for char in "|^&~\\":
        assert char in note, char
    assert msg.get("OBR-4.2") == "КТ голови&шиї"


def test_hex_escape_and_unknown_escape() -> None:
    msg = HL7Message("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rNTE|1||a\\X41\\b\\Q\\c", "utf-8")
    assert msg.get("NTE-3") == "aAb\\Q\\c"


def test_repetitions_and_components() -> None:
    msg = message("adt_a01_utf8.hl7")
    reps = msg.repetitions("PID", 3)
    assert len(reps) == 3
    assert msg.components(reps[1])[3] == "UA_ESOZ"


def test_msh_numbering_counts_the_field_separator() -> None:
    msg = message("orm_o01_nw.hl7")
    assert msg.get("MSH-1") == "|"
    assert msg.get("MSH-9.1") == "ORM"
    assert msg.control_id == "ORM0001"


def test_lf_and_crlf_segment_separators_are_accepted() -> None:
    text = "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\r\nPID|1||X1\nPV1|1|O"
    msg = HL7Message(text, "utf-8")
    assert msg.get("PID-3") == "X1"
    assert msg.get("PV1-2") == "O"


def test_no_msh_is_rejected() -> None:
    with pytest.raises(Rejected):
        HL7Message("PID|1||X", "utf-8")


def test_raw_header_reads_before_decoding() -> None:
    header = read_raw_header(hl7_fixture("orm_o01_win1251.hl7"))
    assert header is not None
    assert (header.sending_application, header.sending_facility, header.msh18) == (
        "OLD_MIS", "DISTRICT_HOSP", "")
    assert read_raw_header(b"garbage") is None


def test_unknown_declared_charset_is_rejected() -> None:
    with pytest.raises(Rejected) as caught:
        choose_charset("KLINGON", "MIS", {}, "utf-8")
    assert caught.value.location == "MSH-18"
