"""``POST /fhir/$notify``: the registry (or anyone with an integration token) says "something
changed"; the bridge answers 202 at once and pulls ServiceRequests from the registry now
instead of at the next period.

The same address works as an R4 **rest-hook Subscription** endpoint: a Subscription on the
registry with ``channel.endpoint = {bridge}/fhir/$notify`` and ``channel.header =
["Authorization: Bearer brg_..."]`` makes the registry ``POST`` there (empty, a resource or a
notification Bundle), or ``PUT {endpoint}/{type}/{id}`` when it sends the resource
(``/fhir/$notify/ServiceRequest/123``). The body is never read: the pull asks the registry
itself, from the durable watermark, so a notification can neither inject data nor be lost
(a pull requested while one runs makes it run once more).

Every answer, errors included (401, 403, 404 when no registry is configured), is an
OperationOutcome, handled by this router's own route class so the app-wide error shape of the
other APIs is untouched. Include this router before the FHIR REST router: its
``POST /fhir/{type}`` would otherwise take ``$notify`` for a resource type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from bridge.adapters.http.deps import IntegrationToken
from bridge.errors import BridgeError
from bridge.mapping.fhir.outcome import information, operation_outcome, outcome_for

log = logging.getLogger("bridge.http")

FHIR_JSON = "application/fhir+json"
#: Asks for a pull now; False when no pull can run (the scheduler is stopped).
Trigger = Callable[[], bool]

_HTTP_ISSUE_CODES = {401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported"}


class OperationOutcomeRoute(APIRoute):
    """A route whose every error, including its dependencies' (the token check), is
    answered as an OperationOutcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                code = _HTTP_ISSUE_CODES.get(exc.status_code, "processing")
                return _outcome(exc.status_code,
                                operation_outcome("error", code, str(exc.detail)),
                                headers=exc.headers)
            except RequestValidationError as exc:
                where = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else ""
                return _outcome(400, operation_outcome("error", "invalid",
                                                       f"invalid request: {where}"))
            except Exception as exc:  # a BridgeError keeps its status; others are 500
                if not isinstance(exc, BridgeError):
                    log.exception("FHIR notification failed")
                status, body = outcome_for(exc)
                return _outcome(status, body)

        return handle


def _outcome(status: int, body: dict[str, Any],
             headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def notify_router(trigger: Trigger | None) -> APIRouter:
    """The ``$notify`` routes, pulling through ``trigger`` (None: no registry configured,
    answered 404)."""
    router = APIRouter(prefix="/fhir", tags=["fhir"], route_class=OperationOutcomeRoute)

    def accept(source: str) -> JSONResponse:
        if trigger is None:
            return _outcome(404, operation_outcome(
                "error", "not-supported",
                "no registry is configured (BRIDGE_FHIR_REGISTRY_URL): nothing to pull"))
        if not trigger():
            return _outcome(503, operation_outcome(
                "error", "transient", "the registry sync is not running; try again later"))
        log.info("registry pull requested by %s", source)
        return _outcome(202, information("registry pull requested"))

    @router.post("/$notify", status_code=202, summary="Pull ServiceRequests from the registry now",
                 response_class=JSONResponse)
    def notify(token: IntegrationToken) -> JSONResponse:
        return accept(f"$notify (token {token.id})")

    @router.put("/$notify/{resource_type}/{resource_id}", status_code=202,
                summary="Rest-hook notification that sends the changed resource",
                response_class=JSONResponse)
    def notify_resource(resource_type: str, resource_id: str,
                        token: IntegrationToken) -> JSONResponse:
        # The resource sent is ignored: the pull reads the registry itself.
        return accept(f"a rest-hook notification (token {token.id})")

    return router
