"""Transaction and batch Bundles (``POST /fhir``).

- **transaction**: all or nothing. Every entry runs in the caller's one database
  transaction; the first error is answered (its status and OperationOutcome, located at
  ``Bundle.entry[n]``) and the caller rolls everything back. ``fullUrl`` references
  (``urn:uuid:...``) between entries are resolved to the ids the entries get. Entries run
  Patients first, then ServiceRequests, then reads (the only dependencies these resources
  have), so a ServiceRequest may reference a Patient created in the same Bundle whatever the
  entry order; the answer keeps the request's order.
- **batch**: each entry on its own (a savepoint each): a failing entry is answered with its
  status and OperationOutcome and the others still apply. References between entries are
  not resolved, as FHIR specifies for batches.

Entries: ``POST [type]`` (create, ``ifNoneExist``), ``PUT [type]/[id]`` (update,
``ifMatch``), ``PUT [type]?[query]`` (conditional update), ``GET [type]/[id]`` and
``GET [type]?[query]``. Other methods are answered 405.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from bridge.errors import BridgeError, Conflict, Rejected
from bridge.mapping.fhir.bundle import EntryRequest, read_bundle, response_bundle, response_entry
from bridge.mapping.fhir.datatypes import JSONDict, instant
from bridge.mapping.fhir.outcome import NotAllowed, outcome_for
from bridge.services.fhir.context import PATIENT, SR, FhirContext
from bridge.services.fhir.lookup import build_resources, versions
from bridge.services.fhir.queries import read_any, search_bundle
from bridge.services.fhir.resources import Written, conditional_update, create, update

log = logging.getLogger("bridge.fhir")


@dataclass(slots=True)
class _Done:
    entry: EntryRequest
    written: Written | None = None
    #: A read's resource or a search's Bundle.
    body: JSONDict | None = None


def process_bundle(session: Session, ctx: FhirContext, bundle: Any, *, base: str,
                   representation: bool = False) -> JSONDict:
    """Run a transaction or batch Bundle; returns the response Bundle. Nothing is committed
    here; a transaction's error is raised (the caller rolls back and answers it)."""
    kind, entries = read_bundle(bundle, base)
    if kind == "transaction":
        return _transaction(session, ctx, entries, base, representation)
    return _batch(session, ctx, entries, base, representation)


def _transaction(session: Session, ctx: FhirContext, entries: list[EntryRequest],
                 base: str, representation: bool) -> JSONDict:
    full_urls = [e.full_url for e in entries if e.full_url]
    duplicate = next((u for u in full_urls if full_urls.count(u) > 1), None)
    if duplicate is not None:
        raise Rejected("two entries have the same fullUrl", location="Bundle.entry.fullUrl")
    refs: dict[str, str] = {}
    done: dict[int, _Done] = {}
    for entry in sorted(entries, key=_run_order):
        try:
            done[entry.index] = _perform(session, ctx, entry, refs, base)
        except IntegrityError:
            raise _located(Conflict("a concurrent change to the same patient or order; "
                                    "retry"), entry) from None
        except BridgeError as exc:
            raise _located(exc, entry) from None
    built = _resources_of(session, ctx, list(done.values()), representation)
    return response_bundle("transaction", [_answer(done[e.index], built, base)
                                           for e in entries])


def _batch(session: Session, ctx: FhirContext, entries: list[EntryRequest], base: str,
           representation: bool) -> JSONDict:
    answers: list[JSONDict | None] = []
    done: list[_Done] = []
    for entry in entries:
        failure: BaseException | None = None
        try:
            with session.begin_nested():
                done.append(_perform(session, ctx, entry, {}, base))
        except OperationalError:
            raise  # the database is gone: the whole batch is answered 503
        except IntegrityError:
            failure = Conflict("a concurrent change to the same patient or order; retry")
        except BridgeError as exc:
            failure = _located(exc, entry)
        except Exception as exc:  # one broken entry must not lose the others
            failure = exc
            error_id = uuid.uuid4().hex[:12]
            log.error("batch entry failed, error id %s: %s\n%s", error_id,
                      type(exc).__qualname__, "".join(traceback.format_tb(exc.__traceback__)))
        if failure is None:
            answers.append(None)
            continue
        status, outcome = outcome_for(failure)
        answers.append(response_entry(_status_line(status), outcome=outcome))
    built = _resources_of(session, ctx, done, representation)
    by_index = {d.entry.index: d for d in done}
    return response_bundle("batch", [
        answer if answer is not None else _answer(by_index[entry.index], built, base)
        for entry, answer in zip(entries, answers, strict=True)])


def _run_order(entry: EntryRequest) -> tuple[int, int]:
    if entry.method in ("GET", "HEAD"):
        return 3, entry.index
    return {PATIENT: 0, SR: 1}.get(entry.resource_type, 2), entry.index


def _perform(session: Session, ctx: FhirContext, entry: EntryRequest, refs: dict[str, str],
             base: str) -> _Done:
    kind, where = entry.resource_type, f"{entry.location}.resource"
    if entry.method in ("GET", "HEAD"):
        if entry.resource_id is not None:
            return _Done(entry, body=read_any(session, ctx, kind, entry.resource_id))
        return _Done(entry, body=search_bundle(session, ctx, kind, list(entry.query or ()),
                                               base=base))
    if entry.method == "POST":
        if entry.resource_id is not None or entry.query is not None:
            raise Rejected("POST takes [type] (a condition goes in ifNoneExist)",
                           location=f"{entry.location}.request.url")
        written = create(session, ctx, kind, entry.resource, if_none_exist=entry.if_none_exist,
                         refs=refs, path=where)
    elif entry.method == "PUT":
        if entry.resource_id is not None:
            written = update(session, ctx, kind, entry.resource_id, entry.resource,
                             if_match=entry.if_match, refs=refs, path=where)
        elif entry.query is not None:
            written = conditional_update(session, ctx, kind, entry.query, entry.resource,
                                         if_match=entry.if_match, refs=refs, path=where)
        else:
            raise Rejected("PUT takes [type]/[id] or [type]?[query]",
                           location=f"{entry.location}.request.url")
    else:
        raise NotAllowed(f"{entry.method} is not supported", location=f"{entry.location}"
                         ".request.method")
    if entry.full_url:
        refs[entry.full_url] = f"{kind}/{written.id}"
    return _Done(entry, written=written)


def _resources_of(session: Session, ctx: FhirContext, done: list[_Done],
                  representation: bool) -> dict[tuple[str, int], tuple[JSONDict | None, str, str]]:
    """What the answer says of each written resource, as it is now: (the resource when
    asked for, its version, its lastUpdated); a few queries per type for all of them."""
    found: dict[tuple[str, int], tuple[JSONDict | None, str, str]] = {}
    for kind in (PATIENT, SR):
        ids = [d.written.id for d in done
               if d.written is not None and d.written.resource_type == kind]
        if not ids:
            continue
        if representation:
            for row_id, resource in build_resources(session, ctx, kind, ids).items():
                meta = resource["meta"]
                found[(kind, row_id)] = (resource, meta["versionId"], meta["lastUpdated"])
        else:
            for row_id, (version, updated) in versions(session, kind, ids).items():
                found[(kind, row_id)] = (None, version, instant(updated))
    return found


def _answer(done: _Done, built: dict[tuple[str, int], tuple[JSONDict | None, str, str]],
            base: str) -> JSONDict:
    if done.written is None:
        return response_entry("200 OK", resource=done.body)
    written = done.written
    resource, version, modified = built[(written.resource_type, written.id)]
    return response_entry(
        "201 Created" if written.created else "200 OK",
        location=f"{written.resource_type}/{written.id}/_history/{version}",
        etag=f'W/"{version}"', last_modified=modified, resource=resource,
        full_url=f"{base}/{written.resource_type}/{written.id}")


_REQUEST_PARTS = {"If-Match": "request.ifMatch", "If-None-Exist": "request.ifNoneExist"}


def _located(error: BridgeError, entry: EntryRequest) -> BridgeError:
    """The error, located under its entry (``Bundle.entry[3].resource.status``)."""
    location = error.location or ""
    if not location.startswith("Bundle."):
        part = _REQUEST_PARTS.get(location, "request.url" if location else "")
        error.location = f"{entry.location}.{part}" if part else entry.location
    error.message = f"entry {entry.index}: {error.message}"
    return error


def _status_line(status: int) -> str:
    reasons = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
               409: "Conflict", 412: "Precondition Failed", 422: "Unprocessable Entity",
               500: "Internal Server Error", 503: "Service Unavailable"}
    return f"{status} {reasons.get(status, '')}".strip()
