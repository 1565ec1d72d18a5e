"""FHIR search parameters → typed queries (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bridge.errors import Rejected
from bridge.mapping.fhir.search import MAX_COUNT, Bound, Token, date_bounds, parse_search

KYIV = ZoneInfo("Europe/Kyiv")


def test_dates_are_ranges_by_their_precision() -> None:
    day = date_bounds("_lastUpdated", "2031-05-02", KYIV)  # a local day: 21:00Z to 21:00Z
    assert day == [Bound("ge", datetime(2031, 5, 1, 21, tzinfo=UTC)),
                   Bound("lt", datetime(2031, 5, 2, 21, tzinfo=UTC))]
    assert date_bounds("d", "gt2031-05", KYIV) == [
        Bound("ge", datetime(2031, 5, 31, 21, tzinfo=UTC))]
    assert date_bounds("d", "le2031", KYIV) == [
        Bound("lt", datetime(2031, 12, 31, 22, tzinfo=UTC))]  # winter time: UTC+2
    assert date_bounds("d", "lt2031-05-02T10:00:00Z", KYIV) == [
        Bound("lt", datetime(2031, 5, 2, 10, tzinfo=UTC))]
    assert date_bounds("d", "ge2031-05-02T10:00:00.5+01:00", KYIV) == [
        Bound("ge", datetime(2031, 5, 2, 9, 0, 0, 500000, tzinfo=UTC))]


@pytest.mark.parametrize("value", ["ne2031", "sa2031", "2031-13", "yesterday", "2031-02-30"])
def test_bad_dates_are_400(value: str) -> None:
    with pytest.raises(Rejected):
        date_bounds("_lastUpdated", value, KYIV)


def test_tokens_references_and_repetition() -> None:
    query = parse_search("ServiceRequest", [
        ("identifier", "urn:oid:1.2|P1,ACC\\,1"), ("identifier", "|NOSYS"),
        ("subject", "Patient/12"), ("patient", "http://x/fhir/Patient/13"),
        ("status", "active,on-hold"), ("_count", "5000"), ("_offset", "10"),
        ("_include", "ServiceRequest:subject"), ("unknown", "x"),
    ], KYIV)
    assert query.identifiers == [[Token("urn:oid:1.2", "P1"), Token(None, "ACC,1")],
                                 [Token("", "NOSYS")]]
    assert query.subjects == [["12"], ["13"]]
    assert query.statuses == [["active", "on-hold"]]
    assert (query.count, query.offset) == (MAX_COUNT, 10)
    assert query.includes == ["ServiceRequest:subject"]
    assert query.ignored == ["unknown"]
    assert ("unknown", "x") not in query.used
    assert ("_count", "5000") not in query.used_without_paging()


@pytest.mark.parametrize("params", [
    [("identifier:missing", "true")],
    [("subject", "Group/1")],
    [("_count", "-1")],
    [("_include", "ServiceRequest:performer")],
    [("identifier", "urn:x|")],
])
def test_what_would_widen_the_answer_is_400(params: list[tuple[str, str]]) -> None:
    with pytest.raises(Rejected):
        parse_search("ServiceRequest", params, KYIV)


def test_strict_handling_refuses_unknown_parameters() -> None:
    with pytest.raises(Rejected) as caught:
        parse_search("Patient", [("family", "X")], KYIV, strict=True)
    assert caught.value.location == "family"
