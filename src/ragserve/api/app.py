"""The FastAPI application: ``create_app(settings)`` builds the service in the lifespan and mounts API v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ragserve import __version__
from ragserve.api.errors import install_error_handlers
from ragserve.api.middleware import RequestContextMiddleware
from ragserve.api.routes import answers, collections, documents, health, jobs, search, ui
from ragserve.api.routes import openai as openai_compatible
from ragserve.embedding.protocol import Embedder
from ragserve.service import RagService
from ragserve.settings import Settings


def create_app(settings: Settings, embedder: Embedder | None = None) -> FastAPI:
    """The ASGI app; the service is built and closed in its lifespan. ``embedder`` lets tests share a model."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = RagService.open(settings, embedder)
        await owned.start()
        app.state.service = owned
        try:
            yield
        finally:
            app.state.service = None
            await owned.close()

    app = FastAPI(
        title="ragserve",
        version=__version__,
        description="Hybrid search and cited answers over your documents.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.limits.max_request_bytes)
    install_error_handlers(app)
    for module in (documents, jobs, search, answers, collections, health, ui):
        app.include_router(module.router)
    app.include_router(openai_compatible.router)
    return app
