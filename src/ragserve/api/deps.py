"""Dependencies routes receive through ``Annotated``: the service built in the app's lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ragserve.errors import ServiceUnavailableError
from ragserve.service import RagService


def get_service(request: Request) -> RagService:
    service: RagService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ServiceUnavailableError("the service is starting")
    return service


ServiceDep = Annotated[RagService, Depends(get_service)]
