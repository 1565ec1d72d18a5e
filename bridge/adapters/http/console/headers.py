"""Security headers for the console's pages and files.

The Content-Security-Policy allows scripts, styles, images and requests from the bridge
itself only, and no inline script or style (the pages have none), so an injected value cannot
run; ``frame-ancestors 'none'`` stops another site from framing the console (clickjacking);
``Referrer-Policy: no-referrer`` keeps URLs (study UIDs) from leaking to anything linked.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


class ConsoleHeaders:
    """Adds the headers to every answer under ``/console``; pages are never cached, so a
    page seen after log-out is not served from the browser's cache."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/console" or path.startswith("/console/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith("/console/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"cache-control"]
                headers.extend(_HEADERS)
                headers.append((b"cache-control",
                                b"private, max-age=300" if static else b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
