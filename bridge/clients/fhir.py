"""A small FHIR REST client (httpx): search with paging, read by reference.

Every failure is translated into the bridge's error kinds here, in one place
(:func:`translate_error` for what httpx raises, :func:`error_for_status` for what the server
answers), so the services that use the client only ever see :class:`~bridge.errors.BridgeError`:

- :class:`~bridge.errors.Transient` — the server is unreachable, slow, overloaded or failing
  (connection errors, timeouts, a dropped response, 408, 429, 5xx): try again later;
- :class:`~bridge.errors.NotFound` (404, 410), :class:`~bridge.errors.Conflict` (409, 412),
  :class:`~bridge.errors.MappingFailed` (422: the content we sent is invalid there),
  :class:`~bridge.errors.Rejected` (other 4xx, redirects, an answer that is not the FHIR JSON
  asked for, an unusable URL) — trying again unchanged will not help;
- a plain :class:`~bridge.errors.BridgeError` — our credentials were refused (401, 403) or the
  client was misused (a bug of ours).

Messages name the method, the path and the status, never the query string or the server's
diagnostics, which may carry patient identifiers: those are logged at DEBUG only.

``next`` links and absolute references are followed only when they stay on the server's origin
(scheme, host and port of the configured base): a server must not be able to send the client,
and whatever credentials it will carry, elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import httpx

from bridge.errors import BridgeError, Conflict, MappingFailed, NotFound, Rejected, Transient

log = logging.getLogger("bridge.fhir_client")

FHIR_JSON: Final = "application/fhir+json"
USER_AGENT: Final = "bridge-fhir-client/0.1"
#: At most this many pages are followed in one search: a server whose ``next`` links loop
#: must not keep a pull running for ever.
MAX_PAGES: Final = 10_000

#: What each httpx exception means for the caller. Looked up along the class's MRO, so a
#: subclass httpx adds later falls back to its parent's kind; ``tests/unit/
#: test_fhir_client_errors.py`` checks that every exception httpx exports has an entry.
ERROR_KINDS: Final[Mapping[type[Exception], type[BridgeError]]] = {
    # The server is down, slow, or dropped the connection: it may pass.
    httpx.TimeoutException: Transient,
    httpx.ConnectTimeout: Transient,
    httpx.ReadTimeout: Transient,
    httpx.WriteTimeout: Transient,
    httpx.PoolTimeout: Transient,
    httpx.NetworkError: Transient,
    httpx.ConnectError: Transient,
    httpx.ReadError: Transient,
    httpx.WriteError: Transient,
    httpx.CloseError: Transient,
    httpx.ProxyError: Transient,
    httpx.RemoteProtocolError: Transient,
    # A body cut off or garbled on the way (a proxy, a restart mid-response).
    httpx.DecodingError: Transient,
    httpx.TransportError: Transient,
    httpx.RequestError: Transient,
    # A server answer kept as an exception (raise_for_status): by its status code.
    httpx.HTTPStatusError: BridgeError,
    # Configuration: the URL cannot work, or the server redirects in circles.
    httpx.UnsupportedProtocol: Rejected,
    httpx.InvalidURL: Rejected,
    httpx.TooManyRedirects: Rejected,
    # Our own misuse of httpx: a bug, not the server's fault.
    httpx.LocalProtocolError: BridgeError,
    httpx.ProtocolError: Transient,
    httpx.CookieConflict: BridgeError,
    httpx.StreamError: BridgeError,
    httpx.StreamConsumed: BridgeError,
    httpx.StreamClosed: BridgeError,
    httpx.ResponseNotRead: BridgeError,
    httpx.RequestNotRead: BridgeError,
    httpx.HTTPError: BridgeError,
}
#: Everything httpx raises (``InvalidURL``, ``CookieConflict`` and the stream errors are not
#: ``HTTPError`` subclasses).
HTTPX_ERRORS: Final = tuple(ERROR_KINDS)


def translate_error(error: Exception, what: str) -> BridgeError:
    """The bridge error for an exception httpx raised while doing ``what`` ("GET Patient/1")."""
    if isinstance(error, httpx.HTTPStatusError):
        return error_for_status(error.response.status_code, what)
    kind = next((ERROR_KINDS[k] for k in type(error).__mro__ if k in ERROR_KINDS), BridgeError)
    reason = type(error).__name__
    if kind is Transient:
        return Transient(f"FHIR server unreachable or failing ({reason}) on {what}")
    if kind is Rejected:
        return Rejected(f"cannot call the FHIR server ({reason}) on {what}")
    return BridgeError(f"FHIR client error ({reason}) on {what}")


def error_for_status(status: int, what: str) -> BridgeError:
    """The bridge error for a non-2xx answer (``what`` is "GET ServiceRequest", no query)."""
    said = f"FHIR server answered {status} to {what}"
    if status in (408, 429) or status >= 500:
        return Transient(said)
    if status in (404, 410):
        return NotFound(said)
    if status in (409, 412):
        return Conflict(said)
    if status == 422:
        return MappingFailed(said)
    if status in (401, 403):
        return BridgeError(said + " (check the credentials the bridge uses there)")
    return Rejected(said)


def _check_status(response: httpx.Response, what: str) -> None:
    """The bridge error for a non-2xx answer (its diagnostics at debug level only)."""
    if not response.is_success:
        error = error_for_status(response.status_code, what)
        log.debug("%s: %s", error.message, _diagnostics(response))
        raise error


def _json_answer(response: httpx.Response, what: str, *, expect: str | None
                 ) -> dict[str, Any]:
    """A 2xx answer's JSON resource (of type ``expect`` when given), else the bridge error."""
    _check_status(response, what)
    try:
        body = response.json()
    except ValueError:
        raise Rejected(f"FHIR server did not answer JSON to {what} "
                       f"(Content-Type {response.headers.get('content-type', '-')})"
                       ) from None
    if not isinstance(body, dict) or (expect and body.get("resourceType") != expect):
        got = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise Rejected(f"FHIR server answered {got!r} to {what}, expected {expect!r}")
    return body


class FhirClient:
    """A client for one FHIR server; thread-safe (one httpx connection pool), close it after.

    ``transport`` replaces the network (an ``httpx.MockTransport`` in unit tests).
    """

    def __init__(self, base_url: str, *, timeout: float,
                 headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            parts = urlsplit(self.base_url)
        except ValueError as exc:
            raise Rejected(f"unusable FHIR base URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Rejected(f"FHIR base URL must be http(s)://host/...: {self.base_url!r}")
        self._origin = _origin(self.base_url)
        self._http = httpx.Client(
            timeout=timeout, transport=transport, follow_redirects=False,
            headers={"Accept": FHIR_JSON, "User-Agent": USER_AGENT, **(headers or {})})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ operations

    def search(self, resource_type: str, params: Sequence[tuple[str, str]], *,
               strict: bool = True) -> Iterator[dict[str, Any]]:
        """Each page (a searchset Bundle) of ``GET [base]/resource_type?params``, following
        ``next`` links until there is none.

        ``strict`` sends ``Prefer: handling=strict``: a server that does not support one of
        the parameters answers 400 instead of ignoring it and returning more than was asked.
        """
        headers = {"Prefer": "handling=strict"} if strict else {}
        url: str | None = f"{self.base_url}/{resource_type}"
        query: Sequence[tuple[str, str]] | None = params
        for _ in range(MAX_PAGES):
            if url is None:
                return
            bundle = self._get_json(url, query, headers, expect="Bundle")
            if bundle.get("type") != "searchset":
                raise Rejected(f"FHIR server answered a {bundle.get('type')!r} Bundle to a "
                               f"search of {resource_type}")
            yield bundle
            url, query = self._next_link(bundle), None  # a next link carries its own query
        raise Rejected(f"a search of {resource_type} had more than {MAX_PAGES} pages; "
                       "its next links may loop")

    def read(self, reference: str) -> dict[str, Any]:
        """The resource a literal reference names: ``Patient/1``, ``Patient/1/_history/2`` or
        an absolute URL on this server."""
        url = self._resolve(reference)
        expected = _type_of(url[len(self.base_url):] if url.startswith(self.base_url)
                            else reference)
        return self._get_json(url, None, {}, expect=expected)

    def put(self, path: str, resource: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT [base]/path`` (an update, or update-as-create under a client id)."""
        return self._send("PUT", path, resource, {})

    def create(self, resource_type: str, resource: Mapping[str, Any], *,
               if_none_exist: str | None = None) -> dict[str, Any]:
        """``POST [base]/type``; with ``if_none_exist`` a conditional create (the match is
        answered, nothing is created twice)."""
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else {}
        return self._send("POST", resource_type, resource, headers)

    def _send(self, method: str, path: str, resource: Mapping[str, Any],
              headers: Mapping[str, str]) -> dict[str, Any]:
        what = f"{method} {path.split('?', 1)[0]}"
        try:
            response = self._http.request(
                method, f"{self.base_url}/{path.lstrip('/')}", json=dict(resource),
                headers={"Content-Type": FHIR_JSON, "Prefer": "return=representation",
                         **headers})
        except HTTPX_ERRORS as exc:
            raise translate_error(exc, what) from exc
        if not response.content:
            _check_status(response, what)
            return {}
        return _json_answer(response, what, expect=None)

    # ------------------------------------------------------------------ plumbing

    def _get_json(self, url: str, params: Sequence[tuple[str, str]] | None,
                  headers: Mapping[str, str], *, expect: str | None) -> dict[str, Any]:
        what = f"GET {_path(url, self.base_url)}"
        try:
            response = self._http.get(url, params=list(params) if params else None,
                                      headers=dict(headers))
        except HTTPX_ERRORS as exc:
            raise translate_error(exc, what) from exc
        return _json_answer(response, what, expect=expect)

    def _next_link(self, bundle: Mapping[str, Any]) -> str | None:
        for link in bundle.get("link") or ():
            if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
                return self._resolve(str(link["url"]))
        return None

    def _resolve(self, reference: str) -> str:
        """An absolute URL for a reference or link, refused when it leaves the server."""
        if "://" not in reference:
            return urljoin(self.base_url + "/", reference.lstrip("/"))
        if _origin(reference) != self._origin:
            raise Rejected(f"FHIR server sent a link to another origin ({_origin(reference)}, "
                           f"not {self._origin}); set the server's public base URL and the "
                           "bridge's setting to the same address")
        return reference


def _origin(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:
        return "?"
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def _path(url: str, base_url: str) -> str:
    """The URL's path relative to the base, without its query (which may name a patient)."""
    path = urlsplit(url).path
    base_path = urlsplit(base_url).path.rstrip("/")
    return path[len(base_path):].lstrip("/") if path.startswith(base_path) else path


def _type_of(reference: str) -> str | None:
    """``Patient`` for ``Patient/1``, ``/Patient/1/_history/2`` or ``.../fhir/Patient/1``."""
    parts = [p for p in urlsplit(reference).path.split("/") if p]
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    return parts[-2] if len(parts) >= 2 and parts[-2][:1].isupper() else None


def _diagnostics(response: httpx.Response) -> str:
    """The OperationOutcome's diagnostics, for DEBUG logs (they may echo patient data)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics") or i.get("code") or "")
                         for i in body.get("issue") or () if isinstance(i, dict))[:500]
    return ""
