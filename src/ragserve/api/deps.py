"""Dependencies routes receive through ``Annotated``: the service built in the app's lifespan and the app's
count of requests in flight."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ragserve.api.middleware import InFlightRequests
from ragserve.errors import ServiceUnavailableError
from ragserve.service import RagService


def get_service(request: Request) -> RagService:
    service: RagService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ServiceUnavailableError("the service is starting")
    return service


ServiceDep = Annotated[RagService, Depends(get_service)]


def get_in_flight(request: Request) -> InFlightRequests:
    in_flight: InFlightRequests = request.app.state.in_flight
    return in_flight


InFlightDep = Annotated[InFlightRequests, Depends(get_in_flight)]
