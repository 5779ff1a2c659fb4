"""The FastAPI application: ``create_app(settings)`` builds tracing and the service in the lifespan and mounts
API v1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SpanExporter

from ragserve import __version__
from ragserve.api.deps import GUARD_ERRORS
from ragserve.api.errors import install_error_handlers
from ragserve.api.http_security import install_http_security
from ragserve.api.middleware import InFlightRequests, RequestContextMiddleware
from ragserve.api.routes import (
    answers,
    audit,
    collections,
    dead_letters,
    documents,
    health,
    index_versions,
    jobs,
    keys,
    search,
    sync,
    ui,
)
from ragserve.api.routes import openai as openai_compatible
from ragserve.embedding.protocol import Embedder
from ragserve.observability.tracing import Tracing
from ragserve.security.audit import Auditor
from ragserve.security.auth import Authenticator, auth_required, load_pepper
from ragserve.security.ratelimit.factory import build_limits
from ragserve.service import RagService
from ragserve.settings import Settings

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings, embedder: Embedder | None = None, span_exporter: SpanExporter | None = None
) -> FastAPI:
    """The ASGI app; the tracer provider and the service are built and closed in its lifespan. ``embedder``
    lets tests share a model; ``span_exporter`` receives every span as it ends (tests pass an in-memory one)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing = Tracing(settings.observability, span_exporter)
        app.state.tracing = tracing
        try:
            # Activated here, the tracer is inherited by the tasks the service starts (ingestion workers).
            with tracing.activate():
                owned = RagService.open(settings, embedder)
                await owned.start()
                app.state.authenticator = Authenticator(
                    settings.auth, auth_required(settings), owned.stores.keys, load_pepper(settings)
                )
                app.state.auditor = Auditor(
                    owned.stores.audit,
                    record_denied=settings.audit.record_denied,
                    denied_per_minute=settings.audit.denied_per_minute,
                )
                if not app.state.authenticator.enabled and settings.auth.enabled is False:
                    logger.warning("authentication is turned off: every caller is an anonymous admin")
                app.state.limits = limits = build_limits(settings)
                app.state.service = owned
                try:
                    yield
                finally:
                    app.state.service = None
                    app.state.limits = None
                    if limits is not None:
                        await limits.close()
                    await owned.close()
        finally:
            app.state.tracing = None
            tracing.shutdown()

    app = FastAPI(
        title="ragserve",
        version=__version__,
        description="Hybrid search and cited answers over your documents.",
        lifespan=lifespan,
    )
    app.state.in_flight = InFlightRequests(settings.observability.max_in_flight)
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.limits.max_request_bytes, in_flight=app.state.in_flight
    )
    install_http_security(app, settings.cors, settings.headers)
    install_error_handlers(app)
    routers = (documents, jobs, dead_letters, search, answers, collections, sync, index_versions, keys, audit)
    for module in (*routers, openai_compatible):
        app.include_router(module.router, responses=GUARD_ERRORS)
    for module in (health, ui):
        app.include_router(module.router)
    return app
