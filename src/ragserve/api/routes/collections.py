"""Collections: the names the UI's collection picker offers, with their document counts, and each
collection's own retrieval settings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from ragserve.api.deps import AdminPrincipal, AuditDep, QueryPrincipal, ServiceDep, require
from ragserve.api.schemas import CollectionList, ErrorResponse
from ragserve.settings import RetrievalOverrides, RetrievalSettings

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.get("", response_model=CollectionList, dependencies=[Depends(require("query"))])
async def list_collections(service: ServiceDep, principal: QueryPrincipal) -> CollectionList:
    """The caller's tenant's collections by name, with how many documents each holds (those still being
    ingested included)."""
    return CollectionList.of(await service.list_collections(principal))


class CollectionSettingsPublic(BaseModel):
    overrides: RetrievalOverrides
    effective: RetrievalSettings


_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (404, 422)}
_PUT_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 422)}


@router.get(
    "/{name}/settings",
    response_model=CollectionSettingsPublic,
    responses=_ERRORS,
    dependencies=[Depends(require("query"))],
)
async def get_settings(name: str, service: ServiceDep, principal: QueryPrincipal) -> CollectionSettingsPublic:
    """The collection's own retrieval settings and the ones its searches use (service-wide + own)."""
    overrides, effective = await service.retrieval_settings(name, principal)
    return CollectionSettingsPublic(overrides=overrides, effective=effective)


@router.put(
    "/{name}/settings",
    response_model=CollectionSettingsPublic,
    responses=_PUT_ERRORS,
    dependencies=[Depends(require("admin"))],
)
async def put_settings(
    name: str, body: RetrievalOverrides, service: ServiceDep, principal: AdminPrincipal, audit: AuditDep
) -> CollectionSettingsPublic:
    """Replace the collection's retrieval overrides (mode, fusion, alpha, RRF k, candidates)."""
    await service.set_retrieval_settings(name, body, principal)
    await audit.record("collection.settings.update", f"collection:{name}", **body.model_dump(exclude_none=True))
    overrides, effective = await service.retrieval_settings(name, principal)
    return CollectionSettingsPublic(overrides=overrides, effective=effective)
