"""ASGI middleware: request metrics, and the last line of defence against unexpected errors.

Unexpected exceptions are answered here rather than by a Starlette ``Exception`` handler,
because Starlette re-raises after such a handler and the server then logs the exception
message, which may quote patient data (a database error echoes the row it failed on). This
middleware logs the exception type and the stack only, under an error id the client also
receives.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid

from sqlalchemy.exc import OperationalError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.adapters.http.metrics import HttpMetrics

log = logging.getLogger("bridge.http")


class MetricsMiddleware:
    """Counts every answer by method, route template (not raw path) and status."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
            label = template or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, label, str(status_code)).inc()
            self.metrics.duration.labels(method, label).observe(time.perf_counter() - started)


class UnexpectedErrorMiddleware:
    """Turns any exception that escaped the routes into a JSON 500 (or 503 for the database)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            error_id = uuid.uuid4().hex[:12]
            _log_without_message(exc, error_id, scope)
            if response_started:
                return  # too late for an answer; the server closes the connection
            if isinstance(exc, OperationalError):
                status, kind, detail = 503, "transient", "the database is unavailable; retry"
            else:
                status, kind, detail = 500, "internal", "internal error"
            body = json.dumps({"error": kind, "detail": f"{detail} (error id {error_id})",
                               "location": None}).encode()
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]})
            await send({"type": "http.response.body", "body": body})


def _log_without_message(exc: BaseException, error_id: str, scope: Scope) -> None:
    """Log where it failed, never what the exception says (that may hold PHI)."""
    chain: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        frames = "".join(traceback.format_tb(current.__traceback__))
        chain.append(f"{type(current).__module__}.{type(current).__qualname__}\n{frames}")
        current = current.__cause__ or current.__context__
    route = scope.get("route")
    path = getattr(route, "path", None) or "unmatched route"
    log.error("unexpected error %s on %s %s: %s", error_id, scope.get("method"), path,
              "\ncaused by ".join(chain))
