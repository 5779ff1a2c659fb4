"""Collections: the names the UI's collection picker offers, with their document counts."""

from __future__ import annotations

from fastapi import APIRouter

from ragserve.api.deps import ServiceDep
from ragserve.api.schemas import CollectionList

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.get("", response_model=CollectionList)
async def list_collections(service: ServiceDep) -> CollectionList:
    """Every collection by name, with how many documents it holds (those still being ingested included)."""
    return CollectionList.of(await service.list_collections())
