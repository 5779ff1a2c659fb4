"""Browser-facing protections: security headers on every response and configurable CORS.

Every response says ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and
``X-Frame-Options: DENY``; ``Strict-Transport-Security`` is added when the service is behind TLS
(``headers.behind_tls``); JSON responses get ``Cache-Control: no-store`` (answers and keys must not linger in
shared caches). A header a route set itself (the UI's ``Cache-Control``) is kept. CORS headers are sent only
for the origins in ``cors.allow_origins`` (none by default).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragserve.settings_security import CorsSettings, HeaderSettings


class SecurityHeadersMiddleware:
    """Adds the security headers to each HTTP response start, unless the app already set them."""

    def __init__(self, app: ASGIApp, settings: HeaderSettings) -> None:
        self.app = app
        self._headers = [
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
        ]
        if settings.behind_tls:
            self._headers.append(
                ("Strict-Transport-Security", f"max-age={settings.hsts_max_age_seconds}; includeSubDomains")
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in self._headers:
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("application/json"):
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_http_security(app: FastAPI, cors: CorsSettings, headers: HeaderSettings) -> None:
    """Add CORS (when origins are configured) and then the security headers, outermost: call it after every
    other ``add_middleware``, so that preflight answers and the other middleware's own responses (413) get
    the headers too."""
    if cors.allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors.allow_origins,
            allow_methods=cors.allow_methods,
            allow_headers=cors.allow_headers,
            allow_credentials=cors.allow_credentials,
            expose_headers=["x-request-id"],
            max_age=cors.max_age_seconds,
        )
    app.add_middleware(SecurityHeadersMiddleware, settings=headers)
