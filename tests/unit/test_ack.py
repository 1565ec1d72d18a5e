"""ACK building: original and enhanced mode, ERR naming the failing field."""

from __future__ import annotations

from bridge.errors import MappingFailed
from bridge.mapping.hl7.ack import AckContext, build_ack, erl, escape, wants_ack
from tests.unit.test_hl7_message import message


def segments(ack: str) -> dict[str, list[str]]:
    return {line.split("|")[0]: line.split("|") for line in ack.split("\r") if line}


def test_aa_echoes_control_id_and_swaps_applications() -> None:
    ctx = AckContext.of(message("orm_o01_nw.hl7"))
    ack = segments(build_ack(ctx, "AA", control_id="X1", timestamp="20260101000000"))
    assert ack["MSA"][1:3] == ["AA", "ORM0001"]
    assert ack["MSH"][2:6] == ["BRIDGE", "RADIOLOGY", "MIS", "KYIV_CITY_HOSP_1"]
    assert ack["MSH"][8] == "ACK^O01^ACK"
    assert ack["MSH"][17] == "UNICODE UTF-8"
    assert "ERR" not in ack


def test_error_ack_has_err_with_location_code_and_text() -> None:
    ctx = AckContext.of(message("orm_o01_nw.hl7"))
    error = MappingFailed("patient identifier missing", location="PID-3")
    ack = segments(build_ack(ctx, "AE", control_id="X2", timestamp="20260101000000", error=error))
    assert ack["ERR"][2] == "PID^1^3"
    assert ack["ERR"][3].startswith("101^")
    assert ack["ERR"][4] == "E"
    assert ack["ERR"][8] == "patient identifier missing"


def test_v23_senders_get_err_1_too() -> None:
    ctx = AckContext(version="2.3", control_id="C1")
    error = MappingFailed("x", location="ORC-1", hl7_code="103")
    ack = segments(build_ack(ctx, "AE", control_id="X", timestamp="", error=error))
    assert ack["ERR"][1].startswith("ORC^1^1^103&")


def test_enhanced_mode_detection_and_ack_types() -> None:
    assert AckContext.of(message("enhanced_orm_nw.hl7")).enhanced
    assert not AckContext.of(message("orm_o01_nw.hl7")).enhanced
    assert wants_ack("AL", "AE") and wants_ack("", "AA")
    assert not wants_ack("NE", "AA")
    assert wants_ack("ER", "AE") and not wants_ack("ER", "AA")
    assert wants_ack("SU", "CA") and not wants_ack("SU", "AE")


def test_erl_and_escape() -> None:
    assert erl("PID-5.1") == "PID^1^5^1^1"
    assert erl("OBR") == "OBR^1"
    assert erl(None) == ""
    assert escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
