"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ragserve.api.schemas import Health, ReadyResponse
from ragserve.service import RagService

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is alive."""
    return Health()


@router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(request: Request) -> JSONResponse:
    """Database, vector index and model loaded: 200; otherwise 503."""
    service: RagService | None = getattr(request.app.state, "service", None)
    if service is None:
        body = ReadyResponse(status="not_ready", checks={"database": False, "index": False, "model": False})
        return JSONResponse(body.model_dump(), status_code=503)
    state = service.readiness()
    checks = {"database": state.database, "index": state.index, "model": state.model}
    body = ReadyResponse(status="ready" if state.is_ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if state.is_ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
