"""The FHIR client translates every httpx failure and every HTTP error status at its boundary.

httpx's in-memory transport (``httpx.MockTransport``) plays the server: each test makes the
client meet one failure and checks the bridge error kind it becomes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bridge.clients import fhir as fhir_client
from bridge.clients.fhir import ERROR_KINDS, FhirClient, translate_error
from bridge.errors import BridgeError, Conflict, MappingFailed, NotFound, Rejected, Transient

BASE = "http://registry.test:8080/fhir"

#: Every exception class httpx exports.
HTTPX_EXCEPTIONS = sorted(
    (obj for name in httpx.__all__
     if isinstance(obj := getattr(httpx, name), type) and issubclass(obj, Exception)),
    key=lambda cls: cls.__name__)

#: The failures of the network or of the peer: they may pass, so they must be Transient.
NETWORK_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout,
                    httpx.WriteTimeout, httpx.PoolTimeout, httpx.ReadError, httpx.WriteError,
                    httpx.CloseError, httpx.RemoteProtocolError, httpx.ProxyError,
                    httpx.DecodingError)


def client(handler: Callable[[httpx.Request], httpx.Response]) -> FhirClient:
    return FhirClient(BASE, timeout=5, transport=httpx.MockTransport(handler))


def make(cls: type[Exception]) -> Exception:
    """An instance of an httpx exception, as httpx would raise it."""
    request = httpx.Request("GET", f"{BASE}/Patient/1")
    if cls is httpx.HTTPStatusError:
        return cls("boom", request=request, response=httpx.Response(503, request=request))
    if issubclass(cls, httpx.RequestError):
        return cls("boom", request=request)
    if issubclass(cls, httpx.StreamError):
        return cls() if cls is not httpx.StreamError else cls("boom")
    return cls("boom")


def raising(error: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(_request: httpx.Request) -> httpx.Response:
        raise error
    return handler


def fhir(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"Content-Type": "application/fhir+json"})


def test_httpx_exports_exceptions_to_check() -> None:
    assert httpx.ConnectError in HTTPX_EXCEPTIONS and len(HTTPX_EXCEPTIONS) > 20


@pytest.mark.parametrize("cls", HTTPX_EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_every_httpx_exception_has_its_own_entry(cls: type[Exception]) -> None:
    # An exception httpx adds later must be decided on, not inherited silently.
    assert cls in ERROR_KINDS


@pytest.mark.parametrize("cls", HTTPX_EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_every_httpx_exception_becomes_a_bridge_error(cls: type[Exception]) -> None:
    with client(raising(make(cls))) as c, pytest.raises(BridgeError) as caught:
        c.read("Patient/1")
    assert "GET Patient/1" in caught.value.message
    assert isinstance(caught.value.__cause__, cls)


@pytest.mark.parametrize("cls", NETWORK_FAILURES, ids=lambda cls: cls.__name__)
def test_network_failures_and_timeouts_are_transient(cls: type[Exception]) -> None:
    with client(raising(make(cls))) as c, pytest.raises(Transient):
        c.read("Patient/1")


@pytest.mark.parametrize("cls", [httpx.UnsupportedProtocol, httpx.InvalidURL,
                                 httpx.TooManyRedirects], ids=lambda cls: cls.__name__)
def test_configuration_failures_are_not_retried_as_transient(cls: type[Exception]) -> None:
    error = translate_error(make(cls), "GET Patient/1")
    assert type(error) is Rejected


@pytest.mark.parametrize("cls", [httpx.LocalProtocolError, httpx.StreamConsumed,
                                 httpx.ResponseNotRead, httpx.CookieConflict],
                         ids=lambda cls: cls.__name__)
def test_our_own_misuse_is_an_internal_error(cls: type[Exception]) -> None:
    assert type(translate_error(make(cls), "GET Patient/1")) is BridgeError


def test_a_kept_status_error_is_mapped_by_its_status() -> None:
    assert type(translate_error(make(httpx.HTTPStatusError), "GET Patient/1")) is Transient


STATUS_KINDS: list[tuple[int, type[BridgeError]]] = [
    (500, Transient), (502, Transient), (503, Transient), (504, Transient), (429, Transient),
    (408, Transient), (404, NotFound), (410, NotFound), (409, Conflict), (412, Conflict),
    (422, MappingFailed), (400, Rejected), (405, Rejected), (301, Rejected), (304, Rejected),
    (401, BridgeError), (403, BridgeError),
]


@pytest.mark.parametrize(("status", "kind"), STATUS_KINDS)
def test_error_statuses_of_a_read(status: int, kind: type[BridgeError]) -> None:
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "processing", "diagnostics": "Ivanenko"}]}
    with client(lambda _r: fhir(outcome, status)) as c, pytest.raises(BridgeError) as caught:
        c.read("Patient/1")
    assert type(caught.value) is kind
    assert str(status) in caught.value.message
    assert "Ivanenko" not in caught.value.message  # diagnostics may carry patient data


@pytest.mark.parametrize(("status", "kind"), STATUS_KINDS)
def test_error_statuses_of_a_search_never_show_the_query(status: int,
                                                         kind: type[BridgeError]) -> None:
    with client(lambda _r: httpx.Response(status)) as c, pytest.raises(BridgeError) as caught:
        list(c.search("Patient", [("identifier", "urn:oid:1|MRN-SECRET")]))
    assert type(caught.value) is kind
    assert "GET Patient" in caught.value.message and "SECRET" not in caught.value.message


def test_an_answer_that_is_not_json_is_rejected() -> None:
    with client(lambda _r: httpx.Response(200, text="<html>proxy login</html>")) as c, \
            pytest.raises(Rejected, match="did not answer JSON"):
        c.read("Patient/1")


def test_an_answer_of_another_resource_type_is_rejected() -> None:
    with client(lambda _r: fhir({"resourceType": "Practitioner", "id": "1"})) as c, \
            pytest.raises(Rejected, match="expected 'Patient'"):
        c.read("Patient/1")


def test_a_search_answer_that_is_not_a_searchset_is_rejected() -> None:
    with client(lambda _r: fhir({"resourceType": "Bundle", "type": "history"})) as c, \
            pytest.raises(Rejected, match="history"):
        list(c.search("ServiceRequest", []))


def page(number: int, next_url: str | None) -> dict[str, Any]:
    links = [{"relation": "self", "url": f"{BASE}/ServiceRequest?page={number}"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {"resourceType": "Bundle", "type": "searchset", "link": links,
            "entry": [{"resource": {"resourceType": "ServiceRequest", "id": str(number)}}]}


def test_search_follows_next_links_and_sends_strict_handling() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        number = int(request.url.params.get("page", "1"))
        nxt = f"{BASE}/ServiceRequest?page={number + 1}" if number < 3 else None
        return fhir(page(number, nxt))

    with client(handler) as c:
        pages = list(c.search("ServiceRequest", [("status", "active"), ("_count", "1")]))
    assert [p["entry"][0]["resource"]["id"] for p in pages] == ["1", "2", "3"]
    assert seen[0].url.params.get("status") == "active"
    assert all(r.headers["Prefer"] == "handling=strict" for r in seen)
    assert all(r.headers["Accept"] == "application/fhir+json" for r in seen)


def test_a_relative_next_link_is_resolved_on_the_base() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "page" in request.url.params:
            return fhir(page(2, None))
        return fhir(page(1, "ServiceRequest?page=2"))

    with client(handler) as c:
        assert len(list(c.search("ServiceRequest", []))) == 2


def test_a_next_link_to_another_origin_is_refused() -> None:
    with client(lambda _r: fhir(page(1, "http://elsewhere.test/fhir/ServiceRequest?p=2"))) as c, \
            pytest.raises(Rejected, match="another origin"):
        list(c.search("ServiceRequest", []))


def test_looping_next_links_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fhir_client, "MAX_PAGES", 5)
    with client(lambda _r: fhir(page(1, f"{BASE}/ServiceRequest?page=1"))) as c, \
            pytest.raises(Rejected, match="more than 5 pages"):
        list(c.search("ServiceRequest", []))


def test_read_by_absolute_url_on_the_same_server() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/fhir/Patient/7/_history/2"
        return fhir({"resourceType": "Patient", "id": "7"})

    with client(handler) as c:
        assert c.read(f"{BASE}/Patient/7/_history/2")["id"] == "7"
        assert c.read("Patient/7/_history/2")["id"] == "7"


def test_an_unusable_base_url_is_refused() -> None:
    with pytest.raises(Rejected):
        FhirClient("ftp://registry.test/fhir", timeout=1)


def test_error_answer_body_is_not_needed() -> None:
    # A 503 from a proxy without any body is still a clean Transient.
    with client(lambda _r: httpx.Response(503, content=b"")) as c, pytest.raises(Transient):
        c.read("Patient/1")
