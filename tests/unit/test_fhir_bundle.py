"""Bundles (pure): reading transaction/batch requests, building answers, references."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl as stdlib_parse_qsl

import pytest

from bridge.errors import Rejected
from bridge.mapping.fhir.bundle import (
    parse_condition,
    parse_qsl,
    read_bundle,
    response_bundle,
    response_entry,
    rewrite_references,
    searchset,
    split_url,
)
from bridge.mapping.fhir.outcome import operation_outcome
from bridge.mapping.fhir.version import check_resource


def entry(method: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"request": {"method": method, "url": url, **extra.pop("request", {})}, **extra}


def test_entries_say_what_they_ask() -> None:
    kind, entries = read_bundle({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("POST", "Patient", fullUrl="urn:uuid:1", resource={"resourceType": "Patient"},
              request={"ifNoneExist": "identifier=s|v"}),
        entry("PUT", "ServiceRequest?identifier=urn%3Aoid%3A1.2%7CP1",
              resource={"resourceType": "ServiceRequest"}),
        entry("put", "http://me/fhir/Patient/12", request={"ifMatch": 'W/"1.a"'}),
        entry("GET", "/ImagingStudy?patient=Patient/12&_count=5"),
    ]}, base="http://me/fhir")
    assert kind == "transaction"
    post, conditional, update, search = entries
    assert (post.method, post.resource_type, post.full_url, post.if_none_exist) == (
        "POST", "Patient", "urn:uuid:1", "identifier=s|v")
    assert conditional.query == (("identifier", "urn:oid:1.2|P1"),)
    assert (update.method, update.resource_id, update.if_match) == ("PUT", "12", 'W/"1.a"')
    assert search.query == (("patient", "Patient/12"), ("_count", "5"))
    assert search.location == "Bundle.entry[3]"


@pytest.mark.parametrize(("bundle", "location"), [
    ({"resourceType": "Patient"}, "Bundle"),
    ({"resourceType": "Bundle", "type": "collection"}, "Bundle.type"),
    ({"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {}}]},
     "Bundle.entry[0].request"),
    ({"resourceType": "Bundle", "type": "batch", "entry": [entry("FETCH", "Patient")]},
     "Bundle.entry[0].request.method"),
    ({"resourceType": "Bundle", "type": "batch", "entry": [entry("GET", "Patient/1/_history")]},
     "Bundle.entry[0].request.url"),
    ({"resourceType": "Bundle", "type": "batch", "entry": [entry("GET", "http://else/Patient")]},
     "Bundle.entry[0].request.url"),
])
def test_unreadable_bundles_are_400_at_the_place(bundle: dict[str, Any], location: str) -> None:
    with pytest.raises(Rejected) as caught:
        read_bundle(bundle, base="http://me/fhir")
    assert caught.value.location == location


def test_query_strings_decode_like_the_standard_library() -> None:
    for text in ("identifier=urn%3Aoid%3A1.2%7CP1&x=a+b&y=", "a=%E2%82%AC&b=%zz&&c"):
        assert parse_qsl(text) == stdlib_parse_qsl(text, keep_blank_values=True)
    assert parse_condition("?identifier=s|v") == (("identifier", "s|v"),)
    with pytest.raises(Rejected):
        parse_condition("")
    assert split_url("Patient/12") == ("Patient", "12", None)


def test_fullurl_references_are_rewritten_in_a_copy() -> None:
    resource = {"subject": {"reference": "urn:uuid:1"}, "basedOn": [{"reference": "urn:uuid:2"}],
                "performer": [{"reference": "Device/5"}]}
    rewritten = rewrite_references(resource, {"urn:uuid:1": "Patient/12"})
    assert rewritten["subject"] == {"reference": "Patient/12"}
    assert rewritten["basedOn"] == [{"reference": "urn:uuid:2"}]
    assert resource["subject"] == {"reference": "urn:uuid:1"}


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_answers_are_valid_bundles(version: str) -> None:
    patient = {"resourceType": "Patient", "id": "12", "identifier": [{"value": "X"}]}
    found = searchset([("http://me/fhir/Patient/12", patient, "match")], total=1,
                      links=[("self", "http://me/fhir/Patient?_count=1&_offset=0")])
    check_resource(version, found, expected_type="Bundle")
    answered = response_bundle("transaction", [
        response_entry("201 Created", location="Patient/12/_history/1.a", etag='W/"1.a"',
                       last_modified="2031-05-01T07:00:00.000Z",
                       full_url="http://me/fhir/Patient/12"),
        response_entry("404 Not Found", outcome=operation_outcome("error", "not-found", "no")),
    ])
    check_resource(version, answered, expected_type="Bundle")
