"""Search."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ragserve.api.deps import QueryPrincipal, ServiceDep, require
from ragserve.api.schemas import ErrorResponse, SearchRequest, SearchResponse
from ragserve.domain import SearchFilters
from ragserve.retrieval.search import SearchQuery

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require("query"))])


@router.post(
    "/search",
    response_model=SearchResponse,
    responses={code: {"model": ErrorResponse} for code in (400, 404, 413, 422)},
)
async def search(body: SearchRequest, service: ServiceDep, principal: QueryPrincipal) -> SearchResponse:
    """Hybrid (BM25 + dense), dense or keyword search over a collection's chunks."""
    query = SearchQuery(
        body.query, body.k, body.offset, body.collection, SearchFilters.from_mapping(body.filters), body.mode
    )
    return SearchResponse.of(await service.search(query, principal))
