"""HTTP details of ``/fhir``: FHIR JSON in and out, OperationOutcome for every error, the
headers FHIR uses (ETag, Location, Prefer), without touching the app-wide error shape.

:class:`FhirRoute` is the router's route class: whatever a FHIR route or its dependencies
raise (a missing token, a bad body, a :class:`~bridge.errors.BridgeError`, a database that
is gone, a bug) is answered here as an OperationOutcome with the right status, so the
``{"error": ...}`` handlers of the rest of the API never see a FHIR request.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException

from bridge.config.settings import Settings
from bridge.errors import BridgeError, Rejected
from bridge.mapping.fhir.outcome import UnsupportedFormat, operation_outcome, outcome_for

log = logging.getLogger("bridge.fhir")

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
_XML_TYPES = ("application/fhir+xml", "application/xml", "text/xml", "xml")
_HTTP_CODES = {401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               406: "not-supported", 413: "too-costly", 415: "not-supported"}


class FhirRoute(APIRoute):
    """A route whose every error is a FHIR OperationOutcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except Exception as exc:  # answered, never re-raised: see the module docstring
                return error_response(exc, request)

        return handler


def error_response(exc: BaseException, request: Request | None = None) -> Response:
    if isinstance(exc, HTTPException):
        code = _HTTP_CODES.get(exc.status_code, "processing")
        return fhir_response(operation_outcome("error", code, str(exc.detail)),
                             status=exc.status_code,
                             headers=dict(exc.headers) if exc.headers else None)
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                           for e in errors[:5]) or "invalid request"
        return fhir_response(operation_outcome("error", "invalid", detail, where), status=400)
    if isinstance(exc, IntegrityError):
        return fhir_response(operation_outcome(
            "error", "conflict", "a concurrent change to the same patient or order; retry"),
            status=409)
    if isinstance(exc, OperationalError):
        _log_unexpected(exc, request)
        return fhir_response(operation_outcome(
            "fatal", "transient", "the database is unavailable; retry"), status=503)
    if isinstance(exc, BridgeError):
        status, body = outcome_for(exc)
        return fhir_response(body, status=status)
    error_id = _log_unexpected(exc, request)
    return fhir_response(operation_outcome("fatal", "exception",
                                           f"internal error (error id {error_id})"), status=500)


def _log_unexpected(exc: BaseException, request: Request | None) -> str:
    """Log where it failed, never what the exception says (it may quote patient data)."""
    error_id = uuid.uuid4().hex[:12]
    route = request.scope.get("route") if request is not None else None
    path = getattr(route, "path", None) or "unmatched route"
    log.error("unexpected error %s on %s %s: %s.%s\n%s", error_id,
              request.method if request is not None else "-", path,
              type(exc).__module__, type(exc).__qualname__,
              "".join(traceback.format_tb(exc.__traceback__)))
    return error_id


def fhir_response(body: Any, *, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    content = b"" if body is None else json.dumps(
        body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content=content, status_code=status, headers=headers,
                    media_type=f"{FHIR_JSON}; charset=utf-8")


def resource_headers(resource: dict[str, Any], base: str) -> dict[str, str]:
    """ETag, Last-Modified and Location of a resource the bridge versions."""
    meta = resource.get("meta") or {}
    headers: dict[str, str] = {}
    version = meta.get("versionId")
    if version:
        headers["ETag"] = f'W/"{version}"'
        headers["Location"] = (f"{base}/{resource['resourceType']}/{resource['id']}"
                               f"/_history/{version}")
    if meta.get("lastUpdated"):
        moment = datetime.fromisoformat(str(meta["lastUpdated"]).replace("Z", "+00:00"))
        headers["Last-Modified"] = format_datetime(moment, usegmt=True)
    return headers


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """The JSON body; 415 for another media type, 400 for a missing or malformed one."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media and media not in _JSON_TYPES:
        raise UnsupportedFormat(f"the body must be {FHIR_JSON}, not {media}")
    if not raw.strip():
        raise Rejected("the request has no body", location="body")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise Rejected("the body is not UTF-8", location="body") from None
    except json.JSONDecodeError as exc:
        # The decoder's message names the position only, never the content.
        raise Rejected(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       location="body") from None


def check_format(request: Request) -> None:
    """Answer 406 when the client can take only XML (``_format`` or ``Accept``)."""
    wanted = request.query_params.get("_format")
    if wanted is not None and wanted.split(";", 1)[0].strip().lower() not in (
            *_JSON_TYPES, "json"):
        raise UnsupportedFormat(f"_format {wanted} is not supported (JSON only)", status=406)
    accept = request.headers.get("accept", "")
    if accept:
        kinds = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
        if kinds and all(kind in _XML_TYPES for kind in kinds):
            raise UnsupportedFormat("only FHIR JSON is served", status=406)


def fhir_base(request: Request, settings: Settings) -> str:
    """The FHIR base for fullUrl and links: the public base URL, else the request's own."""
    root = settings.public_base_url or str(request.base_url).rstrip("/")
    return f"{root}/fhir"


def prefer(request: Request, name: str) -> str | None:
    """A ``Prefer`` header preference (``return``, ``handling``)."""
    for part in request.headers.get("prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"').lower()
    return None


async def raw_body(request: Request) -> bytes:
    """The request body as received (FHIR routes parse it themselves)."""
    return await request.body()
