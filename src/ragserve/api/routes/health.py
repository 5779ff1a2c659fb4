"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ragserve.api.deps import InFlightDep
from ragserve.api.schemas import Health, ReadyResponse
from ragserve.service import RagService, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is alive."""
    return Health()


@router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(request: Request, in_flight: InFlightDep) -> JSONResponse:
    """200 when the database answers, the vector index and the model are loaded and no more than
    ``observability.max_in_flight`` other requests are in flight; otherwise 503, naming the failed checks."""
    service: RagService | None = getattr(request.app.state, "service", None)
    state = service.readiness() if service is not None else Readiness(database=False, index=False, model=False)
    checks = {
        "database": state.database,
        "index": state.index,
        "model": state.model,
        "capacity": in_flight.has_capacity(excluding=1),  # this probe is in flight too
    }
    failed = [name for name, passed in checks.items() if not passed]
    body = ReadyResponse(status="not_ready" if failed else "ready", checks=checks, failed=failed)
    return JSONResponse(body.model_dump(), status_code=503 if failed else 200)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
