"""The HTTP adapter's FastAPI app, made by :func:`create_app` (nothing is built at import).

Errors have one shape everywhere: ``{"error": kind, "detail": message, "location": field}``.
A :class:`~bridge.errors.BridgeError` answers with the HTTP status of its kind
(:func:`bridge.errors.answer_for`); request validation answers 422 listing each bad field;
anything unexpected answers 500 without detail (see :mod:`.middleware`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.status import HTTP_422_UNPROCESSABLE_CONTENT

from bridge.adapters.http.api import (
    activity as routes_activity,
)
from bridge.adapters.http.api import (
    deid as routes_deid,
)
from bridge.adapters.http.api import (
    health as routes_health,
)
from bridge.adapters.http.api import (
    jobs as routes_jobs,
)
from bridge.adapters.http.api import (
    links as routes_links,
)
from bridge.adapters.http.api import (
    messages as routes_messages,
)
from bridge.adapters.http.api import (
    metrics as routes_metrics,
)
from bridge.adapters.http.api import (
    peers as routes_peers,
)
from bridge.adapters.http.api import (
    people as routes_people,
)
from bridge.adapters.http.api import (
    reconciliation as routes_reconciliation,
)
from bridge.adapters.http.api import (
    referrals as routes_referrals,
)
from bridge.adapters.http.api import (
    storage as routes_storage,
)
from bridge.adapters.http.api import (
    studies as routes_studies,
)
from bridge.adapters.http.api import (
    worklist as routes_worklist,
)
from bridge.adapters.http.api.schemas import ValidationErrorBody
from bridge.adapters.http.console.headers import ConsoleHeaders
from bridge.adapters.http.console.pages import mount_console
from bridge.adapters.http.deps import AppContext, Reprocess
from bridge.adapters.http.dicomweb import routes as routes_dicomweb
from bridge.adapters.http.docs import mount_docs
from bridge.adapters.http.fhir import audit as routes_fhir_audit
from bridge.adapters.http.fhir import notify as routes_fhir_notify
from bridge.adapters.http.fhir import routes as routes_fhir
from bridge.adapters.http.fhir import workflow as routes_fhir_workflow
from bridge.adapters.http.metrics import HttpMetrics
from bridge.adapters.http.middleware import MetricsMiddleware, UnexpectedErrorMiddleware
from bridge.adapters.http.recent_reads import RecentReads
from bridge.config.settings import Settings
from bridge.errors import ANSWERS, BridgeError, answer_for
from bridge.services.archive.stability import StudyHook
from bridge.services.archive.store import ArchiveStore
from bridge.services.auth.oidc import OidcVerifier
from bridge.services.worklist.orders import OrderPolicy
from bridge.storage.ops import StorageOps, build_storage_ops
from bridge.store.audit import set_chain_key

#: At most this many field errors are spelled out in a 422's ``detail``.
_MAX_LISTED_ERRORS = 5
#: ``error`` of the HTTP errors raised by FastAPI, Starlette and the routes themselves.
_HTTP_ERROR_KINDS = {401: "unauthorized", 403: "forbidden", 404: "not_found",
                     405: "method_not_allowed", 406: "not_acceptable",
                     415: "unsupported_media_type", 503: "unavailable"}


def create_app(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    reprocess: Reprocess | None = None,
    metrics_registry: CollectorRegistry | None = None,
    study_hooks: Sequence[StudyHook] = (),
    delete_hooks: Sequence[StudyHook] = (),
    archive_store: ArchiveStore | None = None,
    notify_trigger: Callable[[], bool] | None = None,
    storage: StorageOps | None = None,
) -> FastAPI:
    """The admin/integration API. ``reprocess`` re-runs a logged HL7 message (503 without it);
    ``metrics_registry`` is shared with other parts of the bridge (a new one when omitted);
    ``archive_store`` takes STOW-RS objects (one of its own when omitted: pass the storage
    SCP's to share its group commits)."""
    app = FastAPI(
        title="bridge",
        summary="Hospital integration engine: HL7 v2 message log, worklist and metrics",
        version="0.1.0",
        docs_url=None,  # bridge.adapters.http.docs: Swagger UI from shipped files
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    metrics = HttpMetrics.create(metrics_registry)
    app.state.metrics = metrics
    app.state.context = AppContext(
        settings=settings,
        session_factory=session_factory,
        order_policy=OrderPolicy.from_settings(settings),
        reprocess=reprocess,
        archive_store=archive_store or ArchiveStore(settings, session_factory),
        study_hooks=tuple(study_hooks),
        delete_hooks=tuple(delete_hooks),
        # The bridge passes its own (sharing the scheduled migration); else from settings.
        storage=storage or build_storage_ops(settings, session_factory),
        oidc=_oidc_verifier(settings),
        recent_reads=RecentReads(settings.audit_coalesce_seconds),
    )
    set_chain_key(settings.audit_hmac_key.get_secret_value().encode("utf-8") or None)
    for module in (routes_health, routes_messages, routes_worklist, routes_metrics,
                   routes_reconciliation, routes_jobs, routes_peers, routes_storage, routes_people,
                   routes_referrals, routes_deid, routes_links, routes_activity,
                   routes_studies, routes_dicomweb):
        app.include_router(module.router)
    # Before the FHIR REST routes: ``POST /fhir/{type}`` would take ``$notify`` for a type.
    app.include_router(routes_fhir_notify.notify_router(notify_trigger))
    app.include_router(routes_fhir_workflow.router)  # before the generic routes
    app.include_router(routes_fhir_audit.router)
    app.include_router(routes_fhir.router)
    mount_console(app)
    mount_docs(app)
    _document_validation_errors(app)
    app.add_exception_handler(BridgeError, _bridge_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, _data_error)  # type: ignore[arg-type]
    # Added last = outermost: metrics also count the 500s the error middleware writes.
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(ConsoleHeaders)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def error_kind(error: BridgeError) -> str:
    """``conflict``, ``not_found``, ...: the snake-case name of the error's answer kind."""
    kind = next(k for k in type(error).__mro__ if k in ANSWERS)
    return "internal" if kind is BridgeError else _snake(kind.__name__)


def _error_body(kind: str, detail: str, location: str | None = None) -> dict[str, object]:
    return {"error": kind, "detail": detail, "location": location}


async def _bridge_error(_request: Request, exc: BridgeError) -> JSONResponse:
    return JSONResponse(_error_body(error_kind(exc), exc.message, exc.location),
                        status_code=answer_for(exc).http_status)


async def _data_error(_request: Request, _exc: DataError) -> JSONResponse:
    # The database refused a value the schema let through (a NUL character, which PostgreSQL
    # text cannot hold; a number beyond the column): the request's fault, said without
    # echoing the value. The transaction was rolled back with the request's session.
    return JSONResponse(_error_body("invalid_request", "a value in the request cannot be "
                                    "stored or searched for (a NUL character, or a number "
                                    "out of range)"),
                        status_code=HTTP_422_UNPROCESSABLE_CONTENT)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = _HTTP_ERROR_KINDS.get(exc.status_code, "http_error")
    return JSONResponse(_error_body(kind, str(exc.detail)), status_code=exc.status_code,
                        headers=exc.headers)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # The offending input is not echoed back: it may be a patient's data.
    errors = [
        {"location": ".".join(str(part) for part in error["loc"]), "message": error["msg"],
         "type": error["type"]}
        for error in exc.errors()
    ]
    listed = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:_MAX_LISTED_ERRORS])
    more = len(errors) - _MAX_LISTED_ERRORS
    detail = listed + (f"; and {more} more" if more > 0 else "")
    body = _error_body("invalid_request", detail, str(errors[0]["location"]) if errors else None)
    body["errors"] = errors
    return JSONResponse(body, status_code=HTTP_422_UNPROCESSABLE_CONTENT)


def _document_validation_errors(app: FastAPI) -> None:
    """The OpenAPI's 422 answers as the bridge sends them (:func:`_validation_error`), not
    FastAPI's own ``HTTPValidationError`` shape, so that clients (and schemathesis) can
    trust the documented schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = ValidationErrorBody.model_json_schema(
            ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components["ValidationErrorBody"] = body
        for operation in (op for item in schema.get("paths", {}).values()
                          for op in item.values() if isinstance(op, dict)):
            answer = operation.get("responses", {}).get("422", {})
            json_body = answer.get("content", {}).get("application/json", {})
            if json_body.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                json_body["schema"] = {"$ref": "#/components/schemas/ValidationErrorBody"}
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _oidc_verifier(settings: Settings) -> OidcVerifier | None:
    if not (settings.oidc_issuer and settings.oidc_audience and settings.oidc_jwks_url):
        return None
    return OidcVerifier(issuer=settings.oidc_issuer, audience=settings.oidc_audience,
                        jwks_url=settings.oidc_jwks_url)
