"""Bundles: reading transaction/batch requests and building searchset and response Bundles.
Pure: no I/O.

A transaction or batch entry's ``request.url`` is relative (``Patient``, ``Patient/12``,
``ServiceRequest?identifier=...``); :func:`read_bundle` checks each entry and says what it
asks, with ``Bundle.entry[n]`` locations, before anything is applied.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import Rejected
from bridge.mapping.fhir.datatypes import JSONDict
from bridge.mapping.fhir.outcome import TooCostly

BUNDLE_KINDS = ("transaction", "batch")
#: Entries one Bundle may hold: a transaction holds the database's write lock while it runs
#: (on SQLite every other writer, HL7 intake included, waits), so it is kept short.
MAX_ENTRIES = 1000
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")


@dataclass(frozen=True, slots=True)
class EntryRequest:
    index: int
    method: str
    resource_type: str
    resource_id: str | None
    #: The search or condition of a ``?``-URL (conditional update, search).
    query: tuple[tuple[str, str], ...] | None
    resource: Mapping[str, Any] | None
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: str | None = None

    @property
    def location(self) -> str:
        return f"Bundle.entry[{self.index}]"


def read_bundle(bundle: Any, base: str = "") -> tuple[str, list[EntryRequest]]:
    """The kind (``transaction``/``batch``) and the entries of a request Bundle.

    Raises :class:`Rejected` (400) for what is not a transaction or batch, or an entry
    without a usable ``request`` (a batch cannot answer an entry it cannot even read).
    """
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        raise Rejected("POST to the base takes a Bundle", location="Bundle")
    kind = bundle.get("type")
    if kind not in BUNDLE_KINDS:
        raise Rejected(f"Bundle.type must be transaction or batch, not {kind!r}",
                       location="Bundle.type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise Rejected("Bundle.entry must be a list", location="Bundle.entry")
    if len(entries) > MAX_ENTRIES:
        raise TooCostly(f"a Bundle takes at most {MAX_ENTRIES} entries; split it",
                        location="Bundle.entry")
    return str(kind), [_entry(n, entry, base) for n, entry in enumerate(entries)]


def _entry(index: int, entry: Any, base: str) -> EntryRequest:
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, Mapping):
        raise Rejected("an entry must be an object", location=where)
    request = entry.get("request")
    if not isinstance(request, Mapping):
        raise Rejected("entry.request missing", location=f"{where}.request")
    method = str(request.get("method") or "").upper()
    if method not in METHODS:
        raise Rejected(f"request.method {method or 'missing'} is not an HTTP method",
                       location=f"{where}.request.method")
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise Rejected("request.url missing", location=f"{where}.request.url")
    resource_type, resource_id, query = split_url(url.strip(), base,
                                                  location=f"{where}.request.url")
    resource = entry.get("resource")
    if resource is not None and not isinstance(resource, Mapping):
        raise Rejected("entry.resource must be an object", location=f"{where}.resource")
    full_url = entry.get("fullUrl")
    return EntryRequest(
        index=index, method=method, resource_type=resource_type, resource_id=resource_id,
        query=query, resource=resource,
        full_url=full_url if isinstance(full_url, str) and full_url else None,
        if_none_exist=_text(request.get("ifNoneExist")),
        if_match=_text(request.get("ifMatch")),
    )


def split_url(url: str, base: str = "", *, location: str = "url"
              ) -> tuple[str, str | None, tuple[tuple[str, str], ...] | None]:
    """``Type[/id][?query]`` (relative, or absolute under ``base``) → its parts."""
    if base and url.startswith(base):
        url = url[len(base):]
    elif "://" in url:
        raise Rejected("request.url must be relative to this server", location=location)
    path, has_query, query_text = url.lstrip("/").partition("?")
    parts = [p for p in path.split("/") if p]
    if not parts or not parts[0].isalpha() or not parts[0][0].isupper():
        raise Rejected(f"request.url {url!r} names no resource type", location=location)
    if len(parts) > 2:
        raise Rejected(f"request.url {url!r}: only [type], [type]/[id] and [type]?[query] "
                       "are supported", location=location)
    query = tuple(parse_qsl(query_text, keep_blank_values=True)) if has_query else None
    return parts[0], parts[1] if len(parts) == 2 else None, query


def parse_condition(text: str) -> tuple[tuple[str, str], ...]:
    """An ``If-None-Exist`` header (or ``ifNoneExist``): a query string, ``?`` optional."""
    pairs = tuple(parse_qsl(text.lstrip("?"), keep_blank_values=True))
    if not pairs:
        raise Rejected("the condition is empty", location="If-None-Exist")
    return pairs


def rewrite_references(resource: Any, resolved: Mapping[str, str]) -> Any:
    """A copy of ``resource`` whose ``reference`` values naming an entry's ``fullUrl``
    (``urn:uuid:...``) name the resource it became (``Patient/12``)."""
    if isinstance(resource, Mapping):
        copied = {}
        for key, value in resource.items():
            if key == "reference" and isinstance(value, str) and value in resolved:
                copied[key] = resolved[value]
            else:
                copied[key] = rewrite_references(value, resolved)
        return copied
    if isinstance(resource, list):
        return [rewrite_references(item, resolved) for item in resource]
    return copy.copy(resource)


def searchset(entries: list[tuple[str, JSONDict, str]], *, total: int | None,
              links: list[tuple[str, str]]) -> JSONDict:
    """A searchset Bundle of ``(fullUrl, resource, mode)`` entries."""
    bundle: JSONDict = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": relation, "url": url} for relation, url in links]
    if entries:
        bundle["entry"] = [{"fullUrl": url, "resource": resource, "search": {"mode": mode}}
                           for url, resource, mode in entries]
    return bundle


def response_entry(status: str, *, location: str | None = None, etag: str | None = None,
                   last_modified: str | None = None, resource: JSONDict | None = None,
                   outcome: JSONDict | None = None, full_url: str | None = None) -> JSONDict:
    """One entry of a transaction-response or batch-response Bundle."""
    response: JSONDict = {"status": status}
    if location:
        response["location"] = location
    if etag:
        response["etag"] = etag
    if last_modified:
        response["lastModified"] = last_modified
    if outcome is not None:
        response["outcome"] = outcome
    entry: JSONDict = {}
    if full_url:
        entry["fullUrl"] = full_url
    if resource is not None:
        entry["resource"] = resource
    entry["response"] = response
    return entry


def response_bundle(kind: str, entries: list[JSONDict]) -> JSONDict:
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": entries}


def parse_qsl(text: str, keep_blank_values: bool = True) -> list[tuple[str, str]]:
    """A query string's pairs, percent-decoded (``urllib`` is kept out of the pure layer,
    which has no business with networking modules)."""
    pairs = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if value or keep_blank_values:
            pairs.append((_unquote(name), _unquote(value)))
    return pairs


def _unquote(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    raw = bytearray()
    n = 0
    while n < len(text):
        char = text[n]
        if char == "%" and _is_hex(text[n + 1:n + 3]):
            raw.append(int(text[n + 1:n + 3], 16))
            n += 3
            continue
        raw.extend(b" " if char == "+" else char.encode())
        n += 1
    return raw.decode("utf-8", errors="replace")


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
